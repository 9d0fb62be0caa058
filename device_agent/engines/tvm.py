"""The TVM runtime for hybrid bundles: the remainder runs in a Relax VM and calls each TensorRT
segment by name; the agent backs each name with the engine built by the selected segment backend.

The VM and packed-function plumbing live in ``device_agent.bundle_runtime`` (shared with the host's
checks); this module adapts it to the engine interface so the agent runs, verifies and benchmarks a
hybrid model exactly like a single-engine one.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from device_agent.bundle import Bundle
from device_agent.engines.base import Engine, TensorMeta


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

    def timings(self) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for eng in self.segments.values():
            for k, v in eng.timings().items():
                out[f"segments_{k}"] = out.get(f"segments_{k}", 0.0) + v
        return out

    def reset_timings(self) -> None:
        for eng in self.segments.values():
            eng.reset_timings()
