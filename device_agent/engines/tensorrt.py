"""TensorRT through its Python API; also serves TensorRT-RTX (module ``tensorrt_rtx``, same API).

Written to NVIDIA's documented Python API (Builder, OnnxParser, IBuilderConfig, Runtime,
IExecutionContext). What ran on real hardware is recorded in docs/hardware.md: on this
workplace's H100 only TensorRT-RTX's parser and builder ran (its runtime refuses compute
capability 9.0); full TensorRT and a Jetson were not available, so the run path for TensorRT 8
and 10 follows the documentation and has not been executed here.
Device buffers and events come from ``engines/cuda.py`` (cuda-python, else pycuda).
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from device_agent.engines.base import (Backend, BuildFailedWithMessages, BuildOutput, BuildSpec, Engine,
                                       ProbeResult, TensorMeta)
from device_agent.engines.cuda import CudaRt as _CudaRt
from device_agent.engines.layers import LayerProfiler, LayerTime
from device_agent.engines.trt_progress import attach_progress_monitor
from device_agent.errors import BuildFailed, InvalidInput, PreconditionFailed, Unavailable
from device_agent.fileio import atomic_write
from device_agent.shape_profiles import pick


def import_trt() -> Tuple[Any, str]:
    """(module, name): full TensorRT first, then TensorRT-RTX under either of its PyPI layouts."""
    errors = []
    try:
        import tensorrt as trt  # noqa: F401

        return trt, "tensorrt"
    except Exception as exc:  # ImportError or a missing libnvinfer
        errors.append(f"tensorrt: {exc}")
    try:
        import tensorrt_rtx as trt  # noqa: F401

        return trt, "tensorrt_rtx"
    except Exception as exc:
        errors.append(f"tensorrt_rtx: {exc}")
    try:
        import tensorrt_rtx_bindings as trt  # noqa: F401  (PyPI layout; it loads tensorrt_rtx_libs itself)

        return trt, "tensorrt_rtx"
    except Exception as exc:
        errors.append(f"tensorrt_rtx_bindings: {exc}")
    raise ImportError("; ".join(errors))


def trt_major(trt: Any) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        return 0


def _logger(trt: Any):
    """An ILogger that keeps warnings and errors, so parser and builder failures come back in their words."""

    class Capture(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: List[str] = []

        def log(self, severity, msg) -> None:  # noqa: D401 - TensorRT's callback
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                self.messages.append(f"{str(severity).split('.')[-1]}: {msg}")

    return Capture()


_NP_BY_NAME = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
               "BOOL": np.bool_, "UINT8": np.uint8, "BF16": None, "FP8": None}


def _np_dtype(trt: Any, dt: Any) -> str:
    if hasattr(trt, "nptype"):
        try:
            return np.dtype(trt.nptype(dt)).name
        except Exception:
            pass
    name = str(dt).split(".")[-1]
    np_t = _NP_BY_NAME.get(name)
    if np_t is None:
        raise BuildFailed(f"TensorRT tensor type {name} has no numpy equivalent; export the model with float32 I/O")
    return np.dtype(np_t).name


class TrtEngine(Engine):
    """A deserialized engine. Its inputs/outputs carry the bundle's declared dtypes when given: TensorRT < 10's
    parser turns INT64 segment I/O into INT32 bindings, so arrays are cast to each binding's dtype
    (``trt.nptype``) on the way in and back to the declared dtype on the way out."""

    backend = "tensorrt"

    def __init__(self, trt: Any, engine: Any, logger: Any, declared_inputs: Optional[List[TensorMeta]] = None,
                 declared_outputs: Optional[List[TensorMeta]] = None) -> None:
        self.trt, self.engine, self.logger = trt, engine, logger
        self.v3 = hasattr(engine, "num_io_tensors")  # name-based I/O API, TensorRT >= 8.5
        # several optimization profiles (--shape-profiles): below 8.5 each has its own binding slots
        self.n_profiles = max(1, int(getattr(engine, "num_optimization_profiles", 1) or 1))
        self._profile_of: Dict[int, int] = {}  # id(context) -> the profile it is set to
        self.context = engine.create_execution_context()
        declared = {m.name: m.dtype for m in list(declared_inputs or []) + list(declared_outputs or [])}
        self.binding_dtypes: Dict[str, str] = {}
        ins, outs = [], []
        for name, is_input, dtype, shape in self._io():
            self.binding_dtypes[name] = dtype
            meta = TensorMeta(name, declared.get(name, dtype), tuple(d if d >= 0 else None for d in shape))
            (ins if is_input else outs).append(meta)
        super().__init__(ins, outs)
        self.cuda = _CudaRt()
        self._buffers: Dict[str, Tuple[int, Any, int]] = {}
        self._ev = [self.cuda.event() for _ in range(4)]
        self._times: Dict[str, List[float]] = {"h2d": [], "gpu_compute": [], "d2h": []}
        self._run_lock = threading.Lock()  # one execution context and one set of buffers: one run at a time

    def _io(self):
        trt, e = self.trt, self.engine
        if self.v3:
            for i in range(e.num_io_tensors):
                name = e.get_tensor_name(i)
                yield (name, e.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                       _np_dtype(trt, e.get_tensor_dtype(name)), tuple(e.get_tensor_shape(name)))
        else:
            for i in range(e.num_bindings // self.n_profiles):  # profile 0's slots; profile k's follow at k * n
                yield (e.get_binding_name(i), e.binding_is_input(i), _np_dtype(trt, e.get_binding_dtype(i)),
                       tuple(e.get_binding_shape(i)))

    def _select_profile(self, ctx: Any, feeds: Dict[str, np.ndarray], names: List[str]) -> int:
        """The tightest of the engine's optimization profiles that holds the feeds' shapes (the agent checked
        already that the bundle's profiles hold them), set on ``ctx`` when it changes."""
        if self.n_profiles == 1:
            return 0
        e, per = self.engine, len(names)
        bounds = []
        for k in range(self.n_profiles):
            prof = {}
            for name in feeds:
                lo, _, hi = (e.get_tensor_profile_shape(name, k) if self.v3
                             else e.get_profile_shape(k, names.index(name) + k * per))
                prof[name] = (tuple(lo), tuple(hi))
            bounds.append(prof)
        k = pick(bounds, {n: a.shape for n, a in feeds.items()})
        if k is None:
            raise InvalidInput("inputs " + ", ".join(f"{n} {list(a.shape)}" for n, a in feeds.items())
                               + " fit none of the engine's optimization profiles")
        if self._profile_of.get(id(ctx)) != k:
            ctx.set_optimization_profile_async(k, self.cuda.stream)
            self.cuda.sync()
            self._profile_of[id(ctx)] = k
        return k

    def _buffer(self, name: str, nbytes: int) -> int:
        have = self._buffers.get(name)
        if have is None or have[2] < nbytes:
            if have is not None:
                self.cuda.free(have[1])
            ptr, handle = self.cuda.malloc(nbytes)
            self._buffers[name] = (ptr, handle, nbytes)
        return self._buffers[name][0]

    def run_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        with self._run_lock:
            return self._run_locked(feeds, self.context)

    def run_in(self, context: Any, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """A run in another execution context of this engine (the layer profiler's), on the same buffers."""
        with self._run_lock:
            return self._run_locked(feeds, context)

    def _layer_profiler_impl(self, segment: str, source: Optional[bytes]) -> Optional[LayerProfiler]:
        return TrtLayerProfiler(self, segment)

    def _to_binding(self, name: str, arr: np.ndarray) -> np.ndarray:
        """The array in the engine binding's dtype (int64 -> int32 below TensorRT 10), refusing values it cannot hold."""
        want = np.dtype(self.binding_dtypes.get(name, arr.dtype.name))
        if arr.dtype == want:
            return arr
        if np.issubdtype(want, np.integer) and np.issubdtype(arr.dtype, np.integer) and arr.size:
            info = np.iinfo(want)
            lo, hi = int(arr.min()), int(arr.max())
            if lo < info.min or hi > info.max:
                raise InvalidInput(f"input {name!r} holds {lo}..{hi}, outside the {want.name} range of the engine's "
                                   f"binding (TensorRT {self.trt.__version__} takes {arr.dtype.name} as {want.name})")
        return np.ascontiguousarray(arr.astype(want))

    def _run_locked(self, feeds: Dict[str, np.ndarray], ctx: Any) -> Dict[str, np.ndarray]:
        cuda = self.cuda
        feeds = {name: self._to_binding(name, arr) for name, arr in feeds.items()}
        names = [m.name for m in self.inputs + self.outputs]
        offset = self._select_profile(ctx, feeds, names) * len(names)  # binding slots below 8.5
        for name, arr in feeds.items():
            if self.v3:
                ctx.set_input_shape(name, arr.shape)
            else:
                ctx.set_binding_shape(names.index(name) + offset, arr.shape)
        outputs: Dict[str, np.ndarray] = {}
        for m in self.outputs:
            shape = (ctx.get_tensor_shape(m.name) if self.v3
                     else ctx.get_binding_shape(names.index(m.name) + offset))
            outputs[m.name] = np.empty(tuple(shape), dtype=self.binding_dtypes.get(m.name, m.dtype))
        ptrs = {}
        for name, arr in list(feeds.items()) + list(outputs.items()):
            ptrs[name] = self._buffer(name, arr.nbytes)
            if self.v3:
                ctx.set_tensor_address(name, ptrs[name])
        ev = self._ev
        cuda.record(ev[0])
        for name, arr in feeds.items():
            cuda.h2d(ptrs[name], arr)
        cuda.record(ev[1])
        if self.v3:
            ok = ctx.execute_async_v3(cuda.stream)
        else:
            slots = [0] * (len(names) * self.n_profiles)
            for i, n in enumerate(names):
                slots[offset + i] = ptrs[n]
            ok = ctx.execute_async_v2(slots, cuda.stream)
        cuda.record(ev[2])
        for name, arr in outputs.items():
            cuda.d2h(arr, ptrs[name])
        cuda.record(ev[3])
        cuda.sync()
        if not ok:
            raise BuildFailed("TensorRT execution failed: " + " | ".join(self.logger.messages[-5:]))
        self._times["h2d"].append(cuda.elapsed_ms(ev[0], ev[1]))
        self._times["gpu_compute"].append(cuda.elapsed_ms(ev[1], ev[2]))
        self._times["d2h"].append(cuda.elapsed_ms(ev[2], ev[3]))
        declared = {m.name: m.dtype for m in self.outputs}
        return {name: arr if arr.dtype == np.dtype(declared[name]) else arr.astype(declared[name])
                for name, arr in outputs.items()}

    def timings(self) -> Dict[str, float]:
        return {k: float(np.mean(v)) for k, v in self._times.items() if v}

    def reset_timings(self) -> None:
        for v in self._times.values():
            v.clear()

    def close(self) -> None:
        with self._run_lock:
            for _, handle, _ in self._buffers.values():
                self.cuda.free(handle)
            self._buffers.clear()

    def __del__(self) -> None:  # evicted engines are freed when the last run holding them ends
        try:
            self.close()
        except Exception:
            pass


class TrtLayerProfiler(LayerProfiler):
    """TensorRT's ``IProfiler`` on an execution context of its own (the timed context never has one), as NVIDIA's
    Python API documents it: a subclass calling ``trt.IProfiler.__init__`` and overriding ``report_layer_time(
    layer_name, ms)``, assigned to ``context.profiler``; ``enqueue_emits_profile`` stays True, so each
    ``execute_async_v3`` reports its layers. Layer names are TensorRT's (fused layers join names with " + ")."""

    def __init__(self, engine: TrtEngine, segment: str) -> None:
        trt = engine.trt

        class Recorder(trt.IProfiler):
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)
                self.times: Dict[str, List[float]] = {}

            def report_layer_time(self, layer_name: str, ms: float) -> None:  # TensorRT's callback
                self.times.setdefault(str(layer_name), []).append(float(ms))

        self.recorder = Recorder()
        self.context = engine.engine.create_execution_context()
        self.context.profiler = self.recorder
        super().__init__(lambda feeds: engine.run_in(self.context, feeds), segment, "TensorRT layer")

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = super().run(feeds)
        if len(self.walls_ms) == 1:  # the warm-up run's layers are not counted
            self.recorder.times.clear()
        return out

    def rows(self) -> List[LayerTime]:
        runs = max(len(self.walls_ms) - 1, 1)
        return [LayerTime(name, self.op, sum(ms) / runs, len(ms), self.name)
                for name, ms in self.recorder.times.items()]

    def close(self) -> None:
        self.context = None  # the context, and its activation memory, go with the last reference


class TensorRTBackend(Backend):
    name = "tensorrt"

    def probe_impl(self) -> ProbeResult:
        trt, module = import_trt()
        return ProbeResult(self.name, True, str(trt.__version__), f"module: {module}")

    @property
    def module(self) -> str:
        detail = self.probe().detail
        return detail.split(": ", 1)[1] if detail.startswith("module: ") else ""

    def build_impl(self, onnx_bytes: bytes, spec: BuildSpec) -> BuildOutput:
        trt, module = import_trt()
        logger = _logger(trt)
        builder = trt.Builder(logger)
        flags = 0
        if module == "tensorrt" and trt_major(trt) < 10 and hasattr(trt.NetworkDefinitionCreationFlag,
                                                                     "EXPLICIT_BATCH"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        t0 = time.perf_counter()
        if not parser.parse(onnx_bytes):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise BuildFailedWithMessages(
                f"TensorRT's ONNX parser refused the segment: {errors[0] if errors else 'no message'}",
                errors + logger.messages)
        parse_s = time.perf_counter() - t0
        config = builder.create_builder_config()
        messages: List[str] = []
        if hasattr(config, "set_memory_pool_limit"):
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(spec.max_workspace_bytes))
        else:  # TensorRT < 8.4
            config.max_workspace_size = int(spec.max_workspace_bytes)
        if spec.fp16:
            if hasattr(trt.BuilderFlag, "FP16"):
                config.set_flag(trt.BuilderFlag.FP16)
            else:
                messages.append(f"{trt.__name__} {trt.__version__} has no FP16 builder flag "
                                "(strongly typed: precision comes from the model)")
        if spec.int8:
            # Explicit quantization: the segment's Q/DQ carry the scales, no calibrator. TensorRT 8.x builds
            # quantized layers only with the INT8 flag set; TensorRT 10 takes Q/DQ as they are.
            if trt_major(trt) < 10 and hasattr(trt.BuilderFlag, "INT8"):
                config.set_flag(trt.BuilderFlag.INT8)
        for flag in spec.builder_flags:
            if not hasattr(trt.BuilderFlag, flag):
                raise BuildFailedWithMessages(f"unknown TensorRT builder flag {flag!r}", [flag])
            config.set_flag(getattr(trt.BuilderFlag, flag))
        for prof in spec.profiles:
            profile = builder.create_optimization_profile()
            for p in prof:
                profile.set_shape(p.name, p.min, p.opt, p.max)
            config.add_optimization_profile(profile)
        try:
            timing_cache = self._timing_cache(config, spec.timing_cache_path)
        except Exception as exc:  # only a speed-up: build without it, and say so
            timing_cache = None
            messages.append(f"timing cache not used: {' '.join(str(exc).split())[:200]}")
        monitor = attach_progress_monitor(trt, config, spec.progress)  # kept alive until the build returns
        t1 = time.perf_counter()
        plan = builder.build_serialized_network(network, config)
        del monitor
        build_s = time.perf_counter() - t1
        if plan is None:
            raise BuildFailedWithMessages("TensorRT's builder failed: " +
                                          (logger.messages[-1] if logger.messages else "no message"),
                                          logger.messages)
        if timing_cache is not None and spec.timing_cache_path:
            try:
                atomic_write(spec.timing_cache_path, bytes(memoryview(timing_cache.serialize())))
            except Exception as exc:
                messages.append(f"timing cache not saved: {' '.join(str(exc).split())[:200]}")
        return BuildOutput(bytes(memoryview(plan)), parse_s, build_s, messages + logger.messages[-20:])

    @staticmethod
    def _timing_cache(config: Any, path: Optional[str]):
        if not path or not hasattr(config, "create_timing_cache"):
            return None
        data = b""
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = f.read()
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=True)
        return config.get_timing_cache() if hasattr(config, "get_timing_cache") else cache

    def load_impl(self, plan: bytes, spec: BuildSpec) -> Engine:
        trt, module = import_trt()
        logger = _logger(trt)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            said = " | ".join(logger.messages[-3:]) or "no message"
            raise PreconditionFailed(f"{module} {trt.__version__} runtime refused the engine on this GPU: {said}")
        return TrtEngine(trt, engine, logger, list(spec.inputs), list(spec.outputs))


__all__ = ["TensorRTBackend", "TrtEngine", "import_trt", "Unavailable"]
