"""Seeded reference inputs and the host's outputs for them (onnxruntime on the original model)."""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import onnx

from device_agent.engines.model import output_error
from device_agent.errors import InvalidInput
from device_agent.manifest import TensorSpec


class SampleError(InvalidInput):
    """User-given sample inputs do not fit the model."""


def check_samples(specs: List[TensorSpec], samples: Dict[str, np.ndarray],
                  shapes: Dict[str, List[int]]) -> Dict[str, np.ndarray]:
    """Samples cast to each input's dtype; refuses unknown names, wrong ranks and shapes."""
    by_name = {s.name: s for s in specs}
    unknown = sorted(set(samples) - set(by_name))
    if unknown:
        raise SampleError(f"sample inputs {unknown} are not inputs of the model; its inputs are {sorted(by_name)}")
    out: Dict[str, np.ndarray] = {}
    for name, arr in samples.items():
        spec, want = by_name[name], shapes[name]
        if list(arr.shape) != list(want):
            raise SampleError(f"sample input {name!r} has shape {list(arr.shape)}, the model is compiled for "
                              f"{want}; pass a matching --input-shape {name}={'x'.join(map(str, arr.shape)) or '1'}")
        dt = np.dtype(spec.dtype)
        if arr.dtype != dt and (arr.dtype.kind != dt.kind or not np.can_cast(arr.dtype, dt, casting="same_kind")):
            raise SampleError(f"sample input {name!r} is {arr.dtype}, the model takes {dt}")
        out[name] = np.asarray(arr, dtype=dt, order="C")
    return out


def make_inputs(specs: List[TensorSpec], shapes: Dict[str, List[int]], seed: int,
                samples: Optional[Dict[str, np.ndarray]] = None, *, random_ints: bool = True) -> Dict[str, np.ndarray]:
    """Given samples first; else seeded: floats ~ N(0, 1), integers in [0, 4), booleans fair.

    With ``random_ints=False`` an integer input without a sample is refused: a sample rate, token
    ids or a mask filled with small random integers makes a reference that means nothing.
    """
    rng = np.random.default_rng(seed)
    samples = samples or {}
    out: Dict[str, np.ndarray] = {}
    for s in specs:
        shape = shapes[s.name]
        dt = np.dtype(s.dtype)
        if s.name in samples:
            out[s.name] = samples[s.name]
        elif dt.kind in "iub" and not random_ints:
            raise SampleError(f"input {s.name!r} is {dt.name} {list(shape)}: give its values with --inputs FILE.npz "
                              f"or --input {s.name}=FILE.npy (random integers make no meaningful reference)")
        elif dt.kind == "f":
            out[s.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind in "iu":
            out[s.name] = rng.integers(0, 4, size=shape).astype(dt)
        elif dt.kind == "b":
            out[s.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise ValueError(f"no reference data for dtype {s.dtype}")
    return out


def run_onnxruntime(model: onnx.ModelProto, inputs: Dict[str, np.ndarray],
                    optimize: bool = True) -> Dict[str, np.ndarray]:
    """Outputs of onnxruntime's CPU provider, by name, with graph optimizations that keep fp32 exact
    (``optimize=False``: none at all, every node as the file has it)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    feed = {i.name: inputs[i.name] for i in sess.get_inputs()}
    return dict(zip(names, sess.run(names, feed)))


def max_rel_err(got: Dict[str, np.ndarray], want: Dict[str, np.ndarray]) -> float:
    """The worst relative error over the float outputs of the reference's shape, by the agent's verify measure
    (an output whose shape depends on the data, e.g. after NMS, is left out rather than failing the compile)."""
    errs = [output_error(got[name], ref)[0] for name, ref in want.items()
            if np.asarray(ref).dtype.kind == "f" and name in got and np.shape(got[name]) == np.shape(ref)]
    return max(errs, default=0.0)


def fp32_spread(model: onnx.ModelProto, inputs: Dict[str, np.ndarray], outputs: Dict[str, np.ndarray]) -> float:
    """How far two correct fp32 executions of this model already disagree on these inputs: the reference
    against the same model with every graph optimisation off (other summation orders, unfused kernels).

    Most models agree to 1e-6; some amplify rounding (PP-OCRv4's detector: 3.7e-3 between the two CPU runs),
    and no device can be held to a tighter bound than the model's own fp32 arithmetic gives.
    """
    return max_rel_err(run_onnxruntime(model, inputs, optimize=False), outputs)
