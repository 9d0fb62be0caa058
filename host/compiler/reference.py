"""Seeded reference inputs and the host's outputs for them (onnxruntime on the original model)."""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import onnx

from device_agent.bundle import TensorSpec


def make_inputs(specs: List[TensorSpec], shapes: Dict[str, List[int]], seed: int) -> Dict[str, np.ndarray]:
    """Same seed, same arrays: floats ~ N(0, 1), integers in [0, 4), booleans fair."""
    rng = np.random.default_rng(seed)
    out: Dict[str, np.ndarray] = {}
    for s in specs:
        shape = shapes[s.name]
        dt = np.dtype(s.dtype)
        if dt.kind == "f":
            out[s.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind in "iu":
            out[s.name] = rng.integers(0, 4, size=shape).astype(dt)
        elif dt.kind == "b":
            out[s.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise ValueError(f"no reference data for dtype {s.dtype}")
    return out


def run_onnxruntime(model: onnx.ModelProto, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Outputs of onnxruntime's CPU provider, by name, with graph optimizations that keep fp32 exact."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    feed = {i.name: inputs[i.name] for i in sess.get_inputs()}
    return dict(zip(names, sess.run(names, feed)))
