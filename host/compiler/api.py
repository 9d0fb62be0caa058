"""``compile_model``: the one entry point the CLI and ``deploy push`` call.

Deterministic and side-effect free except for writing ``out_dir`` (``out_dir/bundle/`` and
``out_dir/bundle.tar``), which appears complete or not at all.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from device_agent.bundle import (
    REMAINDER_PATH, Bundle, Manifest, Remainder, Segment, Target, sha256_file, write_archive, write_manifest,
)
from device_agent.errors import BuildFailed, InvalidInput
from host.compiler import emit, frontend, lower, reference
from host.compiler.partition import partition
from host.compiler.patterns import Context
from host.compiler.profiles import format_version, get_profile, max_parser_opset
from host.compiler.quantize import Int8Options

BUNDLE_DIRNAME = "bundle"
ARCHIVE_NAME = "bundle.tar"


@dataclass
class CompileOptions:
    profile: str = "x86-cpu"
    trt_version: Optional[str] = None
    fp16: bool = False
    input_shapes: Dict[str, List[int]] = field(default_factory=dict)
    batch: Optional[str] = None                 # "MIN:OPT:MAX"
    use_implicit_batch: bool = False
    remove_no_mac_subgraphs: bool = False
    max_workspace_size: Optional[int] = None    # None: the profile's default_workspace_bytes
    exclude_ops: Sequence[str] = ()             # ops kept in TVM on request
    remainder_device: Optional[str] = None      # override the profile's choice ("cpu" | "cuda")
    compute_capability: Optional[str] = None    # override the profile's GPU ("9.0"), e.g. the device's own
    seed: int = 0
    host_check: bool = True                     # run a host-runnable remainder bundle against the reference
    sample_inputs: Dict[str, np.ndarray] = field(default_factory=dict)  # reference/verify inputs (--inputs)
    fold: bool = True                           # fold constants and shape subgraphs first (simplify.py)
    int8: Optional[Int8Options] = None          # explicit INT8 (Q/DQ) from calibration samples (int8.py)

    @property
    def precision(self) -> str:
        if self.int8 is not None:
            return "int8+fp16" if self.fp16 else "int8"
        return "fp16" if self.fp16 else "fp32"


@dataclass
class CompileResult:
    digest: str
    bundle_dir: Path
    archive: Path
    manifest: Manifest
    seconds: float
    parts: List[Dict[str, Any]]

    def to_json(self) -> Dict[str, Any]:
        m = self.manifest
        return {
            "digest": self.digest,
            "bundle_dir": str(self.bundle_dir),
            "archive": str(self.archive),
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
    """Compile an ONNX model into a bundle for one device profile."""
    t0 = time.perf_counter()
    import dataclasses

    unknown = [k for k in overrides if k not in {f.name for f in dataclasses.fields(CompileOptions)}]
    if unknown:
        raise TypeError(f"unknown compile options {unknown}")
    opts = dataclasses.replace(options or CompileOptions(), **overrides)
    profile = get_profile(opts.profile, opts.trt_version, opts.remainder_device, opts.compute_capability)
    trt = profile.trt
    if opts.use_implicit_batch and trt >= (10, 0, 0):
        raise InvalidInput(f"use_implicit_batch needs TensorRT < 10, target is {profile.trt_version}")
    batch = frontend.BatchRange.parse(opts.batch) if opts.batch else None
    model, digest = frontend.load_model(model_path)
    loaded = frontend.prepare(model, digest, input_shapes=_shapes_with_samples(model, opts, batch), batch=batch,
                              fold=opts.fold, samples=opts.sample_inputs,
                              decompose_layer_norm_below_86=trt < (8, 6, 0)
                              and "LayerNormalization" not in opts.exclude_ops)
    samples = reference.check_samples(loaded.inputs, opts.sample_inputs, loaded.concrete_inputs)
    parser_opset = max_parser_opset(trt)
    seg_opset = min(loaded.opset, parser_opset)
    ctx = Context.for_model(loaded.model, loaded.value_types, trt, parser_opset, loaded.opset,
                            opts.use_implicit_batch)
    int8_result = None
    if opts.int8 is not None:
        from host.compiler import int8

        int8_result = int8.apply(loaded, ctx, profile, opts.int8, opts.exclude_ops, opts.remove_no_mac_subgraphs)
        loaded = int8_result.loaded
        seg_opset = min(loaded.opset, parser_opset)
        ctx = Context.for_model(loaded.model, loaded.value_types, trt, parser_opset, loaded.opset,
                                opts.use_implicit_batch)
        if not samples:  # the reference input is a calibration sample, not noise the scales never saw
            samples = int8_result.first_sample
    part, emitted = _partition_and_emit(loaded, ctx, opts, seg_opset)

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and any(out.iterdir()) and not (out / BUNDLE_DIRNAME / "manifest.json").is_file():
        raise InvalidInput(f"output directory {out} is not empty and holds no bundle; choose another -o")
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        bdir = work / BUNDLE_DIRNAME
        (bdir / "segments").mkdir(parents=True)
        segments: List[Segment] = []
        for seg in part.segments:
            rel = f"segments/{seg.id}.onnx"
            (bdir / rel).write_bytes(emit.serialize(emitted[seg.id]))
            segments.append(Segment(
                id=seg.id, path=rel, digest=sha256_file(bdir / rel), ops=seg.ops,
                inputs=[emit.spec_of(t, loaded.value_types) for t in seg.inputs],
                outputs=[emit.spec_of(t, loaded.value_types) for t in seg.outputs],
                opset=seg_opset, calibration=_calibration_of(int8_result, emitted[seg.id])))
        remainder = None
        if not part.fully_offloaded:
            lower.check_importable(part, ctx, opts.exclude_ops)
            mod = lower.build_module(loaded.model, part, loaded.value_types,
                                     [s.name for s in loaded.inputs], [s.name for s in loaded.outputs],
                                     loaded.opset)
            tgt, host = lower.compile_module(mod, profile, bdir / REMAINDER_PATH)
            remainder = Remainder(path=REMAINDER_PATH, digest=sha256_file(bdir / REMAINDER_PATH),
                                  target=tgt, host=host)
        ref = _write_reference(bdir, loaded, opts, samples)
        manifest = Manifest(
            name=Path(model_path).stem, source_digest=digest, inputs=loaded.inputs, outputs=loaded.outputs,
            target=Target(profile=profile.name, trt_version=profile.trt_version,
                          compute_capability=profile.compute_capability, device=profile.device, arch=profile.arch),
            compiler=_versions(),
            options={
                "fp16": bool(opts.fp16), "precision": opts.precision,
                **({"int8": int8_result.info} if int8_result is not None else {}),
                "use_implicit_batch": bool(opts.use_implicit_batch),
                "remove_no_mac_subgraphs": bool(opts.remove_no_mac_subgraphs),
                "max_workspace_size": int(opts.max_workspace_size if opts.max_workspace_size is not None
                                          else profile.default_workspace_bytes),
                "batch": None if batch is None else batch.to_list(),
                "input_shapes": {k: list(v) for k, v in sorted(opts.input_shapes.items())},
                "exclude_ops": sorted(opts.exclude_ops), "segment_opset": seg_opset,
                "prepare": None if loaded.simplified is None else loaded.simplified.to_json(),
                "sample_inputs": sorted(samples),
                "remainder": {"device": profile.device, "why": profile.remainder_note}
                if remainder is not None else None,
                "parts": [{"id": p.id, "kind": p.kind, "ops": p.ops} for p in part.parts],
            },
            segments=segments, remainder=remainder, not_offloaded=part.not_offloaded, reference=ref)
        write_manifest(bdir, manifest)
        bundle = Bundle.open(bdir)
        bundle.verify()
        if opts.host_check and remainder is not None:
            if profile.device == "cpu" and not profile.cross:
                _host_check(bundle)
            else:  # not runnable here: check an x86 CPU build of the same Relax module
                host_lib = work / "host-check.so"
                lower.compile_module(mod, get_profile("x86-cpu"), host_lib)
                _host_check(bundle, str(host_lib))
                host_lib.unlink()
        digest_out = write_archive(bdir, work / ARCHIVE_NAME)
        _replace_dir(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return CompileResult(digest=digest_out, bundle_dir=out / BUNDLE_DIRNAME, archive=out / ARCHIVE_NAME,
                         manifest=manifest, seconds=time.perf_counter() - t0,
                         parts=[{"id": p.id, "kind": p.kind, "ops": p.ops} for p in part.parts])


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
    from device_agent.bundle_runtime import onnxruntime_runners, run_bundle

    ins, want = bundle.read_reference()
    got = run_bundle(bundle, onnxruntime_runners(bundle), ins, library=library)
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
        for name, arr in opts.sample_inputs.items():
            if name in names:
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
    for key, arrays, order in (("inputs", inputs, loaded.inputs), ("outputs", outputs, loaded.outputs)):
        (bdir / "reference" / key).mkdir(parents=True, exist_ok=True)
        items = []
        for i, spec in enumerate(order):
            rel = f"reference/{key}/{i}.npy"
            np.save(bdir / rel, np.asarray(arrays[spec.name], order="C"), allow_pickle=False)
            items.append({"name": spec.name, "path": rel, "digest": sha256_file(bdir / rel)})
        entries[key] = items
    return entries


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
