"""`deploy push` as a library: GetInfo, choose the target, compile (or reuse), upload, build, verify, benchmark.

Each phase is a function over one `AgentClient`, so `deploy bench` and `deploy run` reuse the first ones. Streams
are closed on every exit path (`closing`), so Ctrl-C cancels the remote build or benchmark instead of leaving it
running on the device.
"""
from __future__ import annotations

import logging
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from device_agent.errors import BuildFailed, DeployError, InvalidInput
from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.compiler.options import CompileOptions
from protos import agent_pb2

from . import bundle_cache
from .build_stream import BuildHooks, build_bundle, progress_text  # noqa: F401 - progress_text: push's view of it
from .observer import Observer
from .target import TargetChoice, choose_target
from .version import VersionResult, default_name, record_version

if TYPE_CHECKING:
    from device_agent.manifest import Manifest

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


class VerifyFailed(DeployError):
    """The device's outputs differ from the host's reference by more than the tolerance."""


@dataclass
class PushOptions:
    """What the user asked for: the compile options (all of them part of the host compile-cache key) and how to
    build, verify and benchmark on the device."""

    compile: CompileOptions = field(default_factory=CompileOptions)  # profile, trt_version None: the device's
    backend: Optional[str] = None
    force_rebuild: bool = False
    # this build's workspace, over the agent's and the bundle's (a given bundle too); compile.max_workspace_size
    # is the bundle's own default instead
    max_workspace_size: Optional[int] = None
    verify: bool = True
    max_rel_err: Optional[float] = None  # fail the push above this (default: none for fp16, 1e-3 for fp32)
    bench: bool = False
    warmup: int = 10
    iterations: int = 0
    duration_s: float = 0.0
    batch: int = 0  # the batch size to build and run; compile.batch is the bundle's range (`batch_range`)
    layers: bool = False  # bench: a per-layer profile after the timed runs
    registry: Optional[str] = None  # HOST/REPO: the bundle goes through it, the engines are published after
    name: Optional[str] = None  # the model's name on the device (None: the file's stem); push records a version
    activate: bool = False  # make the new version the one the device serves
    bench_shape: list[str] = field(default_factory=list)  # `bench --shape NAME=DxD...` (a ranged bundle)
    bench_points: Optional[str] = None  # `bench --shapes min,opt,max`: those of each profile, one row each

    @classmethod
    def from_flat(cls, **kw: Any) -> "PushOptions":
        """From the flat keywords of `host.api.push/bench/run` and the CLI: this class's own fields by name, every
        other `CompileOptions` field by its name, except the compile `batch` range, spelled ``batch_range`` (here
        ``batch`` is the build's batch size)."""
        own = {f.name for f in fields(cls)} - {"compile"}
        compile_names = {f.name for f in fields(CompileOptions)} - own
        compile_kw = {("batch" if k == "batch_range" else k): kw.pop(k) for k in list(kw)
                      if k == "batch_range" or k in compile_names}
        unknown = sorted(set(kw) - own)
        if unknown:
            raise TypeError(f"unknown push options {unknown}")
        return cls(compile=CompileOptions(**compile_kw), **kw)

    def compile_for(self, target: TargetChoice) -> CompileOptions:
        """The compile options for one device: its profile and TensorRT version (generic-cuda: its GPU too)."""
        return replace(self.compile, profile=target.profile, trt_version=target.trt_version,
                       compute_capability=_cuda_target(target) or self.compile.compute_capability)

    def build_options(self, target: TargetChoice) -> agent_pb2.BuildOptions:
        opts = agent_pb2.BuildOptions(backend=target.backend, force_rebuild=self.force_rebuild)
        if self.compile.fp16:
            opts.fp16 = True
        if self.batch:
            opts.batch = self.batch
        if self.max_workspace_size:
            opts.max_workspace_bytes = self.max_workspace_size
        return opts


@dataclass
class CompilePhase:
    """The compile phase of a push (`push --json`'s ``compile``): a host-cache hit or miss, or a given bundle.

    (`host.compiler.api.CompileResult` is the compiler's own result: a bundle it wrote.)"""

    cache: str  # "hit" | "miss" | "none" (a bundle was given)
    seconds: float
    bundle_dir: Optional[str]
    archive: str
    key: Optional[str] = None


