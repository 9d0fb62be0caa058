"""onnxruntime as an engine backend: ``onnxruntime`` on the CPU, ``onnxruntime-cuda`` on the GPU.

The plan is onnxruntime's own optimised model (``SessionOptions.optimized_model_filepath``) saved
at the *extended* level, which holds no hardware-specific layout ops, so a cached plan stays valid
on every device of its class; the layout optimisations run again, quickly, when it is loaded.

``onnxruntime-cuda`` needs onnxruntime-gpu (whose CUDA major must match the device's CUDA
libraries) and a GPU. Its benchmark keeps inputs and outputs on the GPU between iterations (I/O
binding) and times each run with CUDA events on the provider's compute stream (cuda-python). Inside a
hybrid bundle it runs on the TVM part's GPU tensors in place (``run_device``), so no tensor of the model
goes through host memory between parts.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from device_agent.engines.base import (ONNX_DTYPES, Backend, BuildFailedWithMessages, BuildOutput, BuildSpec,
                                       Engine, ProbeResult, TensorMeta)
from device_agent.engines.layers import LayerProfiler, LayerTime, kernel_rows, onnx_nodes
from device_agent.errors import BuildFailed, InvalidInput, Unavailable

CUDA_EP = "CUDAExecutionProvider"
# A one-node model (Relu over float[1], opset 13), serialized: the probe opens a CUDA session on it, since
# onnxruntime lists the CUDA provider whenever onnxruntime-gpu is installed, GPU and CUDA libraries or not.
_PROBE_MODEL = (b'\x08\x07:3\n\x0c\n\x01x\x12\x01y"\x04Relu\x12\x01pZ\x0f\n\x01x\x12\n\n\x08\x08\x01\x12\x04\n'
                b'\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\r')


def _ort():
    import onnxruntime  # optional dependency, imported only when the backend is used

    return onnxruntime


class OrtEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, session, reopen: Optional[Callable[[Callable[[Any], None]], Any]] = None) -> None:
        super().__init__(_metas(session.get_inputs()), _metas(session.get_outputs()))
        self.session = session
        self._names = [m.name for m in self.outputs]
        # another session on the same plan, providers and options, with its SessionOptions adjusted first
        self.reopen = reopen

    def run_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        names = self._names
        values = self.session.run(names, feeds)
        if len(names) == 1:  # the common case, without zip's and dict's calls (a run of a small model counts them)
            return {names[0]: values[0]}
        return dict(zip(names, values))

    def _layer_profiler_impl(self, segment: str, source: Optional[bytes]) -> Optional[LayerProfiler]:
        return OrtLayerProfiler(self, segment, source) if self.reopen is not None else None


class OrtLayerProfiler(LayerProfiler):
    """onnxruntime's own profiler on a second session of the same plan and options (the timed session is never
    profiled). Its Node events ``<kernel>_kernel_time`` give each kernel's time; the session's final graph, saved
    beside the profile, maps fused kernels back to the segment's ONNX nodes."""

    def __init__(self, engine: OrtEngine, segment: str, source: Optional[bytes]) -> None:
        self.tmp = tempfile.mkdtemp(prefix="ort-profile-")
        self.graph_path = os.path.join(self.tmp, "kernels.onnx")
        self.source = source

        def profiled(so: Any, save_graph: bool) -> None:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(self.tmp, "profile")
            if save_graph:
                so.optimized_model_filepath = self.graph_path

        assert engine.reopen is not None
        try:
            session = engine.reopen(lambda so: profiled(so, True))
        except Exception:  # a provider whose final graph cannot be saved: kernels keep onnxruntime's names
            session = engine.reopen(lambda so: profiled(so, False))
        self.session = session
        names = list(engine._names)
        super().__init__(lambda feeds: dict(zip(names, session.run(names, feeds))), segment, "")
        self._rows: Optional[List[LayerTime]] = None

    def rows(self) -> List[LayerTime]:
        if self._rows is not None:
            return self._rows
        path = self.session.end_profiling()
        with open(path) as f:
            events = json.load(f)
        os.unlink(path)
        runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                      key=lambda e: e["ts"])
        warm_end = runs[0]["ts"] + runs[0]["dur"] if runs else 0  # the first run warms up: not counted
        times: Dict[str, List[float]] = {}
        ops: Dict[str, str] = {}
        for e in events:
            name = str(e.get("name", ""))
            if e.get("cat") != "Node" or not name.endswith("_kernel_time") or e.get("ts", 0) < warm_end:
                continue
            kernel = name[:-len("_kernel_time")]
            times.setdefault(kernel, []).append(float(e.get("dur", 0)) / 1e3)  # microseconds
            ops[kernel] = str((e.get("args") or {}).get("op_name", ""))
        kernels = None
        if self.source and os.path.exists(self.graph_path):
            with open(self.graph_path, "rb") as f:
                kernels = onnx_nodes(f.read())
        source = onnx_nodes(self.source) if self.source else None
        self._rows = kernel_rows(times, ops, max(len(runs) - 1, 1), self.name, source, kernels)
        return self._rows

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class OrtCudaEngine(OrtEngine):
    """A CUDA-provider session on a compute stream of our own, so CUDA events can time its GPU work."""

    backend = "onnxruntime-cuda"

    def __init__(self, session, cuda: Any, device_id: int) -> None:
        super().__init__(session)
        self.cuda, self.device_id = cuda, device_id
        self._gpu_ms: List[float] = []
        self._bound: Any = None
        self._lock = threading.Lock()  # one pair of events: one timed run at a time
        self._device_binding: Optional[Tuple[tuple, Any]] = None  # (the pointers it binds, the binding)

    def bench_call(self, feeds: Dict[str, np.ndarray]) -> Callable[[], None]:
        """One iteration with the inputs copied to the GPU once and the outputs left there (I/O binding)."""
        ort = _ort()
        binding = self.session.io_binding()
        keep = []  # the OrtValues must outlive the binding
        for name, arr in feeds.items():
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), "cuda", self.device_id)
            keep.append(value)
            binding.bind_ortvalue_input(name, value)
        for name in self._names:
            binding.bind_output(name, "cuda", self.device_id)
        start, end = self.cuda.event(), self.cuda.event()
        self._bound = (binding, keep)  # the GPU copies of the inputs live as long as the prepared call

        def once() -> None:
            with self._lock:
                self.cuda.record(start)
                self.session.run_with_iobinding(binding)
                self.cuda.record(end)
                self.cuda.sync()
                self._gpu_ms.append(self.cuda.elapsed_ms(start, end))

        return once

    def run_device(self, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
        """One run from GPU memory into GPU memory that the caller owns (bundle_runtime.DeviceTensor lists).

        The caller's pending GPU work is ordered before this run: the provider's compute stream is a blocking
        stream of ours (CudaRt), which waits for the legacy default stream the TVM runtime launches on, and
        onnxruntime synchronizes its stream before returning (without that synchronisation, measured on the
        H200, the hybrid basic-pitch was no faster: docs/hardware.md g). The binding is kept while the pointers
        repeat."""
        key = tuple((t.name, t.ptr, t.shape, t.dtype) for t in (*inputs, *outputs))
        held = self._device_binding
        if held is None or held[0] != key:
            want = {m.name: m for m in (*self.inputs, *self.outputs)}
            binding = self.session.io_binding()
            for t in (*inputs, *outputs):
                meta = want.get(t.name)
                if meta is None or meta.dtype != t.dtype or len(meta.shape) != len(t.shape):
                    raise InvalidInput(f"segment tensor {t.name!r} is {t.dtype}{list(t.shape)} on the GPU; the "
                                       f"engine has {'no such tensor' if meta is None else meta.dtype + str(list(meta.shape))}")
            for t in inputs:
                binding.bind_input(t.name, "cuda", self.device_id, np.dtype(t.dtype), list(t.shape), t.ptr)
            for t in outputs:
                binding.bind_output(t.name, "cuda", self.device_id, np.dtype(t.dtype), list(t.shape), t.ptr)
            held = self._device_binding = (key, binding)
        self.session.run_with_iobinding(held[1])

    def timings(self) -> Dict[str, float]:
        return {"gpu_compute": float(np.mean(self._gpu_ms))} if self._gpu_ms else {}

    def reset_timings(self) -> None:
        self._gpu_ms.clear()


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
    providers: List[str] = ["CPUExecutionProvider"]
    plan_level = "ORT_ENABLE_EXTENDED"  # the optimisation level of the saved plan

    def __init__(self, threads: int = 0) -> None:
        super().__init__()
        self.threads = threads
        # intra-op threads busy-wait after a run (onnxruntime's default). A run the agent makes once (a verify)
        # then costs ~30 ms of a core for nothing; `configure_backends` sets this from --onnxruntime-spin
        self.spin = True

    def probe_impl(self) -> ProbeResult:
        ort = _ort()
        return ProbeResult(self.name, True, ort.__version__, "providers: " + ", ".join(ort.get_available_providers()))

    def session_options(self, level: str):
        ort = _ort()
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        if self.threads:
            so.intra_op_num_threads = self.threads
        if not self.spin:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        return so

    def prepare_model(self, onnx_bytes: bytes, spec: BuildSpec, messages: List[str]) -> bytes:
        """The segment as this backend builds it: on the CPU, in the model's own precision."""
        if spec.fp16:
            messages.append("onnxruntime builds in the model's own precision; fp16 is recorded in the key only")
        return onnx_bytes

    def build_impl(self, onnx_bytes: bytes, spec: BuildSpec) -> BuildOutput:
        ort = _ort()
        messages: List[str] = []
        onnx_bytes = self.prepare_model(onnx_bytes, spec, messages)
        with tempfile.TemporaryDirectory(prefix="ort-build-") as tmp:
            path = os.path.join(tmp, "optimized.onnx")
            so = self.session_options(self.plan_level)
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
        session = _ort().InferenceSession(plan, self.session_options("ORT_ENABLE_ALL"), providers=self.providers)
        return OrtEngine(session, self._reopener(plan, self.providers))

    def _reopener(self, plan: bytes, providers: List[Any]) -> Callable[[Callable[[Any], None]], Any]:
        def reopen(adjust: Callable[[Any], None]) -> Any:
            so = self.session_options("ORT_ENABLE_ALL")
            adjust(so)
            return _ort().InferenceSession(plan, so, providers=providers)

        return reopen


class OnnxRuntimeCudaBackend(OnnxRuntimeBackend):
    """onnxruntime-gpu's CUDA provider; unavailable (with the reason) where a CUDA session cannot open."""

    name = "onnxruntime-cuda"
    # the plan is optimised offline on the CPU provider, whose extended fusions (FusedConv with Sigmoid or
    # HardSigmoid) the CUDA provider cannot load: seen on the H200. Basic (provider-independent) folding
    # only; the CUDA provider's own fusions run when the plan is loaded.
    plan_level = "ORT_ENABLE_BASIC"

    def __init__(self, threads: int = 0, device_id: int = 0) -> None:
        super().__init__(threads)
        self.device_id = device_id
        # EXHAUSTIVE benchmarks cuDNN's algorithms when a session loads, and which one wins can differ from
        # one load to the next (PP-OCRv4's detector: 2.0 or 2.9 ms on the H200); HEURISTIC is the same each time
        self.conv_algo_search = "EXHAUSTIVE"

    def probe_impl(self) -> ProbeResult:
        ort = _ort()
        available = ort.get_available_providers()
        if CUDA_EP not in available:
            return ProbeResult(self.name, False, ort.__version__,
                               f"onnxruntime {ort.__version__} has no CUDA provider (providers: "
                               f"{', '.join(available)}); install onnxruntime-gpu built for this device's CUDA")
        so = self.session_options("ORT_DISABLE_ALL")
        session = ort.InferenceSession(_PROBE_MODEL, so, providers=[CUDA_EP, "CPUExecutionProvider"])
        if session.get_providers()[0] != CUDA_EP:
            return ProbeResult(self.name, False, ort.__version__,
                               "the CUDA provider is installed but did not open a session (no GPU, or its CUDA "
                               "and cuDNN libraries are missing or of another CUDA major; see the agent's log)")
        return ProbeResult(self.name, True, ort.__version__, f"providers: {', '.join(available)}; CUDA device "
                                                             f"{self.device_id}")

    def prepare_model(self, onnx_bytes: bytes, spec: BuildSpec, messages: List[str]) -> bytes:
        if not spec.fp16:
            return onnx_bytes
        return _to_fp16(onnx_bytes, messages)

    def load_impl(self, plan: bytes, spec: BuildSpec) -> Engine:
        from device_agent.engines.cuda import CudaRt

        try:
            cuda: Optional[Any] = CudaRt()
        except Exception:  # no cuda-python or pycuda (or it failed): runs, benchmarks by wall clock only
            cuda = None
        # fp32 is fp32: the CUDA provider's default TF32 convolutions and matmuls missed the 1e-3 verify
        # tolerance on two corpus models on the H200 (2e-2); fp16 builds keep it on
        options: Dict[str, str] = {"device_id": str(self.device_id), "use_tf32": "1" if spec.fp16 else "0",
                                   "cudnn_conv_algo_search": self.conv_algo_search}
        if cuda is not None:
            options["user_compute_stream"] = str(int(cuda.stream))
        providers = [(CUDA_EP, options), "CPUExecutionProvider"]
        session = _ort().InferenceSession(plan, self.session_options("ORT_ENABLE_ALL"), providers=providers)
        if session.get_providers()[0] != CUDA_EP:
            raise Unavailable("onnxruntime fell back to the CPU when loading the engine; the CUDA provider "
                              "could not start (see the agent's log)")
        engine = OrtCudaEngine(session, cuda, self.device_id) if cuda is not None else OrtEngine(session)
        engine.reopen = self._reopener(plan, providers)
        return engine


def _to_fp16(onnx_bytes: bytes, messages: List[str]) -> bytes:
    """FP16 weights and compute with FP32 inputs and outputs (onnxruntime's own converter, which needs onnx)."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise BuildFailed(f"fp16 on onnxruntime-cuda needs the onnx package ({exc}); install onnx on the device "
                          "or build without --fp16") from None
    model = convert_float_to_float16(onnx.load_from_string(onnx_bytes), keep_io_types=True)
    messages.append("converted to fp16 (inputs and outputs stay fp32)")
    return model.SerializeToString()
