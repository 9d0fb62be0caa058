"""Conformance cases for what ONNX's own node tests do not exercise the way TensorRT takes it.

ONNX's node tests are single nodes with every input a graph input; a shape tensor computed at run
time (Reshape's shape from Shape -> Gather -> Concat), a Loop with a constant trip count, Constant
nodes inside a branch, float NonZero/CumSum/ReduceLogSumExp, constant NMS parameters and GlobalLpPool
have no such case (or only ones the frontend cannot take: empty tensors, opset-28-only attributes). Each case here is a
small graph built with onnx.helper, labelled with the op it is about; its expected outputs come
from ONNX's reference evaluator (``onnx.reference``), not from onnxruntime.
"""
from __future__ import annotations

from typing import Callable, List

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
_rng = np.random.default_rng(7)


def _model(nodes, inputs, outputs, inits=None, opset=13) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "case", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                          initializer=[numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _x(*shape) -> np.ndarray:
    return _rng.standard_normal(shape).astype(np.float32)


def _i(v) -> np.ndarray:
    return np.array(v, np.int64)


def reshape_shape_tensor():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
             helper.make_node("Unsqueeze", ["b", "axes0"], ["bu"]),
             helper.make_node("Concat", ["bu", "minus1"], ["shp"], axis=0),
             helper.make_node("Reshape", ["x", "shp"], ["y"])]
    m = _model(nodes, [("x", F, [2, 3, 4])], [("y", F, [2, 12])],
               {"zero": _i(0), "axes0": _i([0]), "minus1": _i([-1])})
    return "Reshape", m, {"x": _x(2, 3, 4)}


def constant_of_shape_from_shape():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("v", F, [1], [2.0])),
             helper.make_node("Mul", ["x", "c"], ["y"])]
    return "ConstantOfShape", _model(nodes, [("x", F, [2, 3])], [("y", F, [2, 3])]), {"x": _x(2, 3)}


def expand_to_shape_of():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Expand", ["a", "s"], ["e"]),
             helper.make_node("Add", ["x", "e"], ["y"])]
    m = _model(nodes, [("x", F, [3, 4]), ("a", F, [1, 4])], [("y", F, [3, 4])])
    return "Expand", m, {"x": _x(3, 4), "a": _x(1, 4)}


def tile_by_shape_of():
    nodes = [helper.make_node("Shape", ["r"], ["reps"]), helper.make_node("Tile", ["x", "reps"], ["t"]),
             helper.make_node("Relu", ["t"], ["y"])]
    m = _model(nodes, [("x", F, [2, 3]), ("r", F, [1, 2])], [("y", F, [2, 6])])
    return "Tile", m, {"x": _x(2, 3), "r": _x(1, 2)}


def slice_to_run_time_end():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "one"], ["w"], axis=0),
             helper.make_node("Div", ["w", "two"], ["half"]),
             helper.make_node("Slice", ["x", "start", "half", "axes1"], ["y"])]
    m = _model(nodes, [("x", F, [4, 6])], [("y", F, [4, 3])],
               {"one": _i([1]), "two": _i([2]), "start": _i([0]), "axes1": _i([1])})
    return "Slice", m, {"x": _x(4, 6)}


def range_to_batch():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Range", ["start", "n", "step"], ["r"]),
             helper.make_node("Cast", ["r"], ["rf"], to=F), helper.make_node("Mul", ["x", "rf"], ["y"])]
    m = _model(nodes, [("x", F, [4])], [("y", F, [4])], {"zero": _i(0), "start": _i(0), "step": _i(1)})
    return "Range", m, {"x": _x(4)}


def size_times():
    nodes = [helper.make_node("Size", ["x"], ["n"]), helper.make_node("Cast", ["n"], ["nf"], to=F),
             helper.make_node("Mul", ["x", "nf"], ["y"])]
    return "Size", _model(nodes, [("x", F, [2, 3])], [("y", F, [2, 3])]), {"x": _x(2, 3)}