@dataclass
class UploadResult:
    size: int
    bytes_sent: int
    seconds: float
    already_present: bool
    resumed_from: int
    # what moved, by parts (host/client/parts.py): the whole bundle against what travelled; a whole archive (an
    # agent before parts, or through a registry) is one part
    bytes_total: int = 0
    parts_total: int = 1
    parts_sent: int = 0
    transport: str = "parts"  # "parts" | "archive" (an agent before parts) | "registry"
    bundle_digest: str = ""  # what the agent knows the bundle by (its manifest's digest by parts)
    parts_resent: int = 0  # parts the agent found corrupt on arrival, sent again


@dataclass
class SegmentResult:
    id: str
    cache: str
    build_s: float
    parse_s: float
    engine_bytes: int
    backend: str
    error: str = ""


@dataclass
class BuildResult:
    segments: list[SegmentResult]
    cache_hits: int
    built: int
    failed: int
    seconds: float
    backend: str
    backend_version: str


@dataclass
class VerifyResult:
    max_rel_err: Optional[float]
    max_abs_err: Optional[float]
    latency_ms: float
    backend: str
    tolerance: Optional[float]
    passed: bool


@dataclass
class BenchResult:
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    throughput: float
    iterations: int
    batch: int
    backend: str
    backend_timings_ms: dict[str, float] = field(default_factory=dict)
    samples_ms: list[float] = field(default_factory=list, repr=False)
    # `bench --layers`: rows {name, op, mean_ms, share, segment, calls}, largest first; None when not asked
    layers: Optional[list[dict[str, Any]]] = None
    layers_total_ms: float = 0.0   # sum of the rows' mean_ms
    layers_wall_ms: float = 0.0    # mean wall time of one profiled run
    layers_runs: int = 0

    def to_json(self, samples: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not samples:
            data.pop("samples_ms")
        if self.layers is None:
            for k in ("layers", "layers_total_ms", "layers_wall_ms", "layers_runs"):
                data.pop(k)
        return data


@dataclass
class Prepared:
    """A bundle on the host, ready for one device: its digest (its manifest's), archive and where it came from."""

    digest: str
    archive: Path
    bundle_dir: Optional[Path]
    target: Optional[TargetChoice]
    compile: CompilePhase
    manifest: Manifest
    archive_digest: str = ""  # the archive's own digest: what a registry and agents before parts know it by


@dataclass
class PushResult:
    device: str
    address: str
    bundle_digest: str
    target: Optional[TargetChoice]
    compile: CompilePhase
    upload: UploadResult
    build: BuildResult
    verify: Optional[VerifyResult]
    bench: Optional[BenchResult]
    timings: dict[str, float]
    segments_where: list[dict[str, Any]] = field(default_factory=list)
    precision: str = "fp32"
    accuracy: Optional[dict[str, Any]] = None  # INT8: FP32 against INT8 on the host (host/compiler/accuracy.py)
    int8_warning: Optional[str] = None  # INT8 on a GPU without fast INT8 (the Nano)
    model: Optional[VersionResult] = None  # the named version recorded (None: an agent without model versions)

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "address": self.address,
            "bundle_digest": self.bundle_digest,
            "target": self.target.to_json() if self.target else None,
            "compile": asdict(self.compile),
            "upload": asdict(self.upload),
            "build": asdict(self.build),
            "verify": asdict(self.verify) if self.verify else None,
            "bench": self.bench.to_json() if self.bench else None,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "parts": self.segments_where,
            "precision": self.precision,
            "accuracy": self.accuracy,
            "int8_warning": self.int8_warning,
            "model": asdict(self.model) if self.model else None,
        }


# ---------------------------------------------------------------- phases

def check_source(source: Path) -> str:
    """"model", "dir", "archive" or "output" (a `deploy compile -o` directory); a missing path or a directory that
    is no bundle fails before any device work."""
    if source.is_dir():
        if (source / MANIFEST).is_file():
            return "dir"
        if (source / "bundle" / MANIFEST).is_file():
            return "output"
        raise InvalidInput(f"{source} is a directory without {MANIFEST}; pass an ONNX model, or a bundle "
                           "(the output directory of `deploy compile -o`, its bundle/ or its bundle.tar)")
    if not source.exists():
        raise InvalidInput(f"{source}: no such file or directory; pass an ONNX model or a bundle directory")
    if source.suffix == ".tar":
        return "archive"
    return "model"


