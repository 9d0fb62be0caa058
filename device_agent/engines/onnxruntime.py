"""onnxruntime as an engine backend: the CPU path, and the CUDA provider where it is installed.

The plan is onnxruntime's own optimised model (``SessionOptions.optimized_model_filepath``) saved
at the *extended* level, which holds no hardware-specific layout ops, so a cached plan stays valid
on every device of its class; the layout optimisations run again, quickly, when it is loaded.
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Dict, List

import numpy as np

from device_agent.engines.base import (ONNX_DTYPES, Backend, BuildFailedWithMessages, BuildOutput, BuildSpec,
                                       Engine, ProbeResult, TensorMeta)


def _ort():
    import onnxruntime  # optional dependency, imported only when the backend is used

    return onnxruntime


class OrtEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, session) -> None:
        super().__init__(_metas(session.get_inputs()), _metas(session.get_outputs()))
        self.session = session
        self._names = [m.name for m in self.outputs]

    def run_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        values = self.session.run(self._names, feeds)
        return dict(zip(self._names, values))


def _metas(args) -> List[TensorMeta]:
    metas = []
    for a in args:
        dtype = ONNX_DTYPES.get(a.type)
        if dtype is None:
            raise BuildFailedWithMessages(f"onnxruntime: tensor {a.name!r} has unsupported type {a.type}", [a.type])
        metas.append(TensorMeta(a.name, dtype, tuple(d if isinstance(d, int) else (d or None) for d in a.shape)))
    return metas


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, threads: int = 0, use_cuda: bool = True) -> None:
        super().__init__()
        self.threads = threads
        self.use_cuda = use_cuda

    def probe_impl(self) -> ProbeResult:
        ort = _ort()
        providers = ort.get_available_providers()
        return ProbeResult(self.name, True, ort.__version__, "providers: " + ", ".join(providers))

    def providers(self) -> List[str]:
        available = _ort().get_available_providers()
        wanted = ["CUDAExecutionProvider"] if self.use_cuda else []
        return [p for p in wanted if p in available] + ["CPUExecutionProvider"]

    def session_options(self, level: str):
        ort = _ort()
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        if self.threads:
            so.intra_op_num_threads = self.threads
        so.log_severity_level = 3
        return so

    def build_impl(self, onnx_bytes: bytes, spec: BuildSpec) -> BuildOutput:
        ort = _ort()
        messages = []
        if spec.fp16:
            messages.append("onnxruntime builds in the model's own precision; fp16 is recorded in the key only")
        with tempfile.TemporaryDirectory(prefix="ort-build-") as tmp:
            path = os.path.join(tmp, "optimized.onnx")
            so = self.session_options("ORT_ENABLE_EXTENDED")
            so.optimized_model_filepath = path
            start = time.perf_counter()
            try:
                ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
            except Exception as exc:
                lines = [ln for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
                raise BuildFailedWithMessages(f"onnxruntime could not load the segment: {lines[0][:300]}",
                                              lines) from exc
            build_s = time.perf_counter() - start
            with open(path, "rb") as f:
                plan = f.read()
        return BuildOutput(plan=plan, parse_s=0.0, build_s=build_s, messages=messages)

    def load_impl(self, plan: bytes, spec: BuildSpec) -> Engine:
        session = _ort().InferenceSession(plan, self.session_options("ORT_ENABLE_ALL"),
                                          providers=self.providers())
        return OrtEngine(session)