def _loop_body(scan: bool):
    ins = [helper.make_tensor_value_info("i", I64, []), helper.make_tensor_value_info("c_in", B, []),
           helper.make_tensor_value_info("acc", F, [3])]
    outs = [helper.make_tensor_value_info("c_out", B, []), helper.make_tensor_value_info("acc_next", F, [3])]
    nodes = [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Cast", ["i"], ["fi"], to=F),
             helper.make_node("Add", ["acc", "fi"], ["acc_next"])]
    if scan:
        outs.append(helper.make_tensor_value_info("step", F, [3]))
        nodes.append(helper.make_node("Mul", ["acc_next", "acc_next"], ["step"]))
    return helper.make_graph(nodes, "body", ins, outs)


def loop_constant_trip_count_with_scan_output():
    node = helper.make_node("Loop", ["M", "cond", "x"], ["acc_final", "steps"], body=_loop_body(True))
    m = _model([node], [("x", F, [3])], [("acc_final", F, [3]), ("steps", F, [4, 3])],
               {"M": _i(4), "cond": np.array(True)})
    return "Loop", m, {"x": _x(3)}


def loop_run_time_trip_count():
    node = helper.make_node("Loop", ["M", "cond", "x"], ["acc_final"], body=_loop_body(False))
    m = _model([node], [("x", F, [3]), ("M", I64, [])], [("acc_final", F, [3])], {"cond": np.array(True)})
    return "Loop", m, {"x": _x(3), "M": _i(5)}


def constants_in_branches():
    def branch(name, vals):
        c = helper.make_node("Constant", [], [name], value=helper.make_tensor(name + "_v", F, [3], vals))
        return helper.make_graph([c], name, [], [helper.make_tensor_value_info(name, F, [3])])

    node = helper.make_node("If", ["c"], ["y"], then_branch=branch("t", [1, 2, 3]), else_branch=branch("e", [4, 5, 6]))
    return "Constant", _model([node], [("c", B, [])], [("y", F, [3])]), {"c": np.array(False)}


def nonzero_float():
    x = _x(3, 4)
    x[x < 0] = 0
    m = _model([helper.make_node("NonZero", ["x"], ["y"])], [("x", F, [3, 4])], [("y", I64, [2, None])])
    return "NonZero", m, {"x": x}


def cumsum_float():
    m = _model([helper.make_node("CumSum", ["x", "axis"], ["y"], reverse=1)], [("x", F, [3, 4])], [("y", F, [3, 4])],
               {"axis": _i(1)}, opset=14)
    return "CumSum", m, {"x": _x(3, 4)}


def global_lp_pool():
    m = _model([helper.make_node("GlobalLpPool", ["x"], ["y"], p=2)], [("x", F, [1, 2, 3, 3])],
               [("y", F, [1, 2, 1, 1])])
    x = _x(1, 2, 3, 3)  # onnx.reference has no GlobalLpPool: the L2 norm over H, W by hand
    return "GlobalLpPool", m, {"x": x}, [np.sqrt((x.astype(np.float64) ** 2).sum(axis=(2, 3), keepdims=True))]


def layer_norm_first_output_only():
    m = _model([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1)], [("x", F, [2, 3, 4])],
               [("y", F, [2, 3, 4])], {"g": _x(4), "b": _x(4)}, opset=17)
    return "LayerNormalization", m, {"x": _x(2, 3, 4)}


def einsum_matmul_opset13():
    m = _model([helper.make_node("Einsum", ["a", "b"], ["y"], equation="bij,bjk->bik")],
               [("a", F, [2, 3, 4]), ("b", F, [2, 4, 5])], [("y", F, [2, 3, 5])], opset=13)
    return "Einsum", m, {"a": _x(2, 3, 4), "b": _x(2, 4, 5)}


