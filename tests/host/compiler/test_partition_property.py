"""Random DAGs: every partition covers each node once, in an executable order, with kinds as decided."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from host.compiler import frontend
from host.compiler.partition import TRT, partition
from host.compiler.patterns import Context

OPS = ["Relu", "Erf", "Add", "Sigmoid", "Mul"]


@st.composite
def dags(draw):
    n = draw(st.integers(2, 40))
    nodes, tensors = [], ["x"]
    for i in range(n):
        op = draw(st.sampled_from(OPS))
        a = draw(st.sampled_from(tensors))
        ins = [a, draw(st.sampled_from(tensors))] if op in ("Add", "Mul") else [a]
        nodes.append(helper.make_node(op, ins, [f"t{i}"], name=f"n{i}"))
        tensors.append(f"t{i}")
    used = {t for nd in nodes for t in nd.input}
    outs = [t for t in tensors[1:] if t not in used] or [tensors[-1]]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info(t, TensorProto.FLOAT, [2, 3]) for t in outs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(), st.sampled_from([(6, 0, 1), (7, 0, 0)]), st.booleans())
def test_partition_is_a_valid_schedule(model, trt, no_mac):
    loaded = frontend.prepare(model, "sha256:" + "0" * 64)
    ctx = Context(loaded.value_types, {i.name for i in loaded.model.graph.initializer}, trt, 11, 13)
    part = partition(loaded.model, ctx, remove_no_mac_subgraphs=no_mac)
    names = [n.name for p in part.parts for n in p.nodes]
    assert sorted(names) == sorted(n.name for n in loaded.model.graph.node)  # each node exactly once
    available = {"x"}
    for p in part.parts:
        assert set(p.inputs) <= available, f"{p.id} runs before its inputs exist"
        produced = {t for n in p.nodes for t in n.output}
        assert set(p.outputs) <= produced
        available |= set(p.outputs)
        erf = any(n.op_type == "Erf" for n in p.nodes)
        assert not (p.kind == TRT and erf and trt < (7, 0, 0))
        if p.kind != TRT and not no_mac:  # only Erf below 7.0 is refused by the table for these ops
            assert trt < (7, 0, 0) and all(n.op_type == "Erf" for n in p.nodes)
    assert {o.name for o in loaded.model.graph.output} <= available
    tvm_nodes = {n.name for p in part.parts if p.kind != TRT for n in p.nodes}
    assert {e["node"] for e in part.not_offloaded} == tvm_nodes
