"""From a bundle's segments to something that runs the whole model; wire tensors to numpy and back.

A bundle without a TVM remainder is one segment whose I/O are the model's, so its engine *is*
the model. A hybrid bundle runs through the TVM runtime (``engines/tvm.py``) with each segment's
engine behind a packed function.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from device_agent.bundle import Bundle
from device_agent.engines.base import Engine, ProfileShape
from device_agent.engines.layers import LayerProfile
from device_agent.errors import BuildFailed, InvalidInput, PreconditionFailed, ResourceExhausted
from device_agent.manifest import TensorSpec

MAX_TENSORS = 256
DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
          "uint64", "bool")


def tensor_to_numpy(name: str, dtype: str, shape: Sequence[int], data: bytes, max_bytes: int) -> np.ndarray:
    """A wire tensor as a numpy array, after checking that dtype, shape and byte count agree."""
    if dtype not in DTYPES:
        raise InvalidInput(f"tensor {name!r} has dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if len(shape) > 16 or any(d < 0 for d in shape):
        raise InvalidInput(f"tensor {name!r} has shape {list(shape)}: at most 16 non-negative dims")
    itemsize = np.dtype(dtype).itemsize
    expected = int(np.prod(shape, dtype=np.int64)) * itemsize if shape else itemsize
    if expected > max_bytes:
        raise ResourceExhausted(f"tensor {name!r} would take {expected} bytes, above the limit of {max_bytes}")
    if len(data) != expected:
        raise InvalidInput(f"tensor {name!r} carries {len(data)} bytes but {dtype}{list(shape)} needs {expected}")
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype, copy=False).reshape(shape)


def numpy_to_wire(arr: np.ndarray) -> Tuple[str, List[int], bytes]:
    arr = np.asarray(arr, order="C")
    little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return arr.dtype.name, [int(d) for d in arr.shape], little.tobytes()


def output_error(got: np.ndarray, ref: np.ndarray) -> Tuple[float, float]:
    """(relative, absolute) error of one output of the reference's shape: max|diff| / max|reference|, max|diff|."""
    out = np.asarray(got, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    diff = float(np.max(np.abs(out - r))) if r.size else 0.0
    scale = float(np.max(np.abs(r))) if r.size else 0.0
    return (diff / scale if scale > 0 else diff), diff


def compare(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> Tuple[float, float]:
    """(max relative, max absolute) error over the outputs (verify's measure); a missing or reshaped output fails."""
    rel = abs_ = 0.0
    for name, ref in want.items():
        if name not in got:
            raise BuildFailed(f"the model returned no output {name!r} to compare with the reference")
        if np.shape(got[name]) != np.shape(ref):
            raise BuildFailed(f"output {name!r} has shape {list(np.shape(got[name]))}, the reference "
                              f"{list(np.shape(ref))}")
        r, a = output_error(got[name], ref)
        rel, abs_ = max(rel, r), max(abs_, a)
    return rel, abs_


def reference_samples(bundle: Bundle, advice: str = "recompile it with reference samples"
                      ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """(inputs, outputs) the bundle carries for verify; a bundle without them is refused with `advice`."""
    feeds, want = bundle.read_reference()
    if not feeds or not want:
        raise PreconditionFailed(f"this bundle carries no reference samples to verify against; {advice}")
    return feeds, want


def reference_sets(bundle: Bundle) -> List[Tuple[str, Dict[str, np.ndarray], Dict[str, np.ndarray]]]:
    """Every reference sample set: (label, inputs, outputs); a ranged bundle adds MIN, OPT and MAX of each profile."""
    ins, outs = bundle.read_reference()
    sets = [("reference", ins, outs)]
    for extra in bundle.manifest.reference.get("at_shapes", []):
        sets.append((extra["label"],) + bundle.read_reference(extra))
    return sets


def shape_samples(bundle: Bundle) -> List[Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]]:
    """A ranged bundle's further reference samples, at MIN, OPT and MAX of each profile (verify runs each)."""
    return [(ins, outs) for _, ins, outs in reference_sets(bundle)[1:]]


def batch_of(specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]) -> int:
    """The leading dim of the first input whose leading dim is symbolic; 1 for static models."""
    for spec in specs:
        if spec.shape and isinstance(spec.shape[0], str) and spec.name in feeds:
            arr = feeds[spec.name]
            if arr.ndim == 0:
                raise InvalidInput(f"input {spec.name!r} needs a batch dimension")
            return int(arr.shape[0])
    return 1


def has_dynamic_batch(specs: Sequence[TensorSpec]) -> bool:
    return any(s.shape and isinstance(s.shape[0], str) for s in specs)


def profiles_for(specs: Sequence[TensorSpec], max_batch: int, mode: int, strict: bool) -> List[List[ProfileShape]]:
    """One optimization profile over the inputs with a symbolic batch dim (mode 0: 1..max, mode 1: exactly).

    ``strict`` (TensorRT): any other symbolic dim is an error, since TensorRT needs its bounds.
    """
    prof = []
    for s in specs:
        symbolic = [i for i, d in enumerate(s.shape) if isinstance(d, str)]
        if not symbolic:
            continue
        if symbolic != [0]:
            if strict:
                raise InvalidInput(f"segment input {s.name!r} has symbolic dims {s.shape} besides the batch; "
                                   "recompile the model with static shapes for TensorRT")
            return []
        rest = tuple(int(d) for d in s.shape[1:])
        low = 1 if mode == 0 else max_batch
        prof.append(ProfileShape(s.name, (low,) + rest, (max_batch,) + rest, (max_batch,) + rest))
    return [prof] if prof else []


def profile_text(profiles: List[List[ProfileShape]]) -> str:
    return ";".join(f"{p.name}:{p.min[0]}..{p.max[0]}" for prof in profiles for p in prof)


def profile_max_batch(profiles_json: list) -> Optional[Tuple[int, int]]:
    """(min batch, max batch) of a mode-0/1 profile stored in a cache key, or None."""
    try:
        prof = profiles_json[0]
        return int(prof[0]["min"][0]), int(prof[0]["max"][0])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


@dataclass
class ModelRunner:
    """The whole model: the single segment's engine, or the TVM remainder calling segment engines."""

    engine: Engine
    backend: str
    segments: Dict[str, Engine] = field(default_factory=dict)

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return self.engine.run(feeds)

    def bench_call(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]:
        """What one benchmark iteration calls: the engine's own device-resident loop where it has one
        (onnxruntime-cuda's I/O binding), else a whole run from host arrays. Run ``run`` once first: it checks."""
        prepare = getattr(self.engine, "bench_call", None)
        if prepare is not None:
            return prepare(dict(feeds))
        return lambda: self.engine.run(feeds)

    def timings(self) -> Dict[str, float]:
        t = dict(self.engine.timings())
        if not t and len(self.segments) >= 1 and self.engine not in self.segments.values():
            for sid, eng in self.segments.items():  # hybrid: the segments' own timings, summed per kind
                for k, v in eng.timings().items():
                    t[k] = t.get(k, 0.0) + v
        return t

    def profile_layers(self, feeds: Mapping[str, np.ndarray], runs: int,
                       sources: Mapping[str, Optional[bytes]]) -> LayerProfile:
        """Per-layer times over ``runs`` runs after the timed ones; ``sources``: each segment's ONNX by id."""
        profile_segments = getattr(self.engine, "profile_segments", None)
        if profile_segments is not None:  # hybrid: the TVM remainder calls the segments
            return profile_segments(feeds, runs, sources)
        (sid,) = list(self.segments) or [""]
        return self.engine.profile_layers(feeds, runs, sid, sources.get(sid))

    def reset_timings(self) -> None:
        self.engine.reset_timings()
        for eng in self.segments.values():
            eng.reset_timings()


def compose(bundle: Bundle, segment_engines: Dict[str, Engine], backend: str, arch: str,
            has_gpu: bool) -> ModelRunner:
    m = bundle.manifest
    if m.remainder is None:
        (sid,) = list(segment_engines)
        return ModelRunner(segment_engines[sid], backend, dict(segment_engines))
    if m.target.arch != arch:
        raise PreconditionFailed(f"the bundle's TVM remainder was compiled for {m.target.arch} "
                                 f"(profile {m.target.profile}), this device is {arch}; "
                                 f"recompile for this device's profile")
    if m.target.device == "cuda" and not has_gpu:
        cpu_profile = "jetson-nano, or --remainder-device cpu" if arch == "aarch64" else "x86-cpu"
        raise PreconditionFailed(f"the bundle (profile {m.target.profile}) runs its TVM remainder on CUDA "
                                 f"({m.remainder.target}) and this {arch} device has no GPU; recompile for a "
                                 f"CPU remainder ({cpu_profile})")
    from device_agent.engines.tvm import TvmModel

    return ModelRunner(TvmModel(bundle, segment_engines, backend), backend, dict(segment_engines))
