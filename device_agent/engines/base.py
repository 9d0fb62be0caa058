"""One interface for every engine backend, in the manner of Polygraphy's runners.

The base classes do the shared work once (probing, checking input names, dtypes, shapes and
sizes, timing the build); a backend only fills the small ``*_impl`` methods, so a
new backend cannot forget a check and every backend fails the same way on bad input.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from device_agent.errors import BuildFailed, DeployError, InvalidInput, ResourceExhausted, Unavailable

if TYPE_CHECKING:
    from device_agent.engines.layers import LayerProfile, LayerProfiler

Dim = Union[int, str, None]
Shape = Tuple[int, ...]

#: Largest total size of the input tensors of one run; a request above it is refused, not attempted.
DEFAULT_MAX_RUN_BYTES = 512 * 1024 * 1024


def is_symbolic(dim: Dim) -> bool:
    return not isinstance(dim, (int, np.integer)) or int(dim) < 0


@dataclass(frozen=True)
class BuildProgress:
    """One sign of life from a running build: a builder phase or step (TensorRT >= 10), or a heartbeat."""

    kind: str  # "phase_start", "step_complete", "phase_finish", "heartbeat"
    phase: str = ""
    elapsed_s: float = 0.0
    step: int = 0
    steps: int = 0
    parent: str = ""


@dataclass(frozen=True)
class TensorMeta:
    """Name, numpy dtype name and shape of one engine input or output; symbolic dims are str or None."""

    name: str
    dtype: str
    shape: Tuple[Dim, ...]

    def check(self, array: np.ndarray) -> None:
        if array.dtype != np.dtype(self.dtype):
            raise InvalidInput(
                f"input {self.name!r} has dtype {array.dtype.name}, the engine expects {self.dtype}; "
                f"convert the tensor to {self.dtype}")
        if array.ndim != len(self.shape):
            raise InvalidInput(
                f"input {self.name!r} has shape {list(array.shape)}, the engine expects rank {len(self.shape)} "
                f"{_shape_text(self.shape)}; reshape the tensor")
        for got, want in zip(array.shape, self.shape):
            if not is_symbolic(want) and int(want) != got:
                raise InvalidInput(
                    f"input {self.name!r} has shape {list(array.shape)}, the engine expects "
                    f"{_shape_text(self.shape)}; reshape the tensor")


def _c_strides(shape: Sequence[Dim], itemsize: int) -> Tuple[int, ...]:
    """The strides numpy gives a C-contiguous array of this fixed shape."""
    strides, step = [], itemsize
    for d in reversed([int(x) for x in shape]):
        strides.append(step)
        step *= max(d, 1)
    return tuple(reversed(strides))


def _shape_text(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


@dataclass(frozen=True)
class ProfileShape:
    """One input's min/opt/max shapes in an optimization profile (TensorRT's meaning)."""

    name: str
    min: Shape
    opt: Shape
    max: Shape

    def as_json(self) -> Dict[str, Any]:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass
class BuildSpec:
    """Everything that changes the built plan; each field is part of the engine cache key."""

    fp16: bool = False
    int8: bool = False          # the segment holds Q/DQ (explicit quantization); with fp16: FP16 fallback
    calibration: str = ""       # digest of the calibration samples (INT8 only)
    max_workspace_bytes: int = 1 << 30
    profiles: List[List[ProfileShape]] = field(default_factory=list)
    builder_flags: Tuple[str, ...] = ()
    timing_cache_path: Optional[str] = None  # not part of the key: it speeds builds, it does not change them
    # the segment's I/O from the manifest (fixed by the segment digest, so not part of the key either)
    inputs: List[TensorMeta] = field(default_factory=list)
    outputs: List[TensorMeta] = field(default_factory=list)
    # build progress sink (TensorRT's IProgressMonitor events); not part of the key
    progress: Optional[Callable[["BuildProgress"], None]] = field(default=None, compare=False, repr=False)

    @property
    def precision(self) -> str:
        if self.int8:
            return "int8+fp16" if self.fp16 else "int8"
        return "fp16" if self.fp16 else "fp32"

    def key_parts(self) -> Dict[str, Any]:
        extra = {"calibration": self.calibration} if self.int8 and self.calibration else {}
        return {
            **extra,
            "precision": self.precision,
            "workspace": int(self.max_workspace_bytes),
            "profiles": [[p.as_json() for p in prof] for prof in self.profiles],
            "flags": sorted(self.builder_flags),
        }


@dataclass
class BuildOutput:
    plan: bytes
    parse_s: float = 0.0
    build_s: float = 0.0
    messages: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class ProbeResult:
    name: str
    available: bool
    version: str = ""
    detail: str = ""


class Engine:
    """A loaded plan, ready to run. Subclasses fill ``run_impl`` and, if they can, ``timings``."""

    backend = "base"

    def __init__(self, inputs: Sequence[TensorMeta], outputs: Sequence[TensorMeta],
                 max_run_bytes: int = DEFAULT_MAX_RUN_BYTES) -> None:
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.max_run_bytes = max_run_bytes
        # what feeds that need no conversion and no message look like, precomputed: where every input's shape is
        # fixed, (name, dtype, shape, C-contiguous strides) per input and their bytes, so a run whose
        # feeds match costs a few comparisons (a 38 us model had paid 12 us for the check in _checked_feeds, which
        # any other feeds still take, with its messages). The outputs are checked on the first run: an engine
        # returns the same names every time.
        metas = [(m, np.dtype(m.dtype)) for m in self.inputs]
        fixed = all(not is_symbolic(d) for m, _ in metas for d in m.shape)
        self._exact_bytes = sum(int(np.prod([int(d) for d in m.shape], dtype=np.int64)) * t.itemsize
                                for m, t in metas) if fixed else 0
        self._exact = tuple((m.name, t, tuple(int(d) for d in m.shape), _c_strides(m.shape, t.itemsize))
                            for m, t in metas) if fixed else None
        self._outputs_seen = False

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Check the feeds against the engine's inputs, run, and check every output came back."""
        exact = self._exact is not None and type(feeds) is dict and len(feeds) == len(self._exact) \
            and self._exact_bytes <= self.max_run_bytes
        if exact:
            for name, dtype, shape, strides in self._exact:  # type: ignore[union-attr]
                arr = feeds.get(name)
                if type(arr) is not np.ndarray or (arr.dtype is not dtype and arr.dtype != dtype) \
                        or arr.shape != shape or arr.strides != strides:
                    exact = False
                    break
        arrays = feeds if exact else self._checked_feeds(feeds)
        try:
            out = self.run_impl(arrays)  # type: ignore[arg-type]
        except DeployError:
            raise
        except Exception as exc:  # a backend's own failure, reported with its words
            raise DeployError(f"{self.backend} failed to run: {_one_line(exc)}") from exc
        if not self._outputs_seen:
            absent = [m.name for m in self.outputs if m.name not in out]
            if absent:
                raise DeployError(f"{self.backend} returned no value for outputs {absent}")
            self._outputs_seen = True
        return out

    def _checked_feeds(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Every feed checked and made a C-contiguous array, or one InvalidInput that says what is wrong."""
        expected = {m.name: m for m in self.inputs}
        missing = sorted(set(expected) - set(feeds))
        extra = sorted(set(feeds) - set(expected))
        if missing or extra:
            raise InvalidInput(
                f"inputs do not match the engine: missing {missing}, unexpected {extra}; "
                f"the engine takes {sorted(expected)}")
        total = 0
        arrays: Dict[str, np.ndarray] = {}
        for name, meta in expected.items():
            arr = np.asarray(feeds[name], order="C")
            meta.check(arr)
            total += arr.nbytes
            arrays[name] = arr
        if total > self.max_run_bytes:
            raise ResourceExhausted(
                f"inputs total {total} bytes, above this agent's limit of {self.max_run_bytes}; send a smaller batch")
        return arrays

    def run_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def timings(self) -> Dict[str, float]:
        """Backend's own mean timings in ms since the last ``reset_timings`` (e.g. gpu_compute, h2d, d2h)."""
        return {}

    def reset_timings(self) -> None:
        return None

    def layer_profiler(self, segment: str, source: Optional[bytes] = None) -> "LayerProfiler":
        """A profiler of this engine's layers for runs after the timed ones; ``source``: the segment's ONNX, to
        name fused kernels by their nodes. A backend without a profiler gives one row, the whole engine."""
        from device_agent.engines.layers import LayerProfiler

        try:
            prof = self._layer_profiler_impl(segment, source)
        except DeployError:
            raise
        except Exception as exc:
            raise DeployError(f"{self.backend} could not profile its layers: {_one_line(exc)}") from exc
        return prof if prof is not None else LayerProfiler(self.run, segment, f"{self.backend} (whole segment)")

    def profile_layers(self, feeds: Mapping[str, np.ndarray], runs: int, segment: str,
                       source: Optional[bytes] = None) -> "LayerProfile":
        """``runs`` profiled runs (plus one warm-up) of this engine alone; rows with shares, largest first."""
        from device_agent.engines.layers import finish

        prof = self.layer_profiler(segment, source)
        try:
            for _ in range(runs + 1):
                prof.run(dict(feeds))
            rows = prof.rows()
        finally:
            prof.close()
        walls = prof.walls_ms[1:]
        return finish(rows, float(np.mean(walls)) if walls else 0.0, runs)

    def _layer_profiler_impl(self, segment: str, source: Optional[bytes]) -> Optional["LayerProfiler"]:
        return None

    def close(self) -> None:
        return None


class Backend:
    """Probe, build and load for one engine library; subclasses fill the ``*_impl`` methods."""

    name = "base"

    def __init__(self) -> None:
        self._probe: Optional[ProbeResult] = None

    def probe(self) -> ProbeResult:
        """Whether the library imports here and its exact version; computed once, never raises."""
        if self._probe is None:
            try:
                self._probe = self.probe_impl()
            except Exception as exc:  # ImportError, OSError from a missing .so, ...
                self._probe = ProbeResult(self.name, False, "", _one_line(exc))
        return self._probe

    def require(self) -> ProbeResult:
        probe = self.probe()
        if not probe.available:
            raise Unavailable(f"backend {self.name!r} is not available on this device: {probe.detail}; "
                              f"choose another backend (see GetInfo)")
        return probe

    def build(self, onnx_bytes: bytes, spec: BuildSpec) -> BuildOutput:
        """Build a plan from ONNX bytes; the backend's errors come back as BuildFailed with its messages."""
        self.require()
        if not onnx_bytes:
            raise InvalidInput("the segment's ONNX model is empty; recompile the bundle")
        start = time.perf_counter()
        try:
            out = self.build_impl(onnx_bytes, spec)
        except DeployError:
            raise
        except Exception as exc:
            raise BuildFailed(f"{self.name} failed to build: {_one_line(exc)}") from exc
        if not out.plan:
            raise BuildFailed(f"{self.name} produced an empty plan")
        if not out.build_s:
            out.build_s = time.perf_counter() - start - out.parse_s
        return out

    def load(self, plan: bytes, spec: BuildSpec) -> Engine:
        self.require()
        try:
            return self.load_impl(plan, spec)
        except DeployError:
            raise
        except Exception as exc:
            raise BuildFailed(f"{self.name} could not load its plan: {_one_line(exc)}") from exc

    # -- for subclasses
    def probe_impl(self) -> ProbeResult:
        raise NotImplementedError

    def build_impl(self, onnx_bytes: bytes, spec: BuildSpec) -> BuildOutput:
        raise NotImplementedError

    def load_impl(self, plan: bytes, spec: BuildSpec) -> Engine:
        raise NotImplementedError


class BuildFailedWithMessages(BuildFailed):
    """A parser or builder refused the model; ``messages`` holds its own words, one per entry."""

    def __init__(self, summary: str, messages: Sequence[str]) -> None:
        super().__init__(summary)
        self.messages = list(messages)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


ONNX_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(uint16)": "uint16",
    "tensor(int32)": "int32", "tensor(uint32)": "uint32", "tensor(int64)": "int64", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}