def _archive_bundle_dir(bundle_dir: Path) -> tuple[Path, str]:
    """The deterministic archive of a bundle directory, kept in the host cache by the manifest's digest."""
    import hashlib

    from device_agent.archive import write_archive

    # the manifest names every file with its digest, so it fixes the archive, except stray extra files
    h = hashlib.sha256((bundle_dir / MANIFEST).read_bytes())
    for path in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
        h.update(path.relative_to(bundle_dir).as_posix().encode() + b"\0")
    archives = bundle_cache.root() / "archives"
    archives.mkdir(parents=True, exist_ok=True)
    archive = archives / f"{h.hexdigest()[:32]}.tar"
    if not archive.is_file():
        write_archive(bundle_dir, archive)  # whole or not at all (device_agent.fileio.atomic_file)
        bundle_cache.prune()
    from host.client.digests import digest_of

    return archive, digest_of(archive)


def _cuda_target(target: TargetChoice) -> Optional[str]:
    """generic-cuda compiles for the GPU the agent reports; a Jetson profile names its own GPU."""
    return target.compute_capability if target.profile == "generic-cuda" else None


def _compile_into(source: Path, options: CompileOptions) -> bundle_cache.CompileFn:
    """A `bundle_cache.CompileFn`: run the host compiler (TVM is imported only here)."""

    def run(tmp: Path) -> tuple[Path, Path, str]:
        from host.compiler.api import compile_model

        result = compile_model(source, tmp / "out", options)
        return Path(result.bundle_dir), Path(result.archive), str(result.archive_digest)

    return run


def prepare(source: Path, target: Optional[TargetChoice], options: PushOptions,
            observer: Optional[Observer] = None) -> Prepared:
    """A bundle for `target`: the given bundle, or the model compiled for it (from the host cache when possible)."""
    observer = observer or Observer()
    source = Path(source)
    kind = check_source(source)
    if kind == "output":  # `deploy compile -o DIR`: DIR/bundle.tar is the archive of DIR/bundle
        kind, source = ("archive", source / "bundle.tar") if (source / "bundle.tar").is_file() \
            else ("dir", source / "bundle")
    if kind in ("dir", "archive"):
        return _prepare_given(source, kind, target, observer)
    if target is None:
        raise InvalidInput("compiling a model needs a target device")
    if not source.is_file():
        raise InvalidInput(f"{source}: not a file; pass an ONNX model")
    return _prepare_compiled(source, target, options, observer)


def _prepare_given(source: Path, kind: str, target: Optional[TargetChoice], observer: Observer) -> Prepared:
    """A bundle directory (archived into the host cache) or a bundle archive, as it is."""
    from device_agent.archive import read_manifest_from_archive
    from device_agent.bundle import Bundle
    from host.client.digests import digest_of

    started = time.perf_counter()
    observer.phase("compile", f"bundle {'directory' if kind == 'dir' else 'archive'} {source}")
    if kind == "dir":
        manifest = Bundle.open(source).manifest
        archive, digest = _archive_bundle_dir(source)
        bundle_dir: Optional[Path] = source
    else:
        manifest = read_manifest_from_archive(source)
        archive, digest = source, digest_of(source)
        bundle_dir = _unpacked_archive(source, digest)
    result = CompilePhase("none", time.perf_counter() - started, None if kind == "archive" else str(bundle_dir),
                          str(archive))
    observer.phase_done("compile", result.seconds, "given bundle")
    return Prepared(Bundle.open(bundle_dir).manifest_digest, archive, bundle_dir, target, result, manifest, digest)


def _unpacked_archive(archive: Path, digest: str) -> Path:
    """A given archive unpacked (checked) once into the host cache, so its parts can travel one by one."""
    from device_agent.archive import extract_archive
    from device_agent.manifest import MANIFEST_NAME

    dest = bundle_cache.root() / "unpacked" / digest.split(":", 1)[1][:32]
    if not (dest / MANIFEST_NAME).is_file():
        extract_archive(archive, dest)
    return dest


