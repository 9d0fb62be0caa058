"""TrtEngine casts to the engine's binding dtypes and back (TensorRT < 10 binds INT64 segment I/O as INT32).

TensorRT cannot run here: a stand-in module, engine and CUDA copy the shape of NVIDIA's documented
Python API (nptype, TensorIOMode, num_io_tensors / get_tensor_* / set_tensor_address /
execute_async_v3) closely enough to drive the engine's real run path.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

from device_agent.engines import tensorrt as trt_backend
from device_agent.engines.base import TensorMeta
from device_agent.errors import InvalidInput


class _DType:
    def __init__(self, name: str, np_type) -> None:
        self.name, self.np_type = name, np_type

    def __str__(self) -> str:
        return f"DataType.{self.name}"


INT32, FLOAT = _DType("INT32", np.int32), _DType("FLOAT", np.float32)


def _fake_trt(version: str):
    mode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
    return types.SimpleNamespace(__version__=version, TensorIOMode=mode, nptype=lambda dt: dt.np_type)


class _Memory:
    """Device memory as host byte buffers, keyed by a fake pointer."""

    def __init__(self) -> None:
        self.buffers = {}
        self.kind, self.stream = "fake", 0

    def malloc(self, nbytes):
        self.allocated = getattr(self, "allocated", 0) + 1  # a freed pointer is never handed out again
        ptr = 0x1000 * self.allocated
        self.buffers[ptr] = bytearray(max(nbytes, 1))
        return ptr, ptr

    def free(self, handle):
        self.buffers.pop(handle, None)

    def h2d(self, dst, src):
        self.buffers[dst][:src.nbytes] = src.tobytes()

    def d2h(self, dst, src):
        dst.view(np.uint8).reshape(-1)[:] = np.frombuffer(bytes(self.buffers[src][:dst.nbytes]), np.uint8)

    def event(self):
        return object()

    def record(self, ev):
        pass

    def elapsed_ms(self, a, b):
        return 0.0

    def sync(self):
        pass


class _Context:
    """y = x + 1 on INT32 bindings; records what it was given."""

    def __init__(self, memory: _Memory) -> None:
        self.memory, self.addr, self.shapes, self.seen = memory, {}, {}, None

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)

    def get_tensor_shape(self, name):
        return self.shapes["x"]

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr

    def execute_async_v3(self, stream):
        n = int(np.prod(self.shapes["x"]))
        x = np.frombuffer(bytes(self.memory.buffers[self.addr["x"]][:4 * n]), np.int32)
        self.seen = x.copy()
        self.memory.buffers[self.addr["y"]][:4 * n] = (x + 1).astype(np.int32).tobytes()
        return True


class _Engine:
    num_io_tensors = 2

    def __init__(self, memory: _Memory) -> None:
        self.ctx = _Context(memory)

    def get_tensor_name(self, i):
        return ["x", "y"][i]

    def get_tensor_mode(self, name):
        return "input" if name == "x" else "output"

    def get_tensor_dtype(self, name):
        return INT32

    def get_tensor_shape(self, name):
        return (-1, 3)

    def create_execution_context(self):
        return self.ctx


@pytest.fixture
def engine(monkeypatch):
    memory = _Memory()
    monkeypatch.setattr(trt_backend, "_CudaRt", lambda: memory)
    eng = _Engine(memory)
    declared_in = [TensorMeta("x", "int64", (None, 3))]
    declared_out = [TensorMeta("y", "int64", (None, 3))]
    return trt_backend.TrtEngine(_fake_trt("8.5.2"), eng, logger=types.SimpleNamespace(messages=[]),
                                 declared_inputs=declared_in, declared_outputs=declared_out), eng


def test_int64_io_goes_in_as_the_int32_binding_and_comes_back_as_declared_int64(engine):
    e, fake = engine
    assert [(m.name, m.dtype) for m in e.inputs + e.outputs] == [("x", "int64"), ("y", "int64")]
    assert e.binding_dtypes == {"x": "int32", "y": "int32"}
    x = np.arange(6, dtype=np.int64).reshape(2, 3)
    out = e.run({"x": x})
    assert fake.ctx.seen.dtype == np.int32 and fake.ctx.seen.tolist() == list(range(6))
    assert out["y"].dtype == np.int64 and out["y"].tolist() == (x + 1).tolist()


def test_int64_values_an_int32_binding_cannot_hold_are_refused(engine):
    e, _ = engine
    with pytest.raises(InvalidInput, match="outside the int32 range"):
        e.run({"x": np.array([[0, 1, 2 ** 40]], np.int64)})


def test_without_declared_types_the_binding_dtype_is_the_engine_dtype(monkeypatch):
    memory = _Memory()
    monkeypatch.setattr(trt_backend, "_CudaRt", lambda: memory)
    e = trt_backend.TrtEngine(_fake_trt("10.3.0"), _Engine(memory), logger=types.SimpleNamespace(messages=[]))
    assert [(m.name, m.dtype) for m in e.inputs + e.outputs] == [("x", "int32"), ("y", "int32")]
    out = e.run({"x": np.zeros((1, 3), np.int32)})
    assert out["y"].dtype == np.int32 and out["y"].tolist() == [[1, 1, 1]]


class _TwoProfileEngine(_Engine):
    """Profile 0 takes 1..2 rows, profile 1 takes 1..8: an input of 2 rows fits both, the narrow one is taken."""

    num_optimization_profiles = 2

    def __init__(self, memory: _Memory) -> None:
        super().__init__(memory)
        self.ctx.profiles_set = []
        self.ctx.set_optimization_profile_async = lambda k, stream: self.ctx.profiles_set.append(k)

    def get_tensor_profile_shape(self, name, k):
        return [(1, 3), (2, 3), (2, 3)] if k == 0 else [(1, 3), (4, 3), (8, 3)]


def test_each_run_takes_the_tightest_optimization_profile_that_holds_its_shapes(monkeypatch):
    memory = _Memory()
    monkeypatch.setattr(trt_backend, "_CudaRt", lambda: memory)
    fake = _TwoProfileEngine(memory)
    e = trt_backend.TrtEngine(_fake_trt("10.3.0"), fake, logger=types.SimpleNamespace(messages=[]))
    for rows in (2, 1, 5, 8, 2):
        assert e.run({"x": np.zeros((rows, 3), np.int32)})["y"].shape == (rows, 3)
    assert fake.ctx.profiles_set == [0, 1, 0]  # set when it changes, not on every run
    with pytest.raises(InvalidInput, match="fit none of the engine's optimization profiles"):
        e.run({"x": np.zeros((9, 3), np.int32)})
