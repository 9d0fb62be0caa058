"""The TVM runtime for hybrid bundles: the remainder runs in a Relax VM and calls each TensorRT
segment by name; the agent backs each name with the engine built by the selected segment backend.

The VM and packed-function plumbing live in ``device_agent.bundle_runtime`` (shared with the host's
checks); this module adapts it to the engine interface so the agent runs, verifies and benchmarks a
hybrid model exactly like a single-engine one.
"""
from __future__ import annotations

import time
from typing import Dict, List, Mapping, Optional

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

    def run_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        from device_agent.bundle_runtime import run_bundle

        return run_bundle(self.bundle, self.runners, feeds, device=self.device)

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
        out: Dict[str, float] = {}
        for eng in self.segments.values():
            for k, v in eng.timings().items():
                out[f"segments_{k}"] = out.get(f"segments_{k}", 0.0) + v
        return out

    def reset_timings(self) -> None:
        for eng in self.segments.values():
            eng.reset_timings()