def _prepare_compiled(source: Path, target: TargetChoice, options: PushOptions, observer: Observer) -> Prepared:
    """The model compiled for `target` through the host compile cache (keyed by model, target and options)."""
    from device_agent.bundle import Bundle
    from host.client.digests import digest_of

    started = time.perf_counter()
    model_digest = digest_of(source)
    target_key = {"profile": target.profile, "trt_version": target.trt_version,
                  "compute_capability": target.compute_capability}
    compile_options = options.compile_for(target)
    key_options = bundle_cache.options_key(compile_options)
    key = bundle_cache.cache_key(model_digest, target_key, key_options)
    observer.phase("compile", f"{source.name} for {target.profile}, TensorRT {target.trt_version}")
    cached = bundle_cache.get_or_compile(key, _compile_into(source, compile_options),
                                         meta={"model": str(source.resolve()), "model_digest": model_digest,
                                               "target": target_key, "options": key_options})
    log.info("host compile cache %s: key %s, bundle %s", "hit" if cached.hit else "miss", key, cached.digest)
    manifest = Bundle.open(cached.bundle_dir).manifest
    seconds = time.perf_counter() - started
    result = CompilePhase("hit" if cached.hit else "miss", seconds, str(cached.bundle_dir), str(cached.archive), key)
    observer.phase_done("compile", seconds, "host cache hit" if cached.hit else "compiled")
    return Prepared(Bundle.open(cached.bundle_dir).manifest_digest, cached.archive, cached.bundle_dir, target, result,
                    manifest, cached.digest)


def upload(client: AgentClient, prepared: Prepared, observer: Optional[Observer] = None,
           registry: Optional[Any] = None) -> UploadResult:
    """Put the bundle on the device: by parts (only those it lacks), else as one archive (registry, old agent).

    The result's `bundle_digest` is what the device knows the bundle by from now on."""
    from host.client.parts import NoParts, bundle_bytes, send_bundle, whole_archive

    observer = observer or Observer()
    size = prepared.archive.stat().st_size
    archive_digest = prepared.archive_digest or prepared.digest
    if registry is not None:  # through the registry: publish once, the agent pulls (host/registry/from_agent.py)
        from host.registry.from_agent import bundle_via_registry

        observer.phase("upload", f"{size} bytes")
        t = time.perf_counter()
        by_parts = prepared.bundle_dir is not None
        digest = prepared.digest if by_parts else archive_digest
        via = bundle_via_registry(client, registry, prepared.archive, digest, prepared.bundle_dir)
        seconds = time.perf_counter() - t
        observer.phase_done("upload", seconds, "already on the device" if via.already_present else
                            f"pulled from {registry.ref} ({via.bytes_sent} bytes sent to it)")
        total, parts = bundle_bytes(prepared.bundle_dir) if by_parts else (size, 1)
        return UploadResult(total, via.bytes_sent, seconds, via.already_present, 0, total, parts,
                            int(not via.already_present), "registry", digest)
    from host.security.signing import metadata_for

    if prepared.bundle_dir is not None:
        observer.phase("upload", "parts the device lacks")
        try:  # signed by parts: the metadata goes with the manifest (its digest is the signed target)
            parts = send_bundle(client, prepared.bundle_dir, progress=observer.upload_progress,
                                trust=metadata_for(prepared.bundle_dir))
        except NoParts:
            observer.log(f"upload: the agent at {client.address} predates bundles by parts; sending the whole "
                         "bundle as one archive (upgrade it: deploy agent install)")
        else:
            result = UploadResult(parts.bytes_total, parts.bytes_sent, parts.seconds, parts.parts_sent == 0,
                                  parts.resumed_bytes,
                                  parts.bytes_total, parts.parts_total, parts.parts_sent, "parts", parts.digest,
                                  parts.resent)
            observer.phase_done("upload", parts.seconds, sent_text(parts.bytes_sent, parts.bytes_total,
                                                                   parts.parts_sent, parts.parts_total))
            return result
        archive = whole_archive(prepared.bundle_dir, bundle_cache.root() / "archives")
        archive_digest, size = "", archive.stat().st_size
    else:
        archive = prepared.archive
    observer.phase("upload", f"{size} bytes")
    summary = client.upload(archive, digest=archive_digest or None, progress=observer.upload_progress,
                            kind="bundle", trust=metadata_for(archive))
    result = UploadResult(summary.size, summary.bytes_sent, summary.seconds, summary.already_present,
                          summary.resumed_from, summary.size, 1, int(summary.bytes_sent > 0), "archive",
                          summary.digest)
    observer.phase_done("upload", summary.seconds, sent_text(summary.bytes_sent, summary.size, result.parts_sent, 1))
    return result


