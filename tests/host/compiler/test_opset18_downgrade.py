"""Segments written below the model's opset: the nodes inside If branches are rewritten too, and opset 18's
Split(num_outputs) becomes explicit sizes (TensorRT 8.x parsers read opset <= 17, 8.2's <= 13)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from device_agent.bundle import Bundle
from host.compiler.api import compile_model
from host.compiler.optable.checks import split_ok
from host.compiler.patterns import Context
from tests.host.compiler.test_partition_rules import _run_matches

F = TensorProto.FLOAT


def _model(nodes, x_shape, y_shapes, inits=None, opset: int = 18) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", F, x_shape)],
                          [helper.make_tensor_value_info(n, F, s) for n, s in y_shapes],
                          initializer=[numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _branch(name: str, nodes, out: str, shape, inits=None) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, F, shape)],
                             initializer=[numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])


def _if_on_sum(then_g: onnx.GraphProto, else_g: onnx.GraphProto, y_shape) -> onnx.ModelProto:
    """a = relu(x); y = If(sum(x) > 0, then_g, else_g): the branches read a from the outer scope."""
    return _model([helper.make_node("Relu", ["x"], ["a"]),
                   helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                   helper.make_node("Greater", ["s", "zero"], ["c"]),
                   helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
                  [1, 8], [("y", y_shape)], inits={"zero": np.array(0, np.float32)})


def _segment(r, i: int = 0) -> onnx.ModelProto:
    return onnx.load(str(Bundle.open(r.bundle_dir).segment_path(r.manifest.segments[i].id)))


def _one_segment(r, opset: int) -> onnx.ModelProto:
    m = r.manifest
    assert m.not_offloaded == [] and m.remainder is None and len(m.segments) == 1, m.not_offloaded
    assert m.segments[0].opset == opset
    seg = _segment(r)
    onnx.checker.check_model(seg, full_check=True)
    return seg


def _if_node(seg: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in seg.graph.node if n.op_type == "If")


@pytest.mark.parametrize("trt, opset", [("8.5.2", 17), ("8.2.1", 13)])
def test_an_if_whose_branches_take_axes_as_inputs_is_offloaded_with_its_branches_downgraded(
        save_model, tmp_path, trt, opset):
    # opset 18 reductions take axes as an input; opset 13 (ReduceSum aside) and 17 take an attribute
    ax = {"ax": np.array([1], np.int64)}
    then_g = _branch("then", [helper.make_node("ReduceMean", ["a", "ax"], ["t"], keepdims=1)], "t", [1, 1], ax)
    else_g = _branch("else", [helper.make_node("ReduceMax", ["a", "ax"], ["e"], keepdims=1)], "e", [1, 1], ax)
    r = compile_model(save_model(_if_on_sum(then_g, else_g, [1, 1])), tmp_path / "out", trt_version=trt)
    seg = _one_segment(r, opset)
    branches = {a.name: a.g for a in _if_node(seg).attribute}
    for g in branches.values():
        assert [len(n.input) for n in g.node] == [1]  # axes became an attribute inside the branch
        assert [a.name for a in g.node[0].attribute if a.name == "axes"] == ["axes"]
    _run_matches(r)


@pytest.mark.parametrize("dim, sizes", [(12, [3, 3, 3, 3]), (10, [3, 3, 3, 1])])
@pytest.mark.parametrize("trt, opset", [("8.5.2", 17), ("8.2.1", 13), ("7.1.3", 11)])
def test_split_by_num_outputs_is_written_with_its_sizes_below_opset_18(save_model, tmp_path, dim, sizes, trt, opset):
    outs = [f"y{i}" for i in range(4)]
    m = _model([helper.make_node("Relu", ["x"], ["a"]),
                helper.make_node("Split", ["a"], outs, axis=1, num_outputs=4)],
               [2, dim], [(o, [2, s]) for o, s in zip(outs, sizes)])
    r = compile_model(save_model(m), tmp_path / "out", trt_version=trt)
    seg = _one_segment(r, opset)
    split = next(n for n in seg.graph.node if n.op_type == "Split")
    assert "num_outputs" not in [a.name for a in split.attribute]
    if opset >= 13:
        written = {i.name: numpy_helper.to_array(i).tolist() for i in seg.graph.initializer}[split.input[1]]
    else:
        written = next(helper.get_attribute_value(a) for a in split.attribute if a.name == "split")
    assert written == sizes
    _run_matches(r)
    assert compile_model(save_model(m), tmp_path / "t10", trt_version="10.3.0").manifest.segments[0].opset == 18


def test_split_by_num_outputs_inside_an_if_branch(save_model, tmp_path):
    # silero-vad's op18 export: an LSTM cell's gates split with num_outputs=4 inside an If branch
    parts = [f"g{i}" for i in range(4)]
    then_g = _branch("then", [helper.make_node("Split", ["a"], parts, axis=1, num_outputs=4),
                              helper.make_node("Mul", ["g0", "g1"], ["p"]),
                              helper.make_node("Mul", ["g2", "g3"], ["q"]),
                              helper.make_node("Add", ["p", "q"], ["t"])], "t", [1, 2])
    else_g = _branch("else", [helper.make_node("Slice", ["a", "st", "en", "axs"], ["e"])], "e", [1, 2],
                     {"st": np.array([0], np.int64), "en": np.array([2], np.int64), "axs": np.array([1], np.int64)})
    r = compile_model(save_model(_if_on_sum(then_g, else_g, [1, 2])), tmp_path / "out", trt_version="8.5.2")
    seg = _one_segment(r, 17)
    then_w = next(a.g for a in _if_node(seg).attribute if a.name == "then_branch")
    split = next(n for n in then_w.node if n.op_type == "Split")
    assert numpy_helper.to_array(next(i for i in then_w.initializer if i.name == split.input[1])).tolist() == [2] * 4
    _run_matches(r)


def test_split_by_num_outputs_over_a_run_time_dim_stays_in_tvm_below_opset_18(save_model, tmp_path):
    outs = ["y0", "y1"]
    m = _model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Split", ["a"], outs, axis=1, num_outputs=2)],
               [2, "n"], [(o, [2, None]) for o in outs])
    r = compile_model(save_model(m), tmp_path / "out", trt_version="8.5.2", input_shapes={"x": (2, 6)})
    # bound to 2x6 the dim is known: offloaded
    _one_segment(r, 17)
    _run_matches(r)
    # left symbolic, the sizes are not known before run time: Split's own check says so (before it, the
    # table refuses any tensor of unknown shape at 8.5)
    ctx = Context(types={"a": ("float32", [2, "n"])}, constants=set(), trt=(8, 5, 2), parser_opset=17,
                  model_opset=18)
    assert split_ok(m.graph.node[1], ctx) == (
        "Split with num_outputs over a dim known only at run time is not offloaded below opset 18 "
        "(TensorRT 8.5.2 parses opset <= 17)")
    assert split_ok(m.graph.node[1], Context(types=ctx.types, constants=set(), trt=(10, 3, 0), parser_opset=20,
                                             model_opset=18)) is None
