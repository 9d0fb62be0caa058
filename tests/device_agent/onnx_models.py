"""Small real ONNX models written with onnx.helper, and the reference every backend must match."""
from __future__ import annotations

from typing import Union

import numpy as np


def conv_net(batch: Union[int, str] = 1, seed: int = 0, channels: int = 8) -> bytes:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm: the op mix of a classifier, in 10 kB."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b")
    fc = numpy_helper.from_array(rng.standard_normal((10, channels)).astype(np.float32), "fc")
    fcb = numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fcb")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        [w, b, fc, fcb])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def reference_run(onnx_bytes: bytes, feeds: dict) -> dict:
    """onnxruntime on the original model, default settings: the reference every backend must match."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def max_rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """Largest absolute difference over the reference's largest magnitude (the agent's definition)."""
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))