def sent_text(bytes_sent: int, bytes_total: int, parts_sent: int, parts_total: int) -> str:
    """'sent 1.2 MiB of 98.1 MiB (3 of 214 parts)': what moved against the whole bundle."""
    return (f"sent {bytes_sent / 2**20:.1f} MiB of {bytes_total / 2**20:.1f} MiB "
            f"({parts_sent} of {parts_total} part{'s' if parts_total != 1 else ''})")


def build(client: AgentClient, digest: str, options: agent_pb2.BuildOptions,
          observer: Optional[Observer] = None, resend: Optional[Callable[[AgentError], None]] = None) -> BuildResult:
    """The build phase: the stream read by `build_stream.build_bundle` (deadline, failure and DATA_LOSS rules),
    each segment's state shown through `observer`; `resend` puts the bundle on the device again after DATA_LOSS."""
    observer = observer or Observer()
    streamed = build_bundle(client, digest, options, BuildHooks(
        attempt=lambda: observer.phase("build", digest), segment=lambda state, _event: observer.segment(state),
        log=observer.log, resend=resend))
    summary = streamed.summary
    segments = [SegmentResult(s.id, s.cache or ("failed" if s.stage == "failed" else "miss"), s.build_s, s.parse_s,
                              s.engine_bytes, s.backend, s.error) for s in streamed.segments]
    result = BuildResult(segments, summary.cache_hits, summary.built, summary.failed, streamed.seconds,
                         summary.backend, summary.backend_version)
    observer.phase_done("build", streamed.seconds, f"{summary.cache_hits}/{summary.segments} cache hits")
    return result


def precision_of(manifest: Manifest, fp16: bool = False) -> dict[str, Any]:
    """`precision` and `accuracy` of `deploy push --json`: the bundle's (INT8 or not) and the build's FP16 flag."""
    opts = manifest.options
    int8 = opts.get("int8") or {}
    half = fp16 or bool(opts.get("fp16"))
    base = "int8" if int8 else "fp32"
    return {"precision": (base + "+fp16" if int8 else "fp16") if half else base, "accuracy": int8.get("accuracy"),
            "int8_warning": int8.get("warning")}


#: The default tolerance is at least this many times the model's own fp32 spread (reference.fp32_spread).
SPREAD_FACTOR = 2.0


def default_tolerance(fp16: bool, int8: bool = False, spread: float = 0.0) -> float:
    """Relative error is max|diff| / max|reference| (the agent's `compare`), so these bounds are meaningful.
    INT8 is verified against the quantized graph under onnxruntime; TensorRT's INT8 kernels round differently.
    ``spread``: how far two correct fp32 CPU runs of the model disagree (recorded by the compiler); a device
    is held to twice that when it is above the fixed bound."""
    return max(5e-2 if fp16 or int8 else 1e-3, SPREAD_FACTOR * float(spread or 0.0))


def verify(client: AgentClient, digest: str, options: agent_pb2.BuildOptions, tolerance: Optional[float],
           observer: Optional[Observer] = None) -> VerifyResult:
    """Run the bundle's reference inputs on the device and compare with the host's outputs."""
    observer = observer or Observer()
    observer.phase("verify", "reference inputs")
    started = time.perf_counter()
    reply = client.run(agent_pb2.RunRequest(bundle_digest=digest, options=options, verify=True))
    rel = reply.max_rel_err if reply.HasField("max_rel_err") else None
    abs_ = reply.max_abs_err if reply.HasField("max_abs_err") else None
    passed = tolerance is None or (rel is not None and rel <= tolerance)
    result = VerifyResult(rel, abs_, reply.latency_ms, reply.backend, tolerance, passed)
    observer.phase_done("verify", time.perf_counter() - started,
                        f"max relative error {rel:.3g}" if rel is not None else "no reference outputs")
    if not passed:
        raise VerifyFailed(f"the device's outputs differ from the host's reference: max relative error {rel:.3g} "
                           f"> {tolerance:g}; rebuild with --force-rebuild or raise --max-rel-err")
    return result


