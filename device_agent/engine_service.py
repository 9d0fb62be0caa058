"""The engine RPCs: Build, Run, Benchmark and the engine-cache calls, behind the lead's servicer.

Each method takes ``(request_or_iterator, context)`` and raises ``device_agent.errors`` classes;
the servicer's edge turns them into status codes.
"""
from __future__ import annotations

import collections
import json
import logging
import platform
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from protos import agent_pb2

from . import engines
from .bench import LatencyStats, Progress, run_loop
from .bundle import Bundle, Segment
from .compat import check_target
from .cache import SCHEMA, CacheEntry, EngineCache, canonical_json, cache_key, device_class
from .engines.base import Backend, BuildSpec, Engine, TensorMeta
from .engines.model import (ModelRunner, batch_of, compare, compose, has_dynamic_batch, numpy_to_wire, profile_max_batch,
                            profile_text, profiles_for, tensor_to_numpy, MAX_TENSORS)
from .fileio import sha256_bytes
from .incoming_engine import EngineSource, check_incoming
from .build_progress import run_with_progress
from .memory_guard import check_build_fits
from .timing_cache import TimingCacheInfo, TimingCaches, build_note
from .unpacked import UnpackedBundles
from .errors import (Aborted, BuildFailed, DeadlineExceeded, DeployError, InvalidInput, NotFound,
                     PreconditionFailed, ResourceExhausted)

log = logging.getLogger(__name__)
MAX_RUN_BYTES = 256 * 1024 * 1024
CHUNK = 1024 * 1024
MAX_BATCH = 4096
LOADED_ENGINES = 16
PROBE_WAIT_S = 120.0  # GetInfo waits this long for the start-up probe before probing in-process
LOAD_WAIT_S = 600.0  # a run waits this long for another thread's load of the same engine, then ABORTED
#: A benchmark whose worker sends nothing for this long, beyond what its own first run predicts, has hung: the
#: call ends DEADLINE_EXCEEDED (see _bench_stall_s). The worker is also joined for at most this long.
BENCH_STALL_S = 300.0
MAX_SAMPLES = 100_000  # the first this many per-iteration samples travel back; 800 KB keeps the result far under the message cap
LAYER_RUNS = 10  # profiled runs of `bench --layers`, after the timed ones (one more warms the profiler up)
MAX_LAYERS = 4000  # rows sent back (the largest); with MAX_LAYER_NAME, at most 8 MB, under the message cap
MAX_LAYER_NAME = 1000
BENCH_POLL_S = 1.0  # how often the benchmark's RPC thread looks at the client and the call's deadline


@dataclass
class Options:
    backend: Backend
    fp16: bool
    workspace: int
    mode: int
    batch: int
    force: bool


def _bench_stall_s(first_run_s: float, runs: int) -> float:
    """How long a benchmark may send nothing: `runs` iterations at 4x the first run's time, plus BENCH_STALL_S."""
    return BENCH_STALL_S + 4.0 * first_run_s * runs


