"""The op table against onnx-tensorrt's per-release operator lists: version gates, data types by
version, If/Loop bodies judged node by node, implicit-batch refusals, shape tensors on a dynamic batch."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from host.compiler.partition import TRT, TVM, partition
from host.compiler.patterns import (OP_TABLE, Context, check_node, first_version_taking, min_version_for,
                                    outer_scope_inputs, table_rows)
from host.compiler.profiles import max_parser_opset, parse_version

F, I64, I32, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL


def model(nodes, inputs, outputs, inits: Optional[Dict[str, np.ndarray]] = None, opset: int = 17,
          value_info=()) -> onnx.ModelProto:
    """inputs/outputs: (name, elem_type, shape)."""
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                          initializer=[numpy_helper.from_array(v, k) for k, v in (inits or {}).items()],
                          value_info=list(value_info))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def types_of(m: onnx.ModelProto) -> Dict[str, tuple]:
    """(dtype, shape) of every tensor: ONNX shape inference, the declared outputs where it leaves dims open."""
    declared = {vi.name: vi for vi in m.graph.output}
    inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
    types = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.name in declared:
            vi = declared[vi.name]
        t = vi.type.tensor_type
        types[vi.name] = (helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                          [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim])
    for i in m.graph.initializer:
        types[i.name] = (helper.tensor_dtype_to_np_dtype(i.data_type).name, list(i.dims))
    return types


def ctx_for(m: onnx.ModelProto, trt: str, implicit: bool = False) -> Context:
    onnx.checker.check_model(m)
    v = parse_version(trt)
    opset = m.opset_import[0].version
    inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)  # also types the values inside If/Loop
    c = Context.for_model(inferred, types_of(m), v, max_parser_opset(v), opset, implicit)
    c.nodes = list(inferred.graph.node)  # for the tests' convenience
    return c


def reason(m: onnx.ModelProto, trt: str, op: Optional[str] = None, implicit: bool = False) -> Optional[str]:
    c = ctx_for(m, trt, implicit)
    node = next(n for n in c.nodes if op is None or n.op_type == op)
    return check_node(node, c)


def one(op: str, inputs, outputs, inits=None, opset: int = 17, **attrs) -> onnx.ModelProto:
    names = [n for n, _, _ in inputs] + list(inits or {})
    order = attrs.pop("order", None) or names
    node = helper.make_node(op, order, [n for n, _, _ in outputs], **attrs)
    return model([node], inputs, outputs, inits, opset)


# -- the seed's rows are unchanged; the new rows say where they come from

SEED_MIN = {  # the seed's table as it was before the lists were added (op -> minimum TensorRT)
    **{op: "5.0.0" for op in [
        "Relu", "Sigmoid", "Tanh", "BatchNormalization", "Softmax", "LogSoftmax", "Conv", "ConvTranspose", "Gemm",
        "MatMul", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "MaxPool", "AveragePool",
        "GlobalAveragePool", "GlobalMaxPool", "Exp", "Log", "Sqrt", "Abs", "Neg", "Reciprocal", "Flatten",
        "Unsqueeze", "Squeeze", "Concat", "Transpose", "Reshape", "Pad", "Identity", "Dropout", "ReduceSum",
        "ReduceProd", "ReduceMax", "ReduceMin", "ReduceMean"]},
    **{op: "5.1.5" for op in ["LeakyRelu", "Clip", "Elu", "Selu", "Softplus", "HardSigmoid", "PRelu", "LRN",
                              "Sin", "Cos", "Atan", "Ceil", "Floor", "Split", "Slice", "InstanceNormalization"]},
    "Erf": "7.0.0", "Resize": "7.0.0", "LayerNormalization": "8.6.0", "Gelu": "10.0.0",
}


def test_seed_rows_keep_their_minimum_versions_and_new_rows_are_marked():
    rows = {r["op"]: r for r in table_rows()}
    assert {op: rows[op]["min_trt"] for op in SEED_MIN} == SEED_MIN
    assert all(rows[op]["from_seed"] == "yes" and rows[op]["seed"] != "-" for op in SEED_MIN)
    new = [r for r in rows.values() if r["op"] not in SEED_MIN]
    assert len(new) >= 70 and all(r["seed"] == "-" and r["from_seed"] == "no" and r["source"] for r in new)
    for op in ["Shape", "Gather", "Size", "Cast", "Equal", "Where", "Expand", "Range", "ConstantOfShape", "Tile",
               "TopK", "ArgMax", "HardSwish", "Einsum", "GatherElements", "GatherND", "ScatterND", "ScatterElements",
               "NonZero", "NonMaxSuppression", "If", "Loop", "LSTM", "GRU", "RNN", "GridSample", "DepthToSpace",
               "Mod", "Sign", "Round", "Trilu", "CumSum", "OneHot", "ReduceL1", "ReduceLogSumExp", "Shrink",
               "ThresholdedRelu", "Celu", "Mish", "Softsign", "Hardmax", "MeanVarianceNormalization",
               "GroupNormalization", "QuantizeLinear", "DequantizeLinear", "Upsample", "Not", "Xor", "Asin",
               "Atanh", "IsNaN", "IsInf"]:
        assert op in OP_TABLE, op


@pytest.mark.parametrize("op, first", [("TopK", "5.1.5"), ("Shape", "5.1.5"), ("ThresholdedRelu", "6.0.1"),
                                       ("Loop", "7.0.0"), ("Celu", "7.2.1"), ("If", "8.0.0"), ("Einsum", "8.2.0"),
                                       ("HardSwish", "8.4.0"), ("GridSample", "8.5.0"), ("IsInf", "8.6.0"),
                                       ("Hardmax", "9.2.0"), ("Mish", "10.0.0"), ("DeformConv", "10.1.0"),
                                       ("Unique", None)])
def test_min_version_for_is_the_first_list_that_has_the_op(op, first):
    assert min_version_for(op) == first


# -- per-version gates of new ops

X4 = [("x", F, [1, 2, 4, 4])]


@pytest.mark.parametrize("build, refused_at, ok_at, why", [
    (lambda: one("HardSwish", X4, [("y", F, [1, 2, 4, 4])]), "8.2.1", "8.5.2",
     "HardSwish needs TensorRT >= 8.4.0, target is 8.2.1"),
    (lambda: one("Mod", [("a", F, [4]), ("b", F, [4])], [("y", F, [4])], fmod=1), "8.2.1", "8.5.2",
     "Mod needs TensorRT >= 8.5.0, target is 8.2.1"),
    (lambda: one("GridSample", [("x", F, [1, 1, 4, 4]), ("g", F, [1, 2, 2, 2])], [("y", F, [1, 1, 2, 2])]),
     "8.2.1", "8.5.2", "GridSample needs TensorRT >= 8.5.0, target is 8.2.1"),
    (lambda: one("Mish", X4, [("y", F, [1, 2, 4, 4])], opset=18), "8.5.2", "10.3.0",
     "Mish needs TensorRT >= 10.0.0, target is 8.5.2"),
    (lambda: one("Trilu", [("x", F, [3, 3])], [("y", F, [3, 3])]), "8.2.1", "8.5.2",
     "Trilu needs TensorRT >= 8.5.0, target is 8.2.1"),
    (lambda: one("Einsum", [("a", F, [2, 3, 4]), ("b", F, [2, 4, 5])], [("y", F, [2, 3, 5])],
                 equation="...ij,...jk->...ik"), "8.5.2", "10.3.0",
     "Einsum with an ellipsis needs TensorRT >= 10.0.0, target is 8.5.2"),
    (lambda: one("TopK", [("x", F, [2, 8]), ("k", I64, [1])], [("v", F, [2, 3]), ("i", I64, [2, 3])]),
     "8.5.2", "10.3.0", "TopK input 1 ('k') is computed at run time; TensorRT >= 8.6.0 takes it as a shape "
                        "tensor, target is 8.5.2"),
    (lambda: one("IsNaN", [("x", F, [4])], [("y", B, [4])]), "8.0.1", "8.2.1",
     "IsNaN needs TensorRT >= 8.2.0, target is 8.0.1"),
])
def test_new_ops_are_gated_by_the_first_list_that_takes_them(build, refused_at, ok_at, why):
    m = build()
    assert reason(m, refused_at) == why
    assert reason(m, ok_at) is None


def test_the_version_that_would_take_a_node_looks_at_the_node_not_only_the_op():
    # Pad is in the seed from 5.0.0, reflect padding from the 8.2 parser (the 8.0 one pads with constant 0 only)
    m = one("Pad", [("x", F, [1, 1, 4, 4])], [("y", F, [1, 1, 6, 6])],
            inits={"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}, mode="reflect")
    c = ctx_for(m, "8.0.1")
    assert check_node(c.nodes[0], c) == "Pad mode 'reflect' needs TensorRT >= 8.2.0, target is 8.0.1"
    assert min_version_for("Pad") == "5.0.0" and first_version_taking(c.nodes[0], c) == "8.2.0"
    # GroupNormalization is on the 8.6 list as the opset-18 op, which ONNX deprecated (redefined at 21);
    # the parsers here read opset 20 at most, so no version in the table takes an opset-21 node
    m = one("GroupNormalization", [("x", F, [1, 4, 2, 2])], [("y", F, [1, 4, 2, 2])],
            inits={"s": np.ones(4, np.float32), "b": np.zeros(4, np.float32)}, opset=21, num_groups=2)
    c = ctx_for(m, "10.3.0")
    assert check_node(c.nodes[0], c).startswith("GroupNormalization is deprecated at opset 20")
    assert min_version_for("GroupNormalization") == "8.6.0" and first_version_taking(c.nodes[0], c) is None
    # ReduceSum on int64: the op is old, the type is from 10.0
    m = one("ReduceSum", [("x", I64, [2, 3])], [("y", I64, [2, 1])], inits={"ax": np.array([1], np.int64)})
    c = ctx_for(m, "8.5.2")
    assert check_node(c.nodes[0], c) == "ReduceSum on int64 tensor 'x' needs TensorRT >= 10.0.0, target is 8.5.2"
    assert first_version_taking(c.nodes[0], c) == "10.0.0"


# -- data types by version: INT64 cast to INT32 before 10, native from 10; bool where the lists say

@pytest.mark.parametrize("build, at, why", [
    (lambda: one("Add", [("a", I64, [4]), ("b", I64, [4])], [("y", I64, [4])]), "7.1.3",
     "Add on int64 tensor 'a' needs TensorRT >= 8.0.0, target is 7.1.3"),
    (lambda: one("Add", [("a", I64, [4]), ("b", I64, [4])], [("y", I64, [4])]), "8.2.1", None),
    (lambda: one("Add", [("a", I32, [4]), ("b", I32, [4])], [("y", I32, [4])]), "10.3.0", None),
    (lambda: one("Add", [("a", TensorProto.INT8, [4]), ("b", TensorProto.INT8, [4])],
                 [("y", TensorProto.INT8, [4])]), "10.3.0",
     "Add on int8 tensor 'a' is not offloaded (TensorRT takes float32/float16/int32/int64 there)"),
    (lambda: one("Pow", [("a", I64, [4]), ("b", I64, [4])], [("y", I64, [4])]), "10.3.0",
     "Pow on int64 tensor 'a' is not offloaded (TensorRT takes float32/float16 there)"),
    (lambda: one("ReduceMax", [("x", I32, [2, 3])], [("y", I32, [2, 1])], inits={"ax": np.array([1], np.int64)},
                 opset=18), "10.3.0", None),
    (lambda: one("Gather", [("x", B, [4, 2]), ("i", I64, [3])], [("y", B, [3, 2])], axis=0), "8.2.1",
     "Gather on bool tensor 'x' needs TensorRT >= 8.5.0, target is 8.2.1"),
    (lambda: one("Gather", [("x", B, [4, 2]), ("i", I64, [3])], [("y", B, [3, 2])], axis=0), "8.5.2", None),
    (lambda: one("Where", [("c", B, [4]), ("a", I64, [4]), ("b", I64, [4])], [("y", I64, [4])]), "8.2.1", None),
    (lambda: one("Where", [("c", B, [4]), ("a", F, [4]), ("b", F, [4])], [("y", F, [4])]), "7.1.3", None),
    (lambda: one("Equal", [("a", I64, [4]), ("b", I64, [4])], [("y", B, [4])]), "8.2.1", None),
    (lambda: one("And", [("a", B, [4]), ("b", B, [4])], [("y", B, [4])]), "7.1.3", None),
    (lambda: one("Not", [("a", B, [4])], [("y", B, [4])]), "8.2.1", None),
    (lambda: one("ConstantOfShape", [("s", I64, [2])], [("y", I64, [2, 3])],
                 value=helper.make_tensor("v", I64, [1], [7])), "8.5.2",
     "ConstantOfShape on int64 tensor 'y' needs TensorRT >= 10.0.0, target is 8.5.2"),
    (lambda: one("Cast", [("x", F, [4])], [("y", TensorProto.UINT8, [4])], to=TensorProto.UINT8), "8.5.2",
     "Cast on uint8 tensor 'y' needs TensorRT >= 8.6.0, target is 8.5.2"),
    (lambda: one("Cast", [("x", I64, [4])], [("y", F, [4])], to=F), "8.2.1", None),
    (lambda: one("Cast", [("x", F, [4])], [("y", TensorProto.DOUBLE, [4])], to=TensorProto.DOUBLE), "10.3.0",
     "Cast on float64 tensor 'y' is not offloaded (TensorRT takes float32/float16/int32/int64/bool/uint8 there)"),
    (lambda: one("ArgMax", [("x", I32, [2, 5])], [("y", I64, [2, 1])], axis=1), "8.5.2",
     "ArgMax on int32 tensor 'x' needs TensorRT >= 8.6.0, target is 8.5.2"),
    (lambda: one("ArgMax", [("x", F, [2, 5])], [("y", I64, [2, 1])], axis=1), "7.1.3", None),
    (lambda: one("Max", [("a", I32, [4]), ("b", I32, [4])], [("y", I32, [4])]), "8.2.1", None),
    (lambda: one("Relu", [("a", I32, [4])], [("y", I32, [4])]), "8.6.1",
     "Relu on int32 tensor 'a' needs TensorRT >= 10.0.0, target is 8.6.1"),
])
def test_data_types_follow_each_versions_list(build, at, why):
    assert reason(build(), at) == why


def test_quantize_dequantize_take_int8_with_zero_zero_point_only():
    s = {"s": np.array(0.1, np.float32)}
    q = one("QuantizeLinear", [("x", F, [4])], [("y", TensorProto.INT8, [4])], inits={**s, "z": np.array(0, np.int8)})
    assert reason(q, "8.2.1") is None
    q = one("QuantizeLinear", [("x", F, [4])], [("y", TensorProto.INT8, [4])], inits={**s, "z": np.array(3, np.int8)})
    assert "non-zero zero point" in reason(q, "8.2.1")
    q = one("QuantizeLinear", [("x", F, [4])], [("y", TensorProto.UINT8, [4])],
            inits={**s, "z": np.array(0, np.uint8)})
    assert reason(q, "10.3.0") == ("QuantizeLinear on uint8 tensor 'y' is not offloaded "
                                   "(TensorRT takes int8 there)")
    dq = one("DequantizeLinear", [("x", TensorProto.INT8, [4])], [("y", F, [4])],
             inits={**s, "z": np.array(0, np.int8)})
    assert reason(dq, "8.5.2") is None


# -- If / Loop: every node inside must pass the table for that version

def _if(then_nodes, else_nodes, then_out, else_out, shape=(4,)):
    tg = helper.make_graph(then_nodes, "then", [], [helper.make_tensor_value_info(then_out, F, list(shape))])
    eg = helper.make_graph(else_nodes, "else", [], [helper.make_tensor_value_info(else_out, F, list(shape))])
    return helper.make_node("If", ["c"], ["y"], then_branch=tg, else_branch=eg, name="if")


def test_if_is_offloaded_when_every_branch_node_is_and_names_the_inner_op_when_not():
    then_nodes = [helper.make_node("HardSwish", ["x"], ["t"])]
    else_nodes = [helper.make_node("Relu", ["x"], ["e"])]
    m = model([_if(then_nodes, else_nodes, "t", "e")], [("c", B, []), ("x", F, [4])], [("y", F, [4])])
    assert outer_scope_inputs(m.graph.node[0]) == ["x"]
    assert reason(m, "8.5.2") is None
    assert reason(m, "8.2.1") == ("If is not offloaded: its then_branch holds HardSwish "
                                  "(HardSwish needs TensorRT >= 8.4.0, target is 8.2.1)")
    assert reason(m, "7.1.3") == "If needs TensorRT >= 8.0.0, target is 7.1.3"
    # an op no version takes, deeper: If inside the else branch
    inner = _if([helper.make_node("Relu", ["x"], ["t2"])],
                [helper.make_node("Unique", ["x"], ["e2"])], "t2", "e2")
    inner.output[0] = "e"
    inner.input[0] = "c"
    m = model([_if(then_nodes, [inner], "t", "e")], [("c", B, []), ("x", F, [4])], [("y", F, [4])])
    r = reason(m, "10.3.0")
    assert r == ("If is not offloaded: its else_branch holds If (If is not offloaded: its else_branch holds "
                 "Unique (Unique is not in the TensorRT op table))")
    assert "\n" not in r
    # --no-offload reaches inside too
    m = model([_if(then_nodes, else_nodes, "t", "e")], [("c", B, []), ("x", F, [4])], [("y", F, [4])])
    c = ctx_for(m, "10.3.0")
    assert "HardSwish kept in TVM on request" in check_node(c.nodes[0], c, exclude=["HardSwish"])


def test_if_with_a_constant_condition_reading_run_time_values_is_not_a_constant_node():
    m = model([_if([helper.make_node("Relu", ["x"], ["t"])], [helper.make_node("Neg", ["x"], ["e"])], "t", "e")],
              [("x", F, [4])], [("y", F, [4])], inits={"c": np.array(True)})
    assert reason(m, "10.3.0") is None


def _loop(body_nodes, carried_in, carried_out, scan_out=None, trip="M"):
    ins = [helper.make_tensor_value_info("i", I64, []), helper.make_tensor_value_info("cond_in", B, []),
           helper.make_tensor_value_info(carried_in, F, [4])]
    outs = [helper.make_tensor_value_info("cond_out", B, []), helper.make_tensor_value_info(carried_out, F, [4])]
    if scan_out:
        outs.append(helper.make_tensor_value_info(scan_out, F, [4]))
    body = helper.make_graph([helper.make_node("Identity", ["cond_in"], ["cond_out"])] + body_nodes, "body", ins, outs)
    return helper.make_node("Loop", [trip, "cond", "x0"], ["xf"] + (["scan"] if scan_out else []), body=body)


def test_loop_body_is_checked_node_by_node_and_scan_outputs_need_a_constant_trip_count():
    body = [helper.make_node("Cast", ["i"], ["fi"], to=F), helper.make_node("Add", ["xc", "fi"], ["xn"]),
            helper.make_node("Identity", ["xn"], ["s"])]
    inits = {"M": np.array(3, np.int64), "cond": np.array(True)}
    outs = [("xf", F, [4]), ("scan", F, [3, 4])]
    m = model([_loop(body, "xc", "xn", "s")], [("x0", F, [4])], outs, inits=inits)
    assert reason(m, "8.5.2") is None and reason(m, "10.3.0") is None
    assert reason(m, "8.2.1", implicit=True) == "Loop is not offloaded with use_implicit_batch (it needs explicit batch)"
    # a body node the version does not take is named
    body_bad = body[:1] + [helper.make_node("Mod", ["xc", "fi"], ["xn"], fmod=1)] + body[2:]
    m = model([_loop(body_bad, "xc", "xn", "s")], [("x0", F, [4])], outs, inits=inits)
    assert reason(m, "8.2.1") == "Loop is not offloaded: its body holds Mod (Mod needs TensorRT >= 8.5.0, target is 8.2.1)"
    # a run-time trip count with a scan output: the scan length would be dynamic
    m = model([_loop(body, "xc", "xn", "s")], [("x0", F, [4]), ("M", I64, [])], outs,
              inits={"cond": np.array(True)})
    assert reason(m, "10.3.0").startswith("Loop with scan outputs needs a constant trip count")
    # no scan output: a run-time trip count is fine
    m = model([_loop(body[:2], "xc", "xn")], [("x0", F, [4]), ("M", I64, [])], [("xf", F, [4])],
              inits={"cond": np.array(True)})
    assert reason(m, "10.3.0") is None


# -- implicit batch (TensorRT < 10): no shape tensors, no control flow, nothing on the batch axis

@pytest.mark.parametrize("build, why", [
    (lambda: one("Shape", [("x", F, [2, 3])], [("s", I64, [2])]),
     "Shape is not offloaded with use_implicit_batch (it needs explicit batch)"),
    (lambda: one("Gather", [("x", F, [4, 2]), ("i", I64, [3])], [("y", F, [3, 2])]),
     "Gather along axis 0 touches the batch axis (use_implicit_batch)"),
    (lambda: one("Unsqueeze", [("x", F, [4, 2])], [("y", F, [1, 4, 2])], inits={"ax": np.array([0], np.int64)}),
     "Unsqueeze along axis 0 touches the batch axis (use_implicit_batch)"),
    (lambda: one("Reshape", [("x", F, [4, 2]), ("s", I64, [2])], [("y", F, [2, 4])]),
     "Reshape input 1 ('s') is computed at run time; TensorRT takes it as a shape tensor in explicit batch only "
     "(use_implicit_batch)"),
    (lambda: one("Reshape", [("x", F, [4, 2])], [("y", F, [2, 4])], inits={"s": np.array([2, 4], np.int64)}),
     "Reshape that changes the batch axis is not offloaded (use_implicit_batch)"),
    (lambda: one("Add", [("a", I32, [2, 4]), ("b", I32, [2, 4])], [("y", I32, [2, 4])]),
     "Add on int32 tensor 'a' is not offloaded with use_implicit_batch (int data, shape tensors among it, is "
     "taken in explicit batch only)"),
    (lambda: one("Split", [("x", F, [4, 2])], [("a", F, [2, 2]), ("b", F, [2, 2])], opset=13),
     "Split along axis 0 touches the batch axis (use_implicit_batch)"),
    (lambda: one("NonZero", [("x", F, [4, 2])], [("y", I64, [2, 8])]),
     "NonZero is not offloaded with use_implicit_batch (it needs explicit batch)"),
])
def test_implicit_batch_refuses_shape_tensors_control_flow_and_the_batch_axis(build, why):
    m = build()
    assert reason(m, "8.2.1" if "NonZero" not in why else "8.5.2", implicit=True) == why
    assert reason(m, "8.5.2") is None  # explicit batch takes every one of them


def test_implicit_batch_keeps_ops_off_the_batch_axis():
    m = one("Unsqueeze", [("x", F, [4, 2])], [("y", F, [4, 1, 2])], inits={"ax": np.array([1], np.int64)})
    assert reason(m, "8.2.1", implicit=True) is None
    m = one("Softmax", [("x", F, [4, 2])], [("y", F, [4, 2])], axis=1)
    assert reason(m, "8.2.1", implicit=True) is None


# -- a shape subgraph on a symbolic batch dim is one TensorRT segment (shape tensors)

def _dynamic_reshape():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Shape", ["r"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "i0"], ["b"], axis=0, name="gather"),
             helper.make_node("Unsqueeze", ["b", "ax0"], ["bu"], name="unsqueeze"),
             helper.make_node("Concat", ["bu", "minus1"], ["shp"], axis=0, name="concat"),
             helper.make_node("Reshape", ["r", "shp"], ["y0"], name="reshape"),
             helper.make_node("Sigmoid", ["y0"], ["y"], name="sigmoid")]
    inits = {"i0": np.array(0, np.int64), "ax0": np.array([0], np.int64), "minus1": np.array([-1], np.int64)}
    y0 = helper.make_tensor_value_info("y0", F, ["batch", 12])  # what inference cannot follow through Reshape
    m = model(nodes, [("x", F, ["batch", 3, 4])], [("y", F, ["batch", 12])], inits, opset=13, value_info=[y0])
    types = types_of(m)
    types["y0"] = ("float32", ["batch", 12])
    return m, types


@pytest.mark.parametrize("trt", ["8.2.1", "8.5.2", "10.3.0"])
def test_shape_gather_concat_reshape_on_a_dynamic_batch_is_one_tensorrt_segment(trt):
    m, types = _dynamic_reshape()
    v = parse_version(trt)
    part = partition(m, Context.for_model(m, types, v, max_parser_opset(v), 13))
    assert [(p.kind, p.ops) for p in part.parts] == [
        (TRT, ["Relu", "Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "Sigmoid"])]
    assert part.not_offloaded == []


def test_shape_subgraph_stays_in_tvm_before_shape_tensors_and_with_implicit_batch():
    m, types = _dynamic_reshape()
    part = partition(m, Context.for_model(m, types, (7, 1, 3), 11, 13))
    why = {e["op"]: e["reason"] for e in part.not_offloaded}
    assert why["Shape"] == "Shape on int64 tensor 's' needs TensorRT >= 8.0.0, target is 7.1.3"
    assert why["Gather"] == "Gather on int64 tensor 's' needs TensorRT >= 8.0.0, target is 7.1.3"
    assert why["Reshape"] == ("Reshape input 1 ('shp') is computed at run time; TensorRT >= 8.0.0 takes it as a "
                              "shape tensor, target is 7.1.3")
    assert [p.kind for p in part.parts] == [TRT, TVM, TRT]
    part = partition(m, Context.for_model(m, types, (8, 2, 1), 13, 13, use_implicit_batch=True))
    why = {e["op"]: e["reason"] for e in part.not_offloaded}
    assert why["Shape"] == "Shape is not offloaded with use_implicit_batch (it needs explicit batch)"
    assert sorted(why) == ["Concat", "Gather", "Reshape", "Shape", "Unsqueeze"]


def test_constant_nodes_inside_a_branch_are_constants_for_the_nodes_after_them():
    axes = helper.make_node("Constant", [], ["ax"], value_ints=[0])
    then_nodes = [axes, helper.make_node("Unsqueeze", ["x", "ax"], ["t"])]
    else_nodes = [helper.make_node("Constant", [], ["ax2"], value_ints=[0]),
                  helper.make_node("Unsqueeze", ["x", "ax2"], ["u"]), helper.make_node("Neg", ["u"], ["e"])]
    m = model([_if(then_nodes, else_nodes, "t", "e", shape=(1, 4))], [("c", B, []), ("x", F, [4])],
              [("y", F, [1, 4])])
    assert reason(m, "8.5.2") is None


def test_implicit_batch_refuses_axes_it_cannot_read():
    # a context without the constants' values (as a caller that passes only their names builds it)
    m = one("Unsqueeze", [("x", F, [4, 2])], [("y", F, [4, 1, 2])], inits={"ax": np.array([1], np.int64)})
    c = ctx_for(m, "8.2.1", implicit=True)
    blind = Context(types=c.types, constants=c.constants, trt=c.trt, parser_opset=c.parser_opset,
                    model_opset=c.model_opset, use_implicit_batch=True)
    assert check_node(c.nodes[0], c) is None
    assert check_node(c.nodes[0], blind) == ("Unsqueeze over axes the op table cannot read may touch the batch axis "
                                             "(use_implicit_batch)")


@pytest.mark.parametrize("trt, parts", [("8.2.1", [("trt_0", "all")]), ("10.3.0", [("trt_0", "all")]),
                                        ("7.1.3", [("trt_0", ["Relu"]), ("tvm_0", "shape"), ("trt_1", ["Add"])])])
def test_compiled_dynamic_batch_model_keeps_its_shape_subgraph_in_one_segment(tiny, save_model, tmp_path, trt, parts):
    # what exporters write for x.view(x.size(0), -1) + a ones-mask of the same shape; --batch keeps it symbolic
    from device_agent.bundle import Bundle
    from device_agent.bundle_runtime import onnxruntime_runners, run_bundle
    from host.compiler.api import compile_model

    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Shape", ["r"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["b"], axis=0), helper.make_node("Unsqueeze", ["b", "ax0"], ["bu"]),
             helper.make_node("Concat", ["bu", "c12"], ["shp"], axis=0),
             helper.make_node("ConstantOfShape", ["shp"], ["ones"], value=helper.make_tensor("v", F, [1], [1.0])),
             helper.make_node("Reshape", ["r", "shp"], ["y0"]), helper.make_node("Add", ["y0", "ones"], ["y"])]
    m = tiny(nodes, [("x", ["N", 3, 4])], [("y", ["N", 12])],
             inits={"i0": np.array(0, np.int64), "ax0": np.array([0], np.int64), "c12": np.array([12], np.int64)})
    r = compile_model(save_model(m), tmp_path / "out", trt_version=trt, batch="1:2:4")
    shape_ops = ["Shape", "Gather", "Unsqueeze", "Concat", "ConstantOfShape", "Reshape"]
    want = [(pid, ["Relu"] + shape_ops + ["Add"] if ops == "all" else shape_ops if ops == "shape" else ops)
            for pid, ops in parts]
    assert [(p["id"], p["ops"]) for p in r.parts] == want
    b = Bundle.open(r.bundle_dir)
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 3, 4)).astype(np.float32)
        got = run_bundle(b, onnxruntime_runners(b), {"x": x})["y"]
        np.testing.assert_allclose(got, np.maximum(x, 0).reshape(n, 12) + 1, rtol=1e-6)