def benchmark(client: AgentClient, digest: str, options: agent_pb2.BuildOptions, push: PushOptions,
              observer: Optional[Observer] = None, inputs: Sequence[agent_pb2.Tensor] = ()) -> BenchResult:
    """``inputs``: the tensors to time (`bench --shape`); none: the agent's own (the reference samples)."""
    observer = observer or Observer()
    iterations = push.iterations if push.iterations or push.duration_s else 100
    observer.phase("bench", f"{iterations} iterations" if iterations else f"{push.duration_s:g} s")
    started = time.perf_counter()
    request = agent_pb2.BenchmarkRequest(bundle_digest=digest, options=options, warmup=push.warmup,
                                         iterations=iterations, duration_s=push.duration_s, batch=push.batch,
                                         layers=push.layers, inputs=list(inputs))
    result: Optional[agent_pb2.BenchmarkResult] = None
    with closing(client.benchmark(request)) as events:
        for event in events:
            if event.WhichOneof("event") == "progress":
                p = event.progress
                observer.bench_progress(p.done, p.total, p.elapsed_s, p.last_ms or None)
            elif event.WhichOneof("event") == "result":
                result = event.result
    if result is None:
        raise BuildFailed("the benchmark stream ended without a result; the agent may have stopped")
    lat = result.latency
    bench = BenchResult(lat.p50_ms, lat.p90_ms, lat.p95_ms, lat.p99_ms, lat.mean_ms, lat.min_ms, lat.max_ms,
                        lat.throughput, lat.iterations, result.batch, result.backend,
                        dict(result.backend_timings_ms), list(lat.samples_ms))
    if push.layers:
        bench.layers = [{"name": r.name, "op": r.op, "mean_ms": r.mean_ms, "share": r.share, "segment": r.segment,
                         "calls": r.calls} for r in result.layers]
        bench.layers_total_ms, bench.layers_wall_ms = result.layers_total_ms, result.layers_wall_ms
        bench.layers_runs = result.layers_runs
    observer.phase_done("bench", time.perf_counter() - started, f"p50 {lat.p50_ms:.2f} ms")
    return bench


def where_parts_run(prepared: Prepared, build_result: Optional[BuildResult]) -> list[dict[str, Any]]:
    """One row per part of the model: each TensorRT segment and the TVM remainder, with where it runs."""
    rows: list[dict[str, Any]] = []
    manifest = prepared.manifest
    built = {s.id: s for s in (build_result.segments if build_result else [])}
    for seg in manifest.segments:
        b = built.get(seg.id)
        rows.append({"id": seg.id, "kind": "tensorrt", "ops": len(seg.ops),
                     "runs_on": b.backend if b and b.backend else (build_result.backend if build_result else ""),
                     "cache": b.cache if b else ""})
    if manifest.remainder is not None:
        rows.append({"id": "remainder", "kind": "tvm", "ops": len(manifest.not_offloaded),
                     "runs_on": f"tvm ({_target_text(manifest.remainder.target, manifest.remainder.host)})",
                     "cache": ""})
    return rows