def quantize_dequantize_int8():
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    m = _model(nodes, [("x", F, [2, 4])], [("y", F, [2, 4])],
               {"s": np.array(0.05, np.float32), "z": np.array(0, np.int8)}, opset=19)
    return "QuantizeLinear", m, {"x": _x(2, 4)}


def dequantize_int8():
    m = _model([helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"])], [("x", TensorProto.INT8, [2, 4])],
               [("y", F, [2, 4])], {"s": np.array(0.05, np.float32), "z": np.array(0, np.int8)}, opset=19)
    return "DequantizeLinear", m, {"x": _rng.integers(-100, 100, (2, 4)).astype(np.int8)}


def onehot_depth_constant():
    m = _model([helper.make_node("OneHot", ["idx", "depth", "vals"], ["y"], axis=-1)],
               [("idx", I64, [4]), ("vals", F, [2])], [("y", F, [4, 5])], {"depth": _i(5)}, opset=11)
    return "OneHot", m, {"idx": _i([0, 3, 1, 4]), "vals": np.array([0, 1], np.float32)}


def castlike_to_float16():
    m = _model([helper.make_node("CastLike", ["x", "like"], ["y"])], [("x", F, [2, 3]), ("like", TensorProto.FLOAT16, [1])],
               [("y", TensorProto.FLOAT16, [2, 3])], opset=15)
    return "CastLike", m, {"x": _x(2, 3), "like": np.zeros(1, np.float16)}


def mean_variance_normalization():
    m = _model([helper.make_node("MeanVarianceNormalization", ["x"], ["y"])], [("x", F, [2, 3, 4, 4])],
               [("y", F, [2, 3, 4, 4])], opset=13)
    return "MeanVarianceNormalization", m, {"x": _x(2, 3, 4, 4)}


def reduce_log_sum_exp_float():
    m = _model([helper.make_node("ReduceLogSumExp", ["x", "axes"], ["y"], keepdims=0)], [("x", F, [3, 4])],
               [("y", F, [3])], {"axes": _i([1])}, opset=18)
    return "ReduceLogSumExp", m, {"x": _x(3, 4)}


def nms_constant_parameters():
    boxes = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, -0.1, 1, 0.9], [0, 10, 1, 11], [0, 10.1, 1, 11.1],
                       [0, 100, 1, 101]]], np.float32)
    scores = np.array([[[0.9, 0.75, 0.6, 0.95, 0.5, 0.3]]], np.float32)
    m = _model([helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "score"], ["y"])],
               [("boxes", F, [1, 6, 4]), ("scores", F, [1, 1, 6])], [("y", I64, [3, 3])],
               {"max_out": _i([3]), "iou": np.array([0.5], np.float32), "score": np.array([0.0], np.float32)}, opset=11)
    return "NonMaxSuppression", m, {"boxes": boxes, "scores": scores}


BUILDERS: List[Callable[[], tuple]] = [  # each: (op, model, inputs[, expected outputs])
    reshape_shape_tensor, constant_of_shape_from_shape, expand_to_shape_of, tile_by_shape_of, slice_to_run_time_end,
    range_to_batch, size_times, loop_constant_trip_count_with_scan_output, loop_run_time_trip_count,
    constants_in_branches, nonzero_float, cumsum_float, global_lp_pool, layer_norm_first_output_only,
    einsum_matmul_opset13, quantize_dequantize_int8, dequantize_int8, onehot_depth_constant, castlike_to_float16,
    mean_variance_normalization, reduce_log_sum_exp_float, nms_constant_parameters,
]


def extra_cases():
    """(name, op, model, inputs, expected outputs) for each builder, expected from onnx.reference."""
    from onnx.reference import ReferenceEvaluator

    out = []
    for build in BUILDERS:
        op, model, feed, *given = build()
        onnx.checker.check_model(model)
        expected = given[0] if given else ReferenceEvaluator(model).run(None, feed)
        out.append((f"extra_{build.__name__}", op, model, feed, [np.asarray(e) for e in expected]))
    return out
