"""The engine RPCs (Build, Run, Benchmark, and the cache calls of `cache_rpcs`) as adapters over the parts that work.

Each method takes ``(request_or_iterator, context)``, turns the request into the parts' plain arguments and their
results into replies, and raises ``device_agent.errors`` classes; the servicer's edge turns them into status codes.
Where each job lives:

- `build_plan.Planner`: options, build specs, cache keys, batch checks, the mode-0 rule;
- `segment_build.SegmentBuilder`: building a segment and committing it to the cache (the only code that builds);
- `loaded.LoadedModels`: engines loaded from the cache and composed into runners (usable without gRPC);
- `bench_runner`: Benchmark's timed runs in a worker, its results and layer profile;
- `cache_rpcs.CacheRPCs`: ListEngines, FetchEngine, PutEngine, Prune, TimingCacheFetch, TimingCachePut.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from protos import agent_pb2

from . import engines
from .bench_runner import bench_feeds, benchmark
from .build_plan import Options, Planner, feeds_batch
from .build_progress import relay
from .bundle import Bundle
from .cache import EngineCache
from .cache_rpcs import CacheRPCs
from .compat import check_target
from .engines.base import BuildProgress
from .engines.model import (MAX_TENSORS, compare, numpy_to_wire, profile_text, reference_samples, shape_samples,
                            tensor_to_numpy)
from .errors import BuildFailed, InvalidInput, ResourceExhausted
from .loaded import MAX_RUN_BYTES, LoadedModels, configure_backends
from .segment_build import SegmentBuilder
from .timing_cache import TimingCaches
from .unpacked import UnpackedBundles

PROBE_WAIT_S = 120.0  # GetInfo waits this long for the start-up probe before probing in-process


class EngineService:
    def __init__(self, settings: Any, store: Any, facts: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.facts = facts
        self.cache = EngineCache(Path(settings.cache_dir), int(settings.cache_max_bytes))
        self.unpacked = UnpackedBundles(store, Path(settings.data_dir) / "bundles")  # verified before use
        self.timing = TimingCaches(Path(settings.cache_dir) / "timing")  # one file per device class
        self.planner = Planner(settings, self.cache, self.timing, facts)
        self.builder = SegmentBuilder(self.planner, self.cache, self.unpacked, settings,
                                      forget=lambda key: self.loaded.forget(key))
        self.loaded = LoadedModels(self.planner, self.unpacked, ensure=self.builder.ensure)
        self.cache_rpcs = CacheRPCs(self.cache, self.timing, self.planner.device_parts, self.loaded.forget)
        # Backend facts for GetInfo, probed once in a child process from start-up on (see engines/probe.py).
        self._probes: Optional[List[engines.ProbeResult]] = None
        self._probed = threading.Event()
        configure_backends(settings)
        threading.Thread(target=self._probe, name="backend-probe", daemon=True).start()

    def _probe(self) -> None:
        from .engines.probe import probe_in_child

        try:
            self._probes = probe_in_child()
        finally:
            self._probed.set()

    def device_parts(self, backend_name: str) -> Dict[str, str]:
        """This device's class for `backend_name` (the registry pull and poll ask)."""
        return self.planner.device_parts(backend_name)

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
    def request_options(self, o: agent_pb2.BuildOptions, bundle: Bundle) -> Options:
        """A request's options: a field it does not set is None, for the planner's defaults."""
        given = lambda name: getattr(o, name) if o.HasField(name) else None
        return self.planner.options(bundle, backend=o.backend, fp16=given("fp16"),
                                    workspace=given("max_workspace_bytes"), mode=given("multi_engine_mode"),
                                    batch=o.batch if o.HasField("batch") else 0, force=bool(o.force_rebuild))

    @staticmethod
    def _feeds(tensors: Sequence[agent_pb2.Tensor]) -> Dict[str, np.ndarray]:
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

    @staticmethod
    def _is_active(context: Any) -> bool:
        return context is None or context.is_active()

    # ---------------------------------------------------------------- Build
    def Build(self, request: agent_pb2.BuildRequest, context: Any) -> Iterator[agent_pb2.BuildEvent]:
        digest = request.bundle_digest
        bundle = self.unpacked.get(digest)
        opts = self.request_options(request.options, bundle)
        check_target(bundle, opts.backend, self.planner.gpu[1] or None)
        batch = self.planner.segment_batch(bundle, opts)
        segs = bundle.manifest.segments
        summary = agent_pb2.BuildSummary(bundle_digest=digest, segments=len(segs),
                                         backend=opts.backend.name, backend_version=opts.backend.probe().version)
        if getattr(self.settings, "registry", "") and not opts.force:  # engines of this class there: no build
            from .registry_pull import prefetch

            prefetch(self, digest, opts.backend.name, [self.planner.plan(s, opts, batch).key for s in segs])
        heartbeat_s = float(getattr(self.settings, "build_heartbeat_s", 5.0))
        start = time.perf_counter()
        for i, seg in enumerate(segs):
            if not self._is_active(context):
                return

            def event(stage: str, key: str = "", messages: Sequence[Any] = (), **fields: Any) -> agent_pb2.BuildEvent:
                ev = agent_pb2.SegmentEvent(segment_id=seg.id, stage=getattr(agent_pb2.SegmentEvent, stage),
                                            cache_key=key, backend=opts.backend.name, index=i, total=len(segs),
                                            **fields)
                ev.messages.extend(str(m)[:2000] for m in list(messages)[:50])
                return agent_pb2.BuildEvent(segment=ev)

            def progress(key: str, p: BuildProgress) -> agent_pb2.BuildEvent:
                return event("PROGRESS", key, progress_kind=p.kind, progress_phase=p.phase[:200],
                             progress_step=p.step, progress_steps=p.steps, elapsed_s=p.elapsed_s)

            yield event("STARTED")
            t0 = time.perf_counter()
            plan = self.planner.plan(seg, opts, batch)
            key, prof = plan.key, profile_text(plan.spec.profiles)
            with self.cache.lock(key):
                found = None if opts.force else self.cache.check(key)
                lookup_s = time.perf_counter() - t0
                if found is not None:
                    summary.cache_hits += 1
                    yield event("CACHE_HIT", key, lookup_s=lookup_s, engine_bytes=found.size, profile=prof)
                    continue
                yield event("CACHE_MISS", key, lookup_s=lookup_s, profile=prof,
                            timing_cache=self.builder.timing_note(opts))
                try:
                    built = yield from relay(self.builder.build(digest, bundle, seg, opts, plan, batch, heartbeat_s),
                                             lambda p: progress(key, p))
                except BuildFailed as exc:
                    summary.failed += 1
                    yield event("FAILED", key, error=str(exc), messages=getattr(exc, "messages", [str(exc)]))
                    continue
            summary.built += 1
            r = built.output
            yield event("PARSED", key, parse_s=r.parse_s)
            yield event("BUILT", key, parse_s=r.parse_s, build_s=r.build_s, engine_bytes=built.entry.size,
                        messages=r.messages, profile=prof)
        summary.total_s = time.perf_counter() - start
        yield agent_pb2.BuildEvent(summary=summary)

    # ---------------------------------------------------------------- Run
    def Run(self, request: agent_pb2.RunRequest, context: Any) -> agent_pb2.RunReply:
        bundle = self.unpacked.get(request.bundle_digest)
        opts = self.request_options(request.options, bundle)
        if request.verify:
            if len(request.inputs):
                raise InvalidInput("verify mode runs the bundle's reference inputs; send no inputs with it")
            feeds, want = reference_samples(bundle)
        else:
            feeds, want = self._feeds(request.inputs), {}
        runner = self.loaded.runner(request.bundle_digest, bundle, opts, feeds_batch(bundle, feeds))
        t0 = time.perf_counter()
        outputs = runner.run(feeds)
        latency = time.perf_counter() - t0
        reply = agent_pb2.RunReply(latency_ms=latency * 1e3, backend=opts.backend.name)
        for name in [o.name for o in bundle.manifest.outputs]:
            dtype, shape, data = numpy_to_wire(outputs[name])
            reply.outputs.add(name=name, dtype=dtype, shape=shape, data=data)
        if request.verify:
            rel, abs_ = compare(outputs, want)
            for more, more_want in shape_samples(bundle):  # a ranged bundle: MIN, OPT, MAX of each profile
                r, a = compare(self.loaded.runner(request.bundle_digest, bundle, opts,
                                                  feeds_batch(bundle, more)).run(more), more_want)
                rel, abs_ = max(rel, r), max(abs_, a)
            reply.max_rel_err, reply.max_abs_err = rel, abs_
        return reply

    # ---------------------------------------------------------------- Benchmark
    def Benchmark(self, request: agent_pb2.BenchmarkRequest, context: Any) -> Iterator[agent_pb2.BenchmarkEvent]:
        bundle = self.unpacked.get(request.bundle_digest)
        opts = self.request_options(request.options, bundle)
        if len(request.inputs):
            feeds = self._feeds(request.inputs)
        else:
            feeds = bench_feeds(bundle, request.batch or request.options.batch or 0)
        batch = feeds_batch(bundle, feeds)
        runner = self.loaded.runner(request.bundle_digest, bundle, opts, batch)
        yield from benchmark(bundle, runner, feeds, opts.backend.name, batch, request,
                             lambda: self._is_active(context))