def _target_text(target: str, host: str) -> str:
    """'cuda sm_87, aarch64-linux-gnu host' from TVM's JSON target dicts (or the strings as they are)."""
    import json

    def parse(text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
            return value if isinstance(value, dict) else {}
        except ValueError:
            return {}

    t, h = parse(target), parse(host)
    if not t:
        return target
    text = " ".join(str(v) for v in (t.get("kind"), t.get("arch") or t.get("mtriple")) if v)
    if h and t.get("kind") != "llvm" and h.get("mtriple"):
        text += f", {h['mtriple']} host"
    return text


# ---------------------------------------------------------------- the whole job

def connect_and_target(client: AgentClient, options: PushOptions,
                       observer: Optional[Observer] = None) -> tuple[agent_pb2.DeviceInfo, TargetChoice]:
    observer = observer or Observer()
    observer.phase("target", client.address)
    started = time.perf_counter()
    info = client.info()
    target = choose_target(info, client.device, options.compile.profile, options.compile.trt_version,
                           options.backend)
    log.info("target of %s: %s", client.address, target.why)
    observer.phase_done("target", time.perf_counter() - started, target.why)
    return info, target


@dataclass
class Ready:
    """A bundle built on one device: what `bench` and `run` need before their own call."""

    target: TargetChoice
    prepared: Prepared
    upload: UploadResult
    build: BuildResult
    build_options: agent_pb2.BuildOptions
    timings: dict[str, float] = field(default_factory=dict)


def make_ready(client: AgentClient, source: Path, options: PushOptions,
               observer: Optional[Observer] = None, check: Optional[Any] = None) -> Ready:
    """Target, compile (or reuse), upload and build; `check(prepared)` may refuse the bundle before the upload."""
    observer = observer or Observer()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    _info, target = connect_and_target(client, options, observer)
    timings["target"] = time.perf_counter() - t
    t = time.perf_counter()
    prepared = prepare(source, target, options, observer)
    timings["compile"] = time.perf_counter() - t
    if check is not None:
        check(prepared)
    t = time.perf_counter()
    registry = None
    if options.registry:
        from host.registry.credentials import registry_client

        registry = registry_client(options.registry)
    uploaded = upload(client, prepared, observer, registry)
    prepared = replace(prepared, digest=uploaded.bundle_digest or prepared.digest)  # what the device knows it by
    timings["upload"] = time.perf_counter() - t
    build_options = options.build_options(target)
    t = time.perf_counter()

    def resend(exc: AgentError) -> None:  # the device's disk changed its copy of the bundle and the agent dropped it
        nonlocal uploaded
        observer.log(f"build: {exc.detail}; uploading the bundle again")
        uploaded = upload(client, prepared, observer, registry)

    built = build(client, prepared.digest, build_options, observer, resend)
    timings["build"] = time.perf_counter() - t
    if registry is not None:
        from host.registry.from_agent import publish_built_engines

        observer.phase("publish", str(registry.ref))
        t = time.perf_counter()
        published = publish_built_engines(client, registry, prepared.digest,
                                          [s.digest for s in prepared.manifest.segments], built.backend,
                                          built.backend_version, build_options)
        timings["publish"] = time.perf_counter() - t
        observer.phase_done("publish", timings["publish"], f"engines as {published.reference}")
    return Ready(target, prepared, uploaded, built, build_options, timings)


def push(client: AgentClient, source: Path, options: PushOptions, observer: Optional[Observer] = None) -> PushResult:
    """The main job on one connected device; raises the project's errors or `AgentError`."""
    observer = observer or Observer()
    t0 = time.perf_counter()
    ready = make_ready(client, source, options, observer)
    timings = dict(ready.timings)
    prepared, built, build_options = ready.prepared, ready.build, ready.build_options

    verified = None
    tolerance: Optional[float] = None
    if options.verify:
        t = time.perf_counter()
        spread = prepared.manifest.reference.get("fp32_spread", 0.0) or 0.0
        tolerance = options.max_rel_err if options.max_rel_err is not None else default_tolerance(
            options.compile.fp16, "int8" in prepared.manifest.options, spread)
        verified = verify(client, prepared.digest, build_options, tolerance, observer)
        timings["verify"] = time.perf_counter() - t

    t = time.perf_counter()
    model = record_version(client, prepared.digest, build_options, options.name or default_name(source),
                           options.name is not None, tolerance, options.activate, observer)
    timings["version"] = time.perf_counter() - t

    benched = None
    if options.bench:
        t = time.perf_counter()
        benched = benchmark(client, prepared.digest, build_options, options, observer)
        timings["bench"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return PushResult(device=client.device.name, address=client.address, bundle_digest=prepared.digest,
                      target=ready.target, compile=prepared.compile, upload=ready.upload, build=built, verify=verified,
                      bench=benched, timings=timings, segments_where=where_parts_run(prepared, built),
                      model=model, **precision_of(prepared.manifest, options.compile.fp16))
