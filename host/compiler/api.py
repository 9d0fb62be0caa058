"""``compile_model``: the one entry point the CLI and ``deploy push`` call.

Deterministic and side-effect free except for writing ``out_dir`` (``out_dir/bundle/`` and
``out_dir/bundle.tar``), which appears complete or not at all.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from device_agent.archive import write_archive
from device_agent.bundle import Bundle
from device_agent.errors import BuildFailed, InvalidInput
from device_agent.fileio import sha256_file
from device_agent.manifest import REMAINDER_PATH, Manifest, Remainder, Segment, Target, write_manifest
from device_agent.parts import file_entries
from host.compiler import emit, frontend, lower, reference, weights
from host.compiler.options import CompileOptions  # declared there; re-exported here for callers of compile_model
from host.compiler.partition import partition
from host.compiler.patterns import Context
from host.compiler.profiles import Profile, format_version, get_profile, max_parser_opset

BUNDLE_DIRNAME = "bundle"
ARCHIVE_NAME = "bundle.tar"


@dataclass
class CompileResult:
    """A bundle written by `compile_model`: its digest (its manifest's: the bundle's identity), where it is, its
    manifest and how long it took; `archive_digest` is the export archive's own."""

    digest: str
    bundle_dir: Path
    archive: Path
    manifest: Manifest
    seconds: float
    parts: List[Dict[str, Any]]
    archive_digest: str = ""

    def to_json(self) -> Dict[str, Any]:
        m = self.manifest
        return {
            "digest": self.digest,
            "bundle_dir": str(self.bundle_dir),
            "archive": str(self.archive),
            "archive_digest": self.archive_digest,
            "seconds": round(self.seconds, 3),
            "profile": m.target.profile,
            "trt_version": m.target.trt_version,
            "segments": self.parts,
            "precision": m.options.get("precision", "fp16" if m.options.get("fp16") else "fp32"),
            "int8": m.options.get("int8"),
            "not_offloaded": [{"op": e["op"], "node": e.get("node", ""), "reason": e["reason"]}
                              for e in m.not_offloaded],
            "remainder": None if m.remainder is None else {
                "target": m.remainder.target, "host": m.remainder.host,
                "why": m.options.get("remainder", {}).get("why", "")},
        }


def _versions() -> Dict[str, str]:
    """Versions from package metadata (importing tvm only to read its version costs seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for key, dist in (("jetson-deploy", "jetson-deploy"), ("tvm", "apache-tvm"), ("onnx", "onnx"),
                      ("onnxruntime", "onnxruntime")):
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = "unknown"
    return out


def _partition_and_emit(loaded: frontend.LoadedModel, ctx: Context, opts: CompileOptions,
                        seg_opset: int):
    """Partition, then write each segment; a segment the parser's opset cannot hold goes to TVM."""
    forced: Dict[str, str] = {}
    for _ in range(50):
        part = partition(loaded.model, ctx, exclude=opts.exclude_ops,
                         remove_no_mac_subgraphs=opts.remove_no_mac_subgraphs, forced=forced)
        emitted = {}
        failed = False
        fully = part.fully_offloaded
        for seg in part.segments:
            ins = [s.name for s in loaded.inputs] if fully else None
            outs = [s.name for s in loaded.outputs] if fully else None
            try:
                emitted[seg.id] = emit.part_model(loaded.model, seg, loaded.value_types, inputs=ins, outputs=outs,
                                                  opset=seg_opset)
            except emit.EmitError as e:
                culprits = [n for n in seg.nodes if n.name == e.node] or seg.nodes
                for n in culprits:
                    forced[n.name] = f"{e} (TensorRT {format_version(ctx.trt)} parses opset <= {seg_opset})"
                failed = True
        if not failed:
            if fully:
                part.segments[0].inputs = [s.name for s in loaded.inputs]
                part.segments[0].outputs = [s.name for s in loaded.outputs]
            return part, emitted
    raise InvalidInput("could not partition the model (segment emission kept failing)")