class EngineService:
    def __init__(self, settings: Any, store: Any, facts: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.facts = facts
        self.cache = EngineCache(Path(settings.cache_dir), int(settings.cache_max_bytes))
        self.bundles_dir = Path(settings.data_dir) / "bundles"
        self.unpacked = UnpackedBundles(store, self.bundles_dir)  # verified before use (docs/reliability.md)
        self.timing = TimingCaches(Path(settings.cache_dir) / "timing")  # one file per device class
        self._loaded: "collections.OrderedDict[str, Engine]" = collections.OrderedDict()
        self._models: "collections.OrderedDict[tuple, ModelRunner]" = collections.OrderedDict()
        self._lock = threading.RLock()
        self._key_locks: Dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        # Backend facts for GetInfo, probed once in a child process from start-up on (see engines/probe.py).
        self._probes: Optional[List[engines.ProbeResult]] = None
        self._probed = threading.Event()
        # checked by config.from_namespace; settings made in code (tests) fall back to onnxruntime's default
        engines.get("onnxruntime-cuda").conv_algo_search = getattr(settings, "cudnn_conv_algo_search", "EXHAUSTIVE")
        threading.Thread(target=self._probe, name="backend-probe", daemon=True).start()

    def _probe(self) -> None:
        from .engines.probe import probe_in_child

        try:
            self._probes = probe_in_child()
        finally:
            self._probed.set()

    # ---------------------------------------------------------------- facts
    @property
    def gpu(self) -> Tuple[str, str]:
        gpus = getattr(self.facts, "gpus", None) or []
        return (gpus[0].name, gpus[0].compute_capability) if gpus else ("", "")

    def device_parts(self, backend_name: str) -> Dict[str, str]:
        probe = engines.get(backend_name).probe() if backend_name in engines.BACKENDS else None
        gpu, cc = self.gpu
        return {"backend": backend_name, "backend_version": probe.version if probe and probe.available else "",
                "gpu": gpu, "cc": cc, "l4t": getattr(self.facts, "l4t_release", None) or "",
                "arch": getattr(self.facts, "arch", None) or platform.machine()}

    def describe(self, reply: agent_pb2.DeviceInfo) -> None:
        """GetInfo's backend facts: each backend's availability, the TensorRT this device has, TVM."""
        self._probed.wait(timeout=PROBE_WAIT_S)
        probes = self._probes if self._probes is not None else engines.probe_all()
        by_name = {p.name: p for p in probes}
        for p in probes:
            reply.backends.add(name=p.name, available=p.available, version=p.version, detail=p.detail)
            if p.name == "tvm":
                reply.tvm_runtime = p.available
        trt, trtexec = by_name.get("tensorrt"), by_name.get("trtexec")
        if trt is not None and trt.available:
            module = trt.detail.split(": ", 1)[1] if trt.detail.startswith("module: ") else ""
            reply.trt_version, reply.trt_module = trt.version, module
        elif trtexec is not None and trtexec.available:
            reply.trt_version, reply.trt_module = trtexec.version, "trtexec"

    # ---------------------------------------------------------------- requests
    def _bundle(self, digest: str) -> Bundle:
        return self.unpacked.get(digest)

    def _options(self, o: agent_pb2.BuildOptions, bundle: Optional[Bundle] = None) -> Options:
        """The build options of a request: the request's, else this agent's where its operator set them, else the
        bundle's (its workspace), else this agent's defaults."""
        s = self.settings
        backend = engines.select(o.backend, s.backend)
        mode = o.multi_engine_mode if o.HasField("multi_engine_mode") else s.multi_engine_mode
        if mode not in (0, 1):
            raise InvalidInput(f"multi_engine_mode {mode} is not 0 (one engine, rebuilt for a larger batch) "
                               "or 1 (one engine per batch size)")
        if o.HasField("max_workspace_bytes"):
            workspace = o.max_workspace_bytes
        elif _source(s, "max_workspace_bytes") != "default":  # --max-workspace-bytes or the seed's variable
            workspace = s.max_workspace_bytes
        else:  # the compiler writes the profile's default workspace (256 MiB on a Nano) into the manifest
            workspace = manifest_workspace(bundle) or s.max_workspace_bytes
        batch = o.batch if o.HasField("batch") else 0
        if batch > MAX_BATCH:
            raise InvalidInput(f"batch {batch} is above this agent's limit of {MAX_BATCH}")
        return Options(backend, o.fp16 if o.HasField("fp16") else bool(s.fp16), int(workspace), int(mode),
                       int(batch), bool(o.force_rebuild))

    def _spec(self, seg: Segment, opts: Options, batch: int) -> BuildSpec:
        strict = opts.backend.name in engines.TENSORRT_FAMILY
        profiles = profiles_for(seg.inputs, batch, opts.mode, strict)
        if profiles and opts.mode == 0:
            profiles = self._mode0_profiles(seg, opts, batch, strict) or profiles
        meta = lambda ts: [TensorMeta(t.name, t.dtype, tuple(d if isinstance(d, int) else None for d in t.shape))
                           for t in ts]
        return BuildSpec(fp16=opts.fp16, int8=bool(seg.calibration), calibration=seg.calibration,
                         max_workspace_bytes=opts.workspace, profiles=profiles,
                         timing_cache_path=str(self.timing.path_for(self.device_parts(opts.backend.name)))
                         if strict else None,
                         inputs=meta(seg.inputs), outputs=meta(seg.outputs))

    def _mode0_profiles(self, seg: Segment, opts: Options, batch: int, strict: bool):
        """Mode 0: reuse the cached engine whose batch range covers ``batch`` (the largest built so far)."""
        base = self._parts(seg, opts, BuildSpec(fp16=opts.fp16, int8=bool(seg.calibration),
                                                calibration=seg.calibration, max_workspace_bytes=opts.workspace))
        best = None
        for e in self.cache.list(seg.digest):
            rng = profile_max_batch(e.parts.get("profiles", []))
            same = all(e.parts.get(k) == v for k, v in base.items() if k != "profiles")
            if same and rng and rng[0] == 1 and rng[1] >= batch and (best is None or rng[1] > best):
                best = rng[1]
        return profiles_for(seg.inputs, best, 0, strict) if best else None

    def _parts(self, seg: Segment, opts: Options, spec: BuildSpec) -> Dict[str, Any]:
        parts: Dict[str, Any] = {"schema": SCHEMA, "segment": seg.digest}
        parts.update(self.device_parts(opts.backend.name))
        parts.update(spec.key_parts())
        return parts

    @staticmethod
    def _check_batch(bundle: Bundle, batch: int) -> int:
        """A batch outside the range the bundle was compiled for (``--batch-range MIN:OPT:MAX``) is refused."""
        rng = bundle.manifest.options.get("batch")
        if isinstance(rng, list) and len(rng) == 3 and not rng[0] <= batch <= rng[2]:
            raise InvalidInput(f"batch {batch} is outside the range {rng[0]}..{rng[2]} this bundle was compiled "
                               f"for; recompile with --batch-range {rng[0]}:{rng[1]}:{max(batch, rng[2])}")
        if batch > MAX_BATCH:
            raise InvalidInput(f"batch {batch} is above this agent's limit of {MAX_BATCH}")
        return batch

    def _segment_batch(self, bundle: Bundle, opts: Options) -> int:
        if opts.batch:
            return self._check_batch(bundle, opts.batch)
        if has_dynamic_batch(bundle.manifest.inputs):
            ref_in, _ = bundle.read_reference()
            return batch_of(bundle.manifest.inputs, ref_in) if ref_in else 1
        return 1

    def _plan_for(self, seg: Segment, opts: Options, batch: int) -> Tuple[BuildSpec, Dict[str, Any], str]:
        spec = self._spec(seg, opts, batch)
        parts = self._parts(seg, opts, spec)
        return spec, parts, cache_key(parts)

    def _build_put(self, bundle: Bundle, seg: Segment, opts: Options, spec: BuildSpec,
                   parts: Dict[str, Any], batch: int):
        """Build with the backend and commit to the cache (caller holds the key's lock)."""
        for item in self._build_put_progress(bundle, seg, opts, spec, parts, batch, heartbeat_s=0):
            if isinstance(item, tuple):
                return item[1]
        raise AssertionError("build ended without a result")

    def _build_put_progress(self, bundle: Bundle, seg: Segment, opts: Options, spec: BuildSpec,
                            parts: Dict[str, Any], batch: int, heartbeat_s: float):
        """_build_put yielding progress dicts while the backend builds in a worker, then ("result", (entry, out))."""
        onnx = self.unpacked.segment_bytes("sha256:" + bundle.root.name, bundle, seg)  # never build changed bytes
        # the workspace is TensorRT's builder scratch; onnxruntime's builds take none
        workspace = opts.workspace if opts.backend.name in engines.TENSORRT_FAMILY else 0
        check_build_fits(seg.id, workspace, len(onnx), int(getattr(self.settings, "memory_limit_bytes", 0)))
        result = None
        for item in run_with_progress(lambda sp: opts.backend.build(onnx, sp), spec, heartbeat_s):
            if isinstance(item, tuple):
                result = item[1]
            else:
                yield item
        yield ("result", self._commit_build(seg, opts, spec, parts, batch, result))

    def _commit_build(self, seg: Segment, opts: Options, spec: BuildSpec, parts: Dict[str, Any], batch: int,
                      result: Any):
        entry = self.cache.put(parts, result.plan)
        if opts.mode == 0 and spec.profiles:  # one engine: drop the smaller ones this one supersedes
            for e in self.cache.list(seg.digest):
                rng = profile_max_batch(e.parts.get("profiles", []))
                if e.key != entry.key and rng and rng[0] == 1 and rng[1] < batch and all(
                        e.parts.get(k) == parts[k] for k in parts if k != "profiles"):
                    self.cache.remove(e.key)
                    self._forget(e.key)
        return entry, result

    def _ensure(self, bundle: Bundle, seg: Segment, opts: Options,
                batch: int) -> Tuple[CacheEntry, bytes, bool, BuildSpec]:
        """The segment's plan for a run: cached (hashed as it is read) or built now; force_rebuild is Build's."""
        spec, parts, key = self._plan_for(seg, opts, batch)
        with self.cache.lock(key):
            found = self.cache.read(key)
            if found is not None:
                return found[0], found[1], True, spec
            entry, result = self._build_put(bundle, seg, opts, spec, parts, batch)
            return entry, result.plan, False, spec

    # ---------------------------------------------------------------- Build
    def Build(self, request: agent_pb2.BuildRequest, context: Any) -> Iterator[agent_pb2.BuildEvent]:
        bundle = self._bundle(request.bundle_digest)
        opts = self._options(request.options, bundle)
        check_target(bundle, opts.backend, self.gpu[1] or None)
        batch = self._segment_batch(bundle, opts)
        segs = bundle.manifest.segments
        summary = agent_pb2.BuildSummary(bundle_digest=request.bundle_digest, segments=len(segs),
                                         backend=opts.backend.name, backend_version=opts.backend.probe().version)
        if getattr(self.settings, "registry", "") and not opts.force:  # engines of this class there: no build
            from .registry_pull import prefetch

            prefetch(self, request.bundle_digest, opts.backend.name, [self._plan_for(s, opts, batch)[2] for s in segs])
        start = time.perf_counter()
        for i, seg in enumerate(segs):
            if context is not None and not context.is_active():
                return

            def event(stage: str, key: str = "", messages=(), **fields: Any) -> agent_pb2.BuildEvent:
                ev = agent_pb2.SegmentEvent(segment_id=seg.id, stage=getattr(agent_pb2.SegmentEvent, stage),
                                            cache_key=key, backend=opts.backend.name, index=i, total=len(segs),
                                            **fields)
                ev.messages.extend(str(m)[:2000] for m in list(messages)[:50])
                return agent_pb2.BuildEvent(segment=ev)

            yield event("STARTED")
            t0 = time.perf_counter()
            spec, parts, key = self._plan_for(seg, opts, batch)
            prof = profile_text(spec.profiles)
            with self.cache.lock(key):
                found = None if opts.force else self.cache.check(key)
                lookup_s = time.perf_counter() - t0
                if found is not None:
                    summary.cache_hits += 1
                    yield event("CACHE_HIT", key, lookup_s=lookup_s, engine_bytes=found.size, profile=prof)
                    continue
                yield event("CACHE_MISS", key, lookup_s=lookup_s, profile=prof,
                            timing_cache=self._timing_note(opts))
                try:
                    for item in self._build_put_progress(bundle, seg, opts, spec, parts, batch,
                                                         float(getattr(self.settings, "build_heartbeat_s", 5.0))):
                        if isinstance(item, tuple):
                            entry, r = item[1]
                        else:
                            yield event("PROGRESS", key, progress_kind=str(item.get("kind", "")),
                                        progress_phase=str(item.get("phase", ""))[:200],
                                        progress_step=int(item.get("step", 0)),
                                        progress_steps=int(item.get("steps", 0)),
                                        elapsed_s=float(item.get("elapsed_s", 0.0)))
                except DeployError as exc:
                    if not isinstance(exc, BuildFailed):
                        raise
                    summary.failed += 1
                    yield event("FAILED", key, error=str(exc), messages=getattr(exc, "messages", [str(exc)]))
                    continue
            summary.built += 1
            yield event("PARSED", key, parse_s=r.parse_s)
            yield event("BUILT", key, parse_s=r.parse_s, build_s=r.build_s, engine_bytes=entry.size,
                        messages=r.messages, profile=prof)
        summary.total_s = time.perf_counter() - start
        yield agent_pb2.BuildEvent(summary=summary)

    # ---------------------------------------------------------------- loading and running
    def _forget(self, key: str) -> None:
        """Drop a loaded engine and the models using it; a run holding it finishes, then GC frees it."""
        with self._lock:
            self._loaded.pop(key, None)
            for mk in [mk for mk in self._models if key in mk]:
                self._models.pop(mk)

    def _engine(self, entry: CacheEntry, plan: bytes, spec: BuildSpec, backend: Backend) -> Engine:
        with self._lock:
            if entry.key in self._loaded:
                self._loaded.move_to_end(entry.key)
                return self._loaded[entry.key]
        key_lock = self._key_locks[entry.key]
        if not key_lock.acquire(timeout=LOAD_WAIT_S):
            raise Aborted(f"another call has been loading engine {entry.key[:16]}... for {LOAD_WAIT_S:.0f} s; "
                          "retry later")
        try:
            with self._lock:
                if entry.key in self._loaded:
                    return self._loaded[entry.key]
            eng = backend.load(plan, spec)
            eng.max_run_bytes = MAX_RUN_BYTES
            with self._lock:
                self._loaded[entry.key] = eng
                stale = list(self._loaded)[:-LOADED_ENGINES] if len(self._loaded) > LOADED_ENGINES else []
            for k in stale:
                self._forget(k)
            return eng
        finally:
            key_lock.release()

    def _model(self, bundle: Bundle, opts: Options, batch: int) -> ModelRunner:
        check_target(bundle, opts.backend, self.gpu[1] or None)
        seg_engines: Dict[str, Engine] = {}
        keys = []
        for seg in bundle.manifest.segments:
            _, _, key = self._plan_for(seg, opts, batch)
            with self._lock:
                eng = self._loaded.get(key)
                if eng is not None:
                    self._loaded.move_to_end(key)
            if eng is not None and self.cache.get(key) is not None:  # loaded already: no re-read of the plan
                self.cache.touch(key)
            else:
                entry, plan, _, spec = self._ensure(bundle, seg, opts, batch)
                eng, key = self._engine(entry, plan, spec, opts.backend), entry.key
            seg_engines[seg.id] = eng
            keys.append(key)
        mkey = (bundle.manifest.source_digest, str(bundle.root), *keys)
        with self._lock:
            if mkey in self._models:
                return self._models[mkey]
        runner = compose(bundle, seg_engines, opts.backend.name, getattr(self.facts, "arch", None) or
                         platform.machine(), bool(self.gpu[0]))
        with self._lock:
            self._models[mkey] = runner
            while len(self._models) > LOADED_ENGINES:
                self._models.popitem(last=False)
        return runner

    def _feeds(self, tensors, bundle: Bundle) -> Dict[str, np.ndarray]:
        if len(tensors) > MAX_TENSORS:
            raise InvalidInput(f"{len(tensors)} tensors is above the limit of {MAX_TENSORS}")
        feeds, total = {}, 0
        for t in tensors:
            if t.name in feeds:
                raise InvalidInput(f"input {t.name!r} given twice")
            feeds[t.name] = tensor_to_numpy(t.name, t.dtype, list(t.shape), t.data, MAX_RUN_BYTES)
            total += feeds[t.name].nbytes
        if total > MAX_RUN_BYTES:
            raise ResourceExhausted(f"inputs total {total} bytes, above the limit of {MAX_RUN_BYTES}")
        return feeds

    def Run(self, request: agent_pb2.RunRequest, context: Any) -> agent_pb2.RunReply:
        bundle = self._bundle(request.bundle_digest)
        opts = self._options(request.options, bundle)
        if request.verify:
            if len(request.inputs):
                raise InvalidInput("verify mode runs the bundle's reference inputs; send no inputs with it")
            feeds, want = bundle.read_reference()
            if not feeds or not want:
                raise PreconditionFailed("this bundle carries no reference samples to verify against; "
                                         "recompile it with reference samples")
        else:
            feeds, want = self._feeds(request.inputs, bundle), {}
        batch = self._check_batch(bundle, batch_of(bundle.manifest.inputs, feeds))
        runner = self._model(bundle, opts, batch)
        t0 = time.perf_counter()
        outputs = runner.run(feeds)
        latency = time.perf_counter() - t0
        reply = agent_pb2.RunReply(latency_ms=latency * 1e3, backend=opts.backend.name)
        for name in [o.name for o in bundle.manifest.outputs]:
            dtype, shape, data = numpy_to_wire(outputs[name])
            reply.outputs.add(name=name, dtype=dtype, shape=shape, data=data)
        if request.verify:
            rel, abs_ = compare(outputs, want)
            reply.max_rel_err, reply.max_abs_err = rel, abs_
        return reply

    # ---------------------------------------------------------------- Benchmark
    def _bench_feeds(self, request: agent_pb2.BenchmarkRequest, bundle: Bundle) -> Dict[str, np.ndarray]:
        if len(request.inputs):
            return self._feeds(request.inputs, bundle)
        ref, _ = bundle.read_reference()
        want = request.batch or request.options.batch or 0
        feeds = {}
        rng = np.random.default_rng(0)
        for spec in bundle.manifest.inputs:
            arr = ref.get(spec.name)
            dynamic = bool(spec.shape) and isinstance(spec.shape[0], str)
            if arr is not None and (not want or not dynamic or arr.shape[0] == want):
                feeds[spec.name] = arr
                continue
            if arr is not None:
                reps = (want + arr.shape[0] - 1) // arr.shape[0]
                feeds[spec.name] = np.concatenate([arr] * reps)[:want]
                continue
            shape = [want or 1 if isinstance(d, str) and i == 0 else (d if isinstance(d, int) else 1)
                     for i, d in enumerate(spec.shape)]
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        return feeds

    def Benchmark(self, request: agent_pb2.BenchmarkRequest, context: Any) -> Iterator[agent_pb2.BenchmarkEvent]:
        bundle = self._bundle(request.bundle_digest)
        opts = self._options(request.options, bundle)
        feeds = self._bench_feeds(request, bundle)
        batch = self._check_batch(bundle, batch_of(bundle.manifest.inputs, feeds))
        runner = self._model(bundle, opts, batch)
        iterations, duration = int(request.iterations), float(request.duration_s)
        if iterations == 0 and duration == 0:
            iterations = 100
        warmup = int(request.warmup)
        native = getattr(runner.engine, "native_benchmark", None)
        if native is not None:  # trtexec times itself, with its H2D / GPU compute / D2H split
            stats, timings = native(feeds, warmup, iterations, duration, batch)
            result = self._bench_result(stats, timings, opts, batch)
            if request.layers:
                self._add_layers(result.result, bundle, runner, feeds)
            yield result
            return
        t_first = time.perf_counter()
        runner.run(feeds)  # first run outside the timing: allocations, lazy initialisation
        first_s = time.perf_counter() - t_first
        call = runner.bench_call(feeds)
        runner.reset_timings()
        events: "queue.Queue[Any]" = queue.Queue()
        stop = threading.Event()
        done: Dict[str, Any] = {}

        def work() -> None:
            try:
                done["stats"] = run_loop(call, warmup=warmup, iterations=iterations,
                                         duration_s=duration, batch=batch, on_progress=events.put,
                                         should_stop=stop.is_set)
            except BaseException as exc:  # handed to the RPC thread, raised there
                done["error"] = exc
            finally:
                events.put(None)

        worker = threading.Thread(target=work, name="benchmark", daemon=True)
        worker.start()
        first_wait = _bench_stall_s(first_s, warmup + 1)  # no progress is sent during the warm-up
        later_wait = _bench_stall_s(first_s, 1)
        join_s = later_wait
        try:
            waited_for, since = first_wait, time.monotonic()
            while True:
                try:
                    item = events.get(timeout=BENCH_POLL_S)
                except queue.Empty:
                    if context is not None and not context.is_active():
                        stop.set()  # the client is gone or its deadline passed: gRPC has ended the call
                        return
                    quiet = time.monotonic() - since
                    if quiet > waited_for:
                        stop.set()
                        join_s = BENCH_POLL_S  # stuck inside one run: waiting longer would not free it
                        raise DeadlineExceeded(
                            f"benchmark made no progress for {quiet:.0f} s (its first run took {first_s:.3f} s); "
                            "the backend looks hung; the benchmark was stopped, the agent keeps serving")
                    continue
                waited_for, since = later_wait, time.monotonic()
                if item is None:
                    break
                if context is not None and not context.is_active():
                    stop.set()
                    continue
                p: Progress = item
                yield agent_pb2.BenchmarkEvent(progress=agent_pb2.BenchmarkProgress(
                    done=p.done, total=p.total, elapsed_s=p.elapsed_s, last_ms=p.last_ms))
        finally:
            stop.set()
            worker.join(join_s)  # the iteration in flight ends, then run_loop sees `stop`
            if worker.is_alive():
                log.warning("benchmark worker still inside one run %.1f s after it was stopped; left to finish",
                            join_s)
        if "error" in done:
            raise done["error"]
        result = self._bench_result(done["stats"], runner.timings(), opts, batch)
        if request.layers:  # after the timed runs and their timings, so the profiler perturbs neither
            self._add_layers(result.result, bundle, runner, feeds)
        yield result

    @staticmethod
    def _add_layers(result: agent_pb2.BenchmarkResult, bundle: Bundle, runner: ModelRunner,
                    feeds: Dict[str, np.ndarray]) -> None:
        """The per-layer profile of LAYER_RUNS runs of their own; the segments' ONNX names fused kernels."""
        sources = {s.id: bundle.segment_path(s.id).read_bytes() for s in bundle.manifest.segments}
        prof = runner.profile_layers(feeds, LAYER_RUNS, sources)
        for r in prof.rows[:MAX_LAYERS]:
            result.layers.add(name=r.name[:MAX_LAYER_NAME], op=r.op[:MAX_LAYER_NAME], mean_ms=r.mean_ms,
                              share=r.share, segment=r.segment, calls=r.calls)
        result.layers_total_ms = sum(r.mean_ms for r in prof.rows)
        result.layers_wall_ms = prof.wall_ms
        result.layers_runs = prof.runs

    @staticmethod
    def _bench_result(stats: LatencyStats, timings: Dict[str, float], opts: Options,
                      batch: int) -> agent_pb2.BenchmarkEvent:
        lat = agent_pb2.LatencyStats(min_ms=stats.min_ms, mean_ms=stats.mean_ms, p50_ms=stats.p50_ms,
                                     p90_ms=stats.p90_ms, p95_ms=stats.p95_ms, p99_ms=stats.p99_ms,
                                     max_ms=stats.max_ms, throughput=stats.throughput, iterations=stats.iterations)
        lat.samples_ms.extend(stats.samples_ms[:MAX_SAMPLES])
        result = agent_pb2.BenchmarkResult(latency=lat, backend=opts.backend.name, batch=batch)
        for k, v in timings.items():
            result.backend_timings_ms[k] = float(v)
        return agent_pb2.BenchmarkEvent(result=result)

    # ---------------------------------------------------------------- engine cache RPCs
    @staticmethod
    def _entry_pb(e: CacheEntry) -> agent_pb2.EngineEntry:
        pb = agent_pb2.EngineEntry(key=e.key, segment_digest=e.segment_digest, backend=e.parts.get("backend", ""),
                                   backend_version=e.parts.get("backend_version", ""), size=e.size,
                                   digest=e.digest, created=e.created, last_used=e.last_used,
                                   device_class=e.device_class)
        for k in ("precision", "workspace", "gpu", "cc", "l4t", "arch"):
            pb.attributes[k] = str(e.parts.get(k, ""))
        if e.parts.get("calibration"):
            pb.attributes["calibration"] = str(e.parts["calibration"])
        pb.attributes["profiles"] = json.dumps(e.parts.get("profiles", []), sort_keys=True)
        pb.attributes["parts"] = canonical_json(e.parts).decode()
        return pb

    def ListEngines(self, request: agent_pb2.ListEnginesRequest, context: Any) -> agent_pb2.ListEnginesReply:
        entries = self.cache.list(request.segment_digest)
        reply = agent_pb2.ListEnginesReply(total_bytes=self.cache.total_bytes(), limit_bytes=self.cache.max_bytes)
        reply.engines.extend(self._entry_pb(e) for e in entries)
        reply.timing_caches.extend(timing_info_pb(t) for t in self.timing.list())
        return reply

    # ---------------------------------------------------------------- timing cache RPCs
    def _timing_note(self, opts: Options) -> str:
        trt = opts.backend.name in engines.TENSORRT_FAMILY  # others: the tensorrt class's cache, which they skip
        info = self.timing.info(self.device_parts(opts.backend.name if trt else "tensorrt"))
        return build_note(info, opts.backend.name, opts.backend.name in engines.TENSORRT_FAMILY)

    def TimingCacheFetch(self, request: agent_pb2.TimingCacheFetchRequest,
                         context: Any) -> Iterator[agent_pb2.TimingCacheChunk]:
        facts = self.device_parts(request.backend or "tensorrt")
        info = self.timing.info(facts)
        if info is None:
            raise NotFound(f"no timing cache for this agent's class {device_class(facts)}; a TensorRT build "
                           "writes one (or put one with TimingCachePut)")
        data = info.path.read_bytes()
        info = TimingCacheInfo(info.facts, len(data), sha256_bytes(data), info.updated, info.path)
        yield agent_pb2.TimingCacheChunk(info=timing_info_pb(info))
        for off in range(0, len(data), CHUNK):
            yield agent_pb2.TimingCacheChunk(chunk=data[off:off + CHUNK])

    def TimingCachePut(self, request_iterator: Iterator[agent_pb2.TimingCacheChunk],
                       context: Any) -> agent_pb2.TimingCachePutReply:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "info":
            raise InvalidInput("TimingCachePut must start with the cache's info (as TimingCacheFetch sends it)")
        facts = dict(first.info.facts)
        mine = self.device_parts(facts.get("backend", "") or "tensorrt")

        def chunks() -> Iterator[bytes]:
            for msg in request_iterator:
                if msg.WhichOneof("msg") != "chunk" or not msg.chunk:
                    raise InvalidInput("only non-empty chunk messages may follow the timing cache's info")
                yield msg.chunk

        info, present = self.timing.put(facts, mine, chunks(), first.info.size, first.info.digest)
        return agent_pb2.TimingCachePutReply(digest=info.digest, already_present=present,
                                             bytes_received=0 if present else info.size)

    def FetchEngine(self, request: agent_pb2.FetchEngineRequest, context: Any) -> Iterator[agent_pb2.EngineChunk]:
        found = self.cache.read(request.key)
        if found is None:
            raise NotFound(f"no valid engine with key {request.key!r} here; list them with ListEngines")
        entry, plan = found
        yield agent_pb2.EngineChunk(entry=self._entry_pb(entry))
        for off in range(0, len(plan), CHUNK):
            yield agent_pb2.EngineChunk(chunk=plan[off:off + CHUNK])

    def PutEngine(self, request_iterator: Iterator[agent_pb2.EngineChunk], context: Any) -> agent_pb2.PutEngineReply:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "entry":
            raise InvalidInput("PutEngine must start with the engine's entry (as FetchEngine sends it)")
        e = first.entry
        incoming = check_incoming(e.key, e.attributes.get("parts", ""), e.size, e.digest, self.cache,
                                  self.device_parts, EngineSource("engine entry", "attributes['parts']",
                                                                  "; export it with FetchEngine"))

        def chunks() -> Iterator[bytes]:
            for msg in request_iterator:
                if msg.WhichOneof("msg") != "chunk" or not msg.chunk:  # empty chunks: an unbounded count
                    raise InvalidInput("only non-empty chunk messages may follow the engine entry")
                yield msg.chunk

        entry, present = self.cache.put_external_stream(incoming.key, incoming.parts, chunks(), incoming.size,
                                                        incoming.digest, incoming.expected)
        return agent_pb2.PutEngineReply(key=entry.key, already_present=present,
                                        bytes_received=0 if present else e.size)

    def Prune(self, request: agent_pb2.PruneRequest, context: Any) -> agent_pb2.PruneReply:
        max_bytes = request.max_bytes if request.HasField("max_bytes") else None
        if max_bytes is None and not request.keys and not request.all:
            raise InvalidInput("say what to prune: max_bytes, keys, or all")
        removed, freed = self.cache.prune(max_bytes=max_bytes, keys=list(request.keys), all=request.all)
        for k in removed:
            self._forget(k)
        return agent_pb2.PruneReply(removed=removed, freed_bytes=freed, total_bytes=self.cache.total_bytes())


def _source(settings: Any, name: str) -> str:
    """Where a setting came from ("default", "flag", an environment variable); settings without sources: default."""
    source = getattr(settings, "source", None)
    return source(name) if callable(source) else "default"


def manifest_workspace(bundle: Optional[Bundle]) -> int:
    """The bundle manifest's ``max_workspace_size`` (the compile profile's default or the user's), or 0."""
    value = bundle.manifest.options.get("max_workspace_size") if bundle is not None else None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return 0
    return int(value)


def timing_info_pb(t: TimingCacheInfo) -> agent_pb2.TimingCacheInfo:
    pb = agent_pb2.TimingCacheInfo(device_class=t.device_class, class_digest=t.class_digest, size=t.size,
                                   digest=t.digest, updated=t.updated)
    pb.facts.update(t.facts)
    return pb
