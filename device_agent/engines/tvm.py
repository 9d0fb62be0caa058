"""The TVM runtime for hybrid bundles: the remainder runs in a Relax VM and calls each TensorRT
segment by name; the agent backs each name with the engine built by the selected segment backend.

The VM and packed-function plumbing live in ``device_agent.bundle_runtime`` (shared with the host's
checks); this module adapts it to the engine interface so the agent runs, verifies and benchmarks a
hybrid model exactly like a single-engine one. On a GPU, segments that take device pointers run on
the VM's tensors in place, and the benchmark keeps the model's inputs and outputs on the GPU and times
each iteration with CUDA events on the legacy default stream, which orders itself after every blocking
stream: the span of the TVM kernels and every segment.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

from device_agent.bundle import Bundle
from device_agent.engines.base import Engine, TensorMeta
from device_agent.engines.layers import LayerProfile, LayerProfiler, LayerTime, finish

REMAINDER = "remainder"  # the segment field of the TVM remainder's row


def _metas(specs) -> list:
    return [TensorMeta(t.name, t.dtype, tuple(d if isinstance(d, int) else None for d in t.shape)) for t in specs]


class TvmModel(Engine):
    """The whole hybrid model; ``segments`` are the loaded engines its remainder calls."""

    backend = "tvm"

    def __init__(self, bundle: Bundle, segments: Dict[str, Engine], segment_backend: str) -> None:
        m = bundle.manifest
        super().__init__(_metas(m.inputs), _metas(m.outputs))
        self.bundle = bundle
        self.segments = segments
        self.segment_backend = segment_backend
        self.device = "cuda" if m.target.device == "cuda" else "cpu"
        # each segment's engine checks its own inputs again, so a remainder that hands it a wrong
        # shape or dtype fails with the same message a client would get
        self.runners = {sid: eng.run for sid, eng in segments.items()}
        self.device_runners = {} if self.device != "cuda" else {
            sid: eng.run_device for sid, eng in segments.items() if callable(getattr(eng, "run_device", None))}
        self._gpu_ms: List[float] = []

    def run_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        from device_agent.bundle_runtime import run_bundle

        return run_bundle(self.bundle, self.runners, feeds, device=self.device, device_runners=self.device_runners)

    def bench_call(self, feeds: Dict[str, np.ndarray]) -> Callable[[], None]:
        """One iteration with the inputs on the VM's device and the outputs left there; on a GPU, timed."""
        from device_agent.bundle_runtime import resident_call

        call = resident_call(self.bundle, self.runners, feeds, self.device, self.device_runners)
        cuda = self._events() if self.device == "cuda" else None
        if cuda is None:
            return call
        start, end = cuda.event(), cuda.event()

        def once() -> None:
            cuda.record(start, stream=0)
            call()
            cuda.record(end, stream=0)
            cuda.sync_event(end)
            self._gpu_ms.append(cuda.elapsed_ms(start, end))

        return once

    @staticmethod
    def _events() -> Optional[Any]:
        from device_agent.engines.cuda import CudaRt

        try:
            return CudaRt()
        except Exception:  # no cuda-python or pycuda: timed by wall clock only
            return None

    def profile_segments(self, feeds: Mapping[str, np.ndarray], runs: int,
                         sources: Mapping[str, Optional[bytes]]) -> LayerProfile:
        """The hybrid model's profile: each segment's layers from its backend's profiler, and the TVM remainder as
        one row (op ``tvm``): a profiled run's wall time less the time spent inside the segments' runners (so it holds
        the VM's own work and the tensor copies between the VM and the segments)."""
        from device_agent.bundle_runtime import run_bundle

        profs: Dict[str, LayerProfiler] = {sid: eng.layer_profiler(sid, sources.get(sid))
                                           for sid, eng in self.segments.items()}
        inside = [0.0]

        def timed(prof: LayerProfiler):
            def run(ins: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
                t0 = time.perf_counter()
                try:
                    return prof.run(ins)
                finally:
                    inside[0] += time.perf_counter() - t0
            return run

        runners = {sid: timed(p) for sid, p in profs.items()}
        walls: List[float] = []
        segs: List[float] = []
        try:
            for _ in range(runs + 1):  # the first warms up
                inside[0] = 0.0
                t0 = time.perf_counter()
                run_bundle(self.bundle, runners, dict(feeds), device=self.device)
                walls.append((time.perf_counter() - t0) * 1e3)
                segs.append(inside[0] * 1e3)
            rows = [r for p in profs.values() for r in p.rows()]
        finally:
            for p in profs.values():
                p.close()
        m = self.bundle.manifest
        rest = max(0.0, float(np.mean(walls[1:])) - float(np.mean(segs[1:]))) if runs else 0.0
        rows.append(LayerTime(f"TVM remainder ({len(m.not_offloaded)} node(s) not offloaded, compiled by TVM for "
                              f"{self.device}; with the copies to and from the segments)", "tvm", rest, runs,
                              REMAINDER))
        return finish(rows, float(np.mean(walls[1:])) if runs else 0.0, runs)

    def timings(self) -> Dict[str, float]:
        out: Dict[str, float] = {"gpu_compute": float(np.mean(self._gpu_ms))} if self._gpu_ms else {}
        for eng in self.segments.values():
            for k, v in eng.timings().items():
                out[f"segments_{k}"] = out.get(f"segments_{k}", 0.0) + v
        return out

    def reset_timings(self) -> None:
        self._gpu_ms.clear()
        for eng in self.segments.values():
            eng.reset_timings()
