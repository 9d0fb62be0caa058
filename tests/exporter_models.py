"""ONNX graphs written the way published exporters write them (PyTorch, Paddle, silero-style VAD), built here."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(7)


def save(tmp_path, graph, opset=13, name="m.onnx"):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="exporter")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def const(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def flatten_by_shape_model(tmp_path, dims=("N", 3, 8, 8)):
    """Conv, then Reshape to [N, -1] with N read at run time: Shape -> Gather -> Unsqueeze -> Concat (PyTorch's
    export of ``x.view(x.size(0), -1)``), then a Gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
    ]
    inits = [const("w", RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)), const("zero", np.int64(0)),
             const("axes0", np.array([0], np.int64)), const("minus1", np.array([-1], np.int64)),
             const("fc", RNG.standard_normal((5, 4 * 8 * 8)).astype(np.float32))]
    g = helper.make_graph(nodes, "flatten_by_shape", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], 5])], inits)
    return save(tmp_path, g)


def if_reading_outer_graph_model(tmp_path):
    """A VAD-style graph: a float path, and an ``If`` on an int64 sample-rate input whose branches read
    ``h`` from the outer graph (no branch input names it)."""
    then_g = helper.make_graph([helper.make_node("Mul", ["h", "two"], ["t_out"])], "then", [],
                               [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [1, 4])])
    else_g = helper.make_graph([helper.make_node("Add", ["h", "two"], ["e_out"])], "else", [],
                               [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [1, 4])])
    nodes = [helper.make_node("Relu", ["x"], ["h"]),
             helper.make_node("Greater", ["sr", "thr"], ["c1"]),
             helper.make_node("Squeeze", ["c1", "axes0"], ["cond"]),
             helper.make_node("If", ["cond"], ["out"], then_branch=then_g, else_branch=else_g)]
    g = helper.make_graph(nodes, "if_outer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                              helper.make_tensor_value_info("sr", TensorProto.INT64, [1])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
                          [const("axes0", np.array([0], np.int64)), const("thr", np.array([8000], np.int64)),
                           const("two", np.float32(2.0))])
    return save(tmp_path, g, opset=16)


def batch_arithmetic_model(tmp_path):
    """A detector head that computes with the batch size: a Reshape to [2N, -1] (``Shape -> Gather -> Mul ->
    Concat``), back to the input's shape read at run time, plus anchors ``Expand``ed to that shape. With a
    symbolic batch none of it folds; TensorRT takes it as shape tensors."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["sig"]),
        helper.make_node("Shape", ["sig"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Mul", ["n", "two"], ["n2"]),
        helper.make_node("Unsqueeze", ["n2", "axes0"], ["n2u"]),
        helper.make_node("Concat", ["n2u", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["sig", "shape"], ["flat"]),
        helper.make_node("Relu", ["flat"], ["act"]),
        helper.make_node("Reshape", ["act", "s"], ["back"]),
        helper.make_node("Expand", ["anchors", "s"], ["grid"]),
        helper.make_node("Add", ["back", "grid"], ["y"]),
    ]
    inits = [const("w", RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)), const("zero", np.int64(0)),
             const("two", np.int64(2)), const("axes0", np.array([0], np.int64)),
             const("minus1", np.array([-1], np.int64)),
             const("anchors", RNG.standard_normal((1, 4, 8, 8)).astype(np.float32))]
    g = helper.make_graph(nodes, "batch_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], inits)
    return save(tmp_path, g)