def compile_model(model_path: Union[str, os.PathLike], out_dir: Union[str, os.PathLike],
                  options: Optional[CompileOptions] = None, **overrides: Any) -> CompileResult:
    """Compile an ONNX model into a bundle for one device profile.

    The stages, each a function below: options, profile, load (shapes, folding), INT8, partition and emit,
    then in a temp dir beside ``out_dir``: segments, remainder, reference, manifest, verify, host check, archive,
    and one rename into place."""
    t0 = time.perf_counter()
    opts = _resolve_options(options, overrides)
    profile = _profile_of(opts)
    front = _load(model_path, opts, profile)
    if opts.int8 is not None:
        front = _quantize(front, profile, opts)
    part, emitted = _partition_and_emit(front.loaded, front.ctx, opts, front.seg_opset)
    out = _check_out_dir(Path(out_dir))
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        bdir = work / BUNDLE_DIRNAME
        manifest, remainder_module = _write_bundle(bdir, Path(model_path).stem, front, part, emitted, profile, opts)
        bundle = Bundle.open(bdir)
        bundle.verify()
        if opts.host_check and remainder_module is not None:
            _check_remainder_on_host(bundle, remainder_module, profile, work)
        archive_digest = write_archive(bdir, work / ARCHIVE_NAME)
        digest = bundle.manifest_digest
        _replace_dir(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return CompileResult(digest=digest, bundle_dir=out / BUNDLE_DIRNAME, archive=out / ARCHIVE_NAME,
                         manifest=manifest, seconds=time.perf_counter() - t0, parts=_parts(part),
                         archive_digest=archive_digest)


@dataclass
class _Front:
    """The model after loading, folding and (with INT8) quantizing: what is partitioned and written."""

    loaded: frontend.LoadedModel
    digest: str                                 # of the source model
    ctx: Context
    seg_opset: int
    batch: Optional[frontend.BatchRange]
    samples: Dict[str, np.ndarray]              # reference inputs: the given ones, else a calibration sample
    int8: Any = None                            # host.compiler.int8.Int8Result


def _resolve_options(options: Optional[CompileOptions], overrides: Dict[str, Any]) -> CompileOptions:
    import dataclasses

    unknown = [k for k in overrides if k not in {f.name for f in dataclasses.fields(CompileOptions)}]
    if unknown:
        raise TypeError(f"unknown compile options {unknown}")
    return dataclasses.replace(options or CompileOptions(), **overrides)


def _profile_of(opts: CompileOptions) -> Profile:
    profile = get_profile(opts.profile_name, opts.trt_version, opts.remainder_device, opts.compute_capability)
    if opts.use_implicit_batch and profile.trt >= (10, 0, 0):
        raise InvalidInput(f"use_implicit_batch needs TensorRT < 10, target is {profile.trt_version}")
    return profile


def _context(loaded: frontend.LoadedModel, profile: Profile, opts: CompileOptions) -> Tuple[Context, int]:
    """The partitioner's view of the target, and the opset segments are written in (what the parser reads)."""
    parser_opset = max_parser_opset(profile.trt)
    ctx = Context.for_model(loaded.model, loaded.value_types, profile.trt, parser_opset, loaded.opset,
                            opts.use_implicit_batch)
    return ctx, min(loaded.opset, parser_opset)


def _load(model_path: Union[str, os.PathLike], opts: CompileOptions, profile: Profile) -> _Front:
    """Read, bind shapes and batch range, fold; check the sample inputs against the prepared model."""
    batch = frontend.BatchRange.parse(opts.batch) if opts.batch else None
    model, digest = frontend.load_model(model_path)
    loaded = frontend.prepare(model, digest, input_shapes=_shapes_with_samples(model, opts, batch), batch=batch,
                              fold=opts.fold, samples=opts.sample_inputs,
                              decompose_layer_norm_below_86=profile.trt < (8, 6, 0)
                              and "LayerNormalization" not in opts.exclude_ops, profiles=opts.shape_profiles)
    _bind_ranged_samples(loaded, opts.sample_inputs)
    samples = reference.check_samples(loaded.inputs, opts.sample_inputs, loaded.concrete_inputs)
    ctx, seg_opset = _context(loaded, profile, opts)
    return _Front(loaded, digest, ctx, seg_opset, batch, samples)


def _bind_ranged_samples(loaded: frontend.LoadedModel, samples: Dict[str, np.ndarray]) -> None:
    """A sample of a ranged input is the reference at its own shape when some profile holds it."""
    from device_agent.shape_profiles import pick
    from host.compiler.shape_ranges import fmt, fmt_range

    for name, arr in samples.items():
        if not loaded.profiles or name not in loaded.profiles[0]:
            continue
        shape = list(np.shape(arr))
        if pick([{name: (p[name][0], p[name][2])} for p in loaded.profiles], {name: shape}) is None:
            ranges = "; ".join(fmt_range(p[name]) for p in loaded.profiles)
            raise reference.SampleError(f"sample input {name!r} has shape {fmt(shape)}, outside its ranges "
                                        f"({ranges}); give a sample in range or widen --shape-range")
        loaded.concrete_inputs[name] = shape


def _quantize(front: _Front, profile: Profile, opts: CompileOptions) -> _Front:
    """INT8 (Q/DQ) on the nodes TensorRT will run; the quantized model replaces the FP32 one."""
    from host.compiler import int8

    result = int8.apply(front.loaded, front.ctx, profile, opts.int8, opts.exclude_ops, opts.remove_no_mac_subgraphs)
    ctx, seg_opset = _context(result.loaded, profile, opts)
    # the reference input is a calibration sample, not noise the scales never saw
    samples = front.samples or result.first_sample
    return _Front(result.loaded, front.digest, ctx, seg_opset, front.batch, samples, result)


def _check_out_dir(out: Path) -> Path:
    """``out`` may be new, empty or an earlier output (replaced whole); anything else is refused."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and any(out.iterdir()) and not (out / BUNDLE_DIRNAME / "manifest.json").is_file():
        raise InvalidInput(f"output directory {out} is not empty and holds no bundle; choose another -o")
    return out


def _write_bundle(bdir: Path, name: str, front: _Front, part: Any, emitted: Dict[str, Any], profile: Profile,
                  opts: CompileOptions) -> Tuple[Manifest, Any]:
    """Segments, remainder, reference and manifest in ``bdir``; also the remainder's Relax module (or None)."""
    segments = _write_segments(bdir, front, part, emitted)
    remainder, module = _write_remainder(bdir, front, part, profile, opts)
    ref = _write_reference(bdir, front.loaded, opts, front.samples)
    manifest = _manifest(name, front, part, profile, opts, segments, remainder, ref)
    manifest.file_list = file_entries(bdir)  # every file, weights included: the bundle's parts
    write_manifest(bdir, manifest)
    return manifest, module


def _write_segments(bdir: Path, front: _Front, part: Any, emitted: Dict[str, Any]) -> List[Segment]:
    (bdir / "segments").mkdir(parents=True)
    segments: List[Segment] = []
    for seg in part.segments:
        rel = f"segments/{seg.id}.onnx"
        weights.write_segment(emitted[seg.id], bdir / rel)
        segments.append(Segment(
            id=seg.id, path=rel, digest=sha256_file(bdir / rel), ops=seg.ops,
            inputs=[emit.spec_of(t, front.loaded.value_types) for t in seg.inputs],
            outputs=[emit.spec_of(t, front.loaded.value_types) for t in seg.outputs],
            opset=front.seg_opset, calibration=_calibration_of(front.int8, emitted[seg.id]),
            profiles=segment_profiles(front.loaded, seg.inputs)))
    return segments


def segment_profiles(loaded: frontend.LoadedModel, inputs: List[str]) -> List[List[Dict[str, Any]]]:
    """A segment's optimization profiles, one per model profile: each dynamic input's min, opt and max, from the
    shapes the model's runs at MIN, OPT and MAX of that profile gave (dim by dim, the smallest and largest seen)."""
    if not loaded.profiles:
        return []
    out = []
    for k in range(len(loaded.profiles)):
        prof = []
        for name in inputs:
            spec = loaded.value_types.get(name)
            at = loaded.range_points.get(name)
            if spec is None or at is None or not any(isinstance(d, str) for d in spec[1]):
                continue
            three = at[3 * k:3 * k + 3]
            prof.append({"name": name, "min": [min(d) for d in zip(*three)], "opt": list(three[1]),
                         "max": [max(d) for d in zip(*three)]})
        if prof:
            out.append(prof)
    return out


def _write_remainder(bdir: Path, front: _Front, part: Any, profile: Profile,
                     opts: CompileOptions) -> Tuple[Optional[Remainder], Any]:
    """What TensorRT does not take, compiled by TVM for the profile's remainder device (none when all is offloaded)."""
    if part.fully_offloaded:
        return None, None
    loaded = front.loaded
    lower.check_importable(part, front.ctx, opts.exclude_ops)
    mod = lower.build_module(loaded.model, part, loaded.value_types, [s.name for s in loaded.inputs],
                             [s.name for s in loaded.outputs], loaded.opset)
    tgt, host = lower.compile_module(mod, profile, bdir / REMAINDER_PATH)
    return Remainder(path=REMAINDER_PATH, digest=sha256_file(bdir / REMAINDER_PATH), target=tgt, host=host), mod


def _manifest(name: str, front: _Front, part: Any, profile: Profile, opts: CompileOptions,
              segments: List[Segment], remainder: Optional[Remainder], ref: Dict[str, Any]) -> Manifest:
    loaded = front.loaded
    batch = None if front.batch is None else front.batch.to_list()
    options = opts.manifest_part(profile.default_workspace_bytes, batch)
    options.update({
        **({"int8": front.int8.info} if front.int8 is not None else {}),
        "segment_opset": front.seg_opset,
        "prepare": None if loaded.simplified is None else loaded.simplified.to_json(),
        "sample_inputs": sorted(front.samples),
        "remainder": {"device": profile.device, "why": profile.remainder_note} if remainder is not None else None,
        "parts": _parts(part),
    })
    return Manifest(
        name=name, source_digest=front.digest, inputs=loaded.inputs, outputs=loaded.outputs,
        target=Target(profile=profile.name, trt_version=profile.trt_version,
                      compute_capability=profile.compute_capability, device=profile.device, arch=profile.arch),
        compiler=_versions(), options=options,
        segments=segments, remainder=remainder, not_offloaded=part.not_offloaded, reference=ref)


def _parts(part: Any) -> List[Dict[str, Any]]:
    return [{"id": p.id, "kind": p.kind, "ops": p.ops} for p in part.parts]


def _check_remainder_on_host(bundle: Bundle, module: Any, profile: Profile, work: Path) -> None:
    """Run the bundle here when its remainder can run here, else an x86 CPU build of the same Relax module."""
    if profile.device == "cpu" and not profile.cross:
        _host_check(bundle)
        return
    host_lib = work / "host-check.so"
    lower.compile_module(module, get_profile("x86-cpu"), host_lib)
    _host_check(bundle, str(host_lib))
    host_lib.unlink()


def _calibration_of(int8_result: Any, segment: Any) -> str:
    """The calibration digest for a segment that holds Q/DQ (the agent keys and flags its engine by it)."""
    if int8_result is None:
        return ""
    from host.compiler.quantize import qdq_nodes

    return int8_result.digest if qdq_nodes(segment) else ""


def _host_check(bundle: Bundle, library: Optional[str] = None) -> None:
    """Segments in onnxruntime + the TVM remainder must reproduce onnxruntime on the original model.

    Catches a TVM frontend that imports an op differently (seen in TVM 0.27 for some Resize modes)
    before the bundle reaches a device.
    """
    from device_agent.engines.model import reference_sets
    from device_agent.bundle_runtime import onnxruntime_runners, run_bundle

    for _, ins, want in reference_sets(bundle):  # a ranged bundle: at MIN, OPT and MAX of each profile too
        got = run_bundle(bundle, onnxruntime_runners(bundle), ins, library=library)
        _check_outputs(bundle, got, want)


def _check_outputs(bundle: Bundle, got: Dict[str, np.ndarray], want: Dict[str, np.ndarray]) -> None:
    rtol, atol = bundle.manifest.reference["rtol"], bundle.manifest.reference["atol"]
    for name, w in want.items():
        g = got[name]
        if g.shape != w.shape or not np.allclose(g, w, rtol=rtol, atol=max(atol, rtol * float(np.abs(w).max()))):
            ops = sorted({e["op"] for e in bundle.manifest.not_offloaded})
            raise BuildFailed(f"the compiled bundle does not reproduce onnxruntime on output {name!r} "
                              f"(max abs err {float(np.abs(g - w).max()) if g.shape == w.shape else 'shape'}); "
                              f"TVM computes {ops} differently: try a newer --trt-version so they are offloaded")


def _shapes_with_samples(model, opts: CompileOptions, batch) -> Dict[str, List[int]]:
    """``--input-shape`` plus, for inputs it leaves out, the shape of the given sample (not with a batch range,
    whose batch dim stays symbolic)."""
    shapes = {k: list(v) for k, v in opts.input_shapes.items()}
    if batch is None:
        names = {vi.name for vi in model.graph.input}
        ranged = {n for p in opts.shape_profiles for n in p}
        for name, arr in opts.sample_inputs.items():
            if name in names and name not in ranged:
                shapes.setdefault(name, list(np.shape(arr)))
    return shapes


def _write_reference(bdir: Path, loaded: frontend.LoadedModel, opts: CompileOptions,
                     samples: Dict[str, np.ndarray]) -> Dict[str, Any]:
    inputs = reference.make_inputs(loaded.inputs, loaded.concrete_inputs, opts.seed, samples, random_ints=False)
    outputs = reference.run_onnxruntime(loaded.model, inputs)
    loose = opts.fp16 or opts.int8 is not None  # int8: one rounding step of a Q node moves a value by a scale
    entries: Dict[str, Any] = {"seed": opts.seed, "rtol": 1e-2 if loose else 1e-4,
                               "atol": 1e-2 if loose else 1e-5,
                               "fp32_spread": float(reference.fp32_spread(loaded.model, inputs, outputs))}
    entries.update(_save_reference(bdir, "reference", loaded, inputs, outputs))
    if loaded.profiles:
        entries["at_shapes"] = _reference_at_shapes(bdir, loaded, opts, samples)
    return entries


def _save_reference(bdir: Path, folder: str, loaded: frontend.LoadedModel, inputs: Dict[str, np.ndarray],
                    outputs: Dict[str, np.ndarray]) -> Dict[str, List[Dict[str, str]]]:
    entries = {}
    for key, arrays, order in (("inputs", inputs, loaded.inputs), ("outputs", outputs, loaded.outputs)):
        (bdir / folder / key).mkdir(parents=True, exist_ok=True)
        items = []
        for i, spec in enumerate(order):
            rel = f"{folder}/{key}/{i}.npy"
            np.save(bdir / rel, np.asarray(arrays[spec.name], order="C"), allow_pickle=False)
            items.append({"name": spec.name, "path": rel, "digest": sha256_file(bdir / rel)})
        entries[key] = items
    return entries


def _reference_at_shapes(bdir: Path, loaded: frontend.LoadedModel, opts: CompileOptions,
                         samples: Dict[str, np.ndarray]) -> List[Dict[str, Any]]:
    """Reference samples at MIN, OPT and MAX of each profile (besides the main one): verify runs each on the device.
    A sample input given at one shape is cut or repeated along its ranged dims to each other shape."""
    from device_agent.shape_profiles import fit_to_shape

    out = []
    points = frontend.range_feeds(loaded.inputs, loaded.concrete_inputs, loaded.profiles)
    for n, shapes in enumerate(points):
        if shapes == loaded.concrete_inputs:
            continue
        fitted = {k: fit_to_shape(v, shapes[k]) for k, v in samples.items() if k in shapes}
        inputs = reference.make_inputs(loaded.inputs, shapes, opts.seed + 1 + n, fitted, random_ints=False)
        outputs = reference.run_onnxruntime(loaded.model, inputs)
        label = f"profile {n // 3} {('min', 'opt', 'max')[n % 3]}"
        out.append({"label": label, **_save_reference(bdir, f"reference/at_shapes/{n}", loaded, inputs, outputs)})
    return out


def _replace_dir(new: Path, dest: Path) -> None:
    """Put ``new`` at ``dest``; an older bundle there is swapped out, then removed."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
    try:
        os.rename(new, dest)
    except BaseException:
        if old is not None:
            os.rename(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
