"""Write a part of the graph as a standalone ONNX model (TensorRT segments and TVM parts alike)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

from device_agent.manifest import TensorSpec
from host.compiler.graphs import subgraphs
from host.compiler.partition import Part, node_inputs


class EmitError(Exception):
    """A part cannot be written at the requested opset (carries a one-line reason)."""

    def __init__(self, message: str, node: Optional[str] = None) -> None:
        super().__init__(message)
        self.node = node


_AXIS_SEMANTICS_CHANGED_AT_13 = {"Softmax", "LogSoftmax", "Hardmax"}


def _signature(schema) -> tuple:
    return (tuple(i.name for i in schema.inputs), tuple(o.name for o in schema.outputs),
            tuple(sorted(schema.attributes)))


def _fits(node: onnx.NodeProto, new, cur) -> bool:
    """Does the node use only attributes and input positions that mean the same in ``new``?"""
    if any(a.name not in new.attributes for a in node.attribute):
        return False
    used = [i for i, t in enumerate(node.input) if t]
    new_names = [i.name for i in new.inputs]
    variadic = bool(new.inputs) and new.inputs[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic
    for i in used:  # input names change across versions (mean -> input_mean); positions keep meaning
        if i >= len(new_names) and not variadic:
            return False
    single = onnx.defs.OpSchema.FormalParameterOption.Single
    for i, t in enumerate(node.input):  # an omitted input the older version requires
        if not t and i < len(new.inputs) and new.inputs[i].option == single:
            return False
    return len([o for o in node.output if o]) <= max(len(new.outputs), 1) or (
        bool(new.outputs) and new.outputs[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic)


def _reshape_has_no_zero(node: onnx.NodeProto, inits: Dict[str, onnx.TensorProto]) -> bool:
    """``allowzero`` only changes what a 0 in the target shape means: without a 0 it has no effect."""
    shape = inits.get(node.input[1]) if len(node.input) > 1 else None
    return shape is not None and 0 not in numpy_helper.to_array(shape).tolist()


# attributes that have no effect on a given node, though not at their default (PyTorch's exporter writes
# Reshape allowzero=1 for every view)
_NO_EFFECT = {("Reshape", "allowzero"): _reshape_has_no_zero}


def _without_default_attributes(node: onnx.NodeProto, new, cur, inits: Dict[str, onnx.TensorProto]) -> onnx.NodeProto:
    """Drop attributes the older schema lacks when they hold the newer schema's default (``Reshape``'s
    ``allowzero=0``, which every exporter at opset >= 14 writes) or have no effect on this node: it means
    the same without them."""
    drop = []
    for a in node.attribute:
        if a.name in new.attributes or a.name not in cur.attributes:
            continue
        default = cur.attributes[a.name].default_value
        no_effect = _NO_EFFECT.get((node.op_type, a.name))
        if default.type != onnx.AttributeProto.UNDEFINED and \
                helper.get_attribute_value(default) == helper.get_attribute_value(a):
            drop.append(a.name)
        elif no_effect is not None and no_effect(node, inits):
            drop.append(a.name)
    if not drop:
        return node
    out = onnx.NodeProto()
    out.CopyFrom(node)
    del out.attribute[:]
    out.attribute.extend(a for a in node.attribute if a.name not in drop)
    return out


def _split_by_sizes(node: onnx.NodeProto, dst: int,
                    types: Dict[str, Tuple[str, list]]) -> Tuple[List[onnx.NodeProto], List[onnx.TensorProto]]:
    """Opset 18's ``Split(num_outputs=n)`` as the sizes it means (chunks of ceil(dim / n), the last one
    smaller), written before opset 18 as the ``split`` input (13..17) or attribute (< 13). The sizes need
    the split dim: a dim known only at run time has no such form."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    n, axis = int(attrs["num_outputs"]), int(attrs.get("axis", 0))
    shape = types.get(node.input[0], ("", []))[1] or []
    dim = shape[axis] if -len(shape) <= axis < len(shape) else None
    if not isinstance(dim, int) or dim <= 0:
        raise EmitError(f"Split with num_outputs over a dim known only at run time ({dim!r}) has no form before "
                        "opset 18", node.name)
    chunk = -(-dim // n)
    sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
    if sizes[-1] <= 0:
        raise EmitError(f"Split of {dim} into {n} outputs leaves an empty output", node.name)
    out = onnx.NodeProto()
    out.CopyFrom(node)
    del out.attribute[:]
    out.attribute.extend(a for a in node.attribute if a.name != "num_outputs")
    if dst < 13:
        out.attribute.extend([helper.make_attribute("split", sizes)])
        return [out], []
    name = f"{node.output[0]}__split_sizes"
    out.input.append(name)
    return [out], [numpy_helper.from_array(np.array(sizes, np.int64), name)]


def _downgrade_node(node: onnx.NodeProto, src: int, dst: int, inits: Dict[str, onnx.TensorProto],
                    types: Dict[str, Tuple[str, list]]) -> Tuple[List[onnx.NodeProto], List[onnx.TensorProto]]:
    """The node (and weights) rewritten for opset ``dst``; raises EmitError when it has no form there."""
    if node.op_type == "Split" and dst < 18 <= src and any(a.name == "num_outputs" for a in node.attribute):
        return _split_by_sizes(node, dst, types)
    try:
        new = onnx.defs.get_schema(node.op_type, max_inclusive_version=dst)
    except Exception:  # noqa: BLE001
        raise EmitError(f"{node.op_type} does not exist at opset {dst}", node.name) from None
    cur = onnx.defs.get_schema(node.op_type, max_inclusive_version=src)
    if new.since_version == cur.since_version:
        return [node], []
    if node.op_type in _AXIS_SEMANTICS_CHANGED_AT_13 and dst < 13 <= src:
        rank = len(types.get(node.input[0], ("", []))[1])
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), -1)
        if rank == 0 or axis not in (-1, rank - 1):
            raise EmitError(f"{node.op_type} over axis {axis} has no equivalent before opset 13", node.name)
        n = onnx.NodeProto()
        n.CopyFrom(node)
        del n.attribute[:]
        n.attribute.extend([helper.make_attribute("axis", rank - 1)])
        return [n], []
    node = _without_default_attributes(node, new, cur, inits)
    if _signature(new) == _signature(cur) or _fits(node, new, cur):
        return [node], []  # only types changed, or the node uses nothing the older version lacks
    extra = [a.name for a in node.attribute if a.name not in new.attributes]
    if extra:
        raise EmitError(f"{node.op_type} attribute(s) {extra} do not exist at opset {dst}", node.name)
    # a real signature change (attribute <-> input): let ONNX's version converter do this node
    ins = [t for t in node.input if t]
    missing = [t for t in ins + list(node.output) if t and t not in inits and t not in types]
    if missing:
        raise EmitError(f"{node.op_type} cannot be written at opset {dst}: no type for {missing[0]!r}", node.name)
    g = helper.make_graph([node], "one",
                          [_value_info(t, types) for t in ins if t not in inits],
                          [_value_info(t, types) for t in node.output if t],
                          initializer=[inits[t] for t in ins if t in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", src)])
    try:
        conv = version_converter.convert_version(m, dst)
    except Exception as e:  # noqa: BLE001
        raise EmitError(f"{node.op_type} cannot be written at opset {dst}: "
                        f"{str(e).splitlines()[0].split(': ')[-1][:120]}", node.name) from None
    return list(conv.graph.node), list(conv.graph.initializer)


def _graph_types(graph: onnx.GraphProto, outer: Dict[str, Tuple[str, list]]) -> Dict[str, Tuple[str, list]]:
    """The outer scope's types with the graph's own (inputs, value_info, outputs, initializers) over them."""
    types = dict(outer)
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.elem_type:
            continue
        types[vi.name] = (np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name,
                          [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tt.shape.dim])
    for i in graph.initializer:
        types[i.name] = (np.dtype(helper.tensor_dtype_to_np_dtype(i.data_type)).name, list(i.dims))
    return types


def _downgrade_graph(graph: onnx.GraphProto, src: int, dst: int, outer_inits: Dict[str, onnx.TensorProto],
                     outer_types: Dict[str, Tuple[str, list]]) -> onnx.GraphProto:
    """The graph with every node, and every node of its subgraphs (If branches, Loop bodies), rewritten for
    opset ``dst``: a segment declares one opset, and TensorRT's parser reads the bodies at it too."""
    types = _graph_types(graph, outer_types)
    inits = dict(outer_inits)
    inits.update({i.name: i for i in graph.initializer})
    nodes: List[onnx.NodeProto] = []
    new_inits: Dict[str, onnx.TensorProto] = {}
    for node in graph.node:
        if any(True for _ in subgraphs(node)):
            node = _with_subgraphs_downgraded(node, src, dst, inits, types)
        ns, extra = _downgrade_node(node, src, dst, inits, types)
        nodes.extend(ns)
        for t in extra:
            new_inits[t.name] = t
    used = {t for n in nodes for t in node_inputs(n)} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used and i.name not in new_inits]
    keep += [t for name, t in sorted(new_inits.items()) if name in used]
    return helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output),
                             initializer=keep, value_info=list(graph.value_info))


def _with_subgraphs_downgraded(node: onnx.NodeProto, src: int, dst: int, inits: Dict[str, onnx.TensorProto],
                               types: Dict[str, Tuple[str, list]]) -> onnx.NodeProto:
    out = onnx.NodeProto()
    out.CopyFrom(node)
    for a in out.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            a.g.CopyFrom(_downgrade_graph(a.g, src, dst, inits, types))
        elif a.type == onnx.AttributeProto.GRAPHS:
            for g in a.graphs:
                g.CopyFrom(_downgrade_graph(g, src, dst, inits, types))
    return out


def downgrade(model: onnx.ModelProto, dst: int) -> onnx.ModelProto:
    """Rewrite a model for an older opset node by node (ONNX's converter refuses whole graphs that
    hold any op without an adapter, even when only types changed), the nodes of If / Loop bodies too."""
    src = next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))
    g = _downgrade_graph(model.graph, src, dst, {}, {})
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", dst)], producer_name=model.producer_name)
    m.ir_version = max(helper.find_min_ir_version_for([helper.make_opsetid("", dst)]), 7)
    return m


def _value_info(name: str, types: Dict[str, Tuple[str, list]]) -> onnx.ValueInfoProto:
    dtype, shape = types[name]
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return helper.make_tensor_value_info(name, elem, list(shape))


def spec_of(name: str, types: Dict[str, Tuple[str, list]]) -> TensorSpec:
    dtype, shape = types[name]
    return TensorSpec(name, dtype, [d if isinstance(d, int) else str(d) for d in shape])


def part_model(model: onnx.ModelProto, part: Part, types: Dict[str, Tuple[str, list]], *,
               inputs: Optional[Sequence[str]] = None, outputs: Optional[Sequence[str]] = None,
               opset: Optional[int] = None, name: Optional[str] = None) -> onnx.ModelProto:
    """The part's nodes with their weights, as a checked ONNX model at ``opset`` (converted if lower)."""
    inputs = list(part.inputs if inputs is None else inputs)
    outputs = list(part.outputs if outputs is None else outputs)
    used = {t for n in part.nodes for t in node_inputs(n)}
    inits = [i for i in model.graph.initializer if i.name in used]
    produced_inside = {t for n in part.nodes for t in n.output}
    value_info = [_value_info(t, types) for t in sorted(produced_inside - set(outputs)) if t in types]
    graph = helper.make_graph(
        [n for n in part.nodes], name or part.id,
        [_value_info(t, types) for t in inputs],
        [_value_info(t, types) for t in outputs],
        initializer=inits, value_info=value_info,
    )
    src_opset = next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))
    ir = helper.find_min_ir_version_for([helper.make_opsetid("", src_opset)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", src_opset)],
                          producer_name="jetson-deploy", ir_version=max(ir, 7))
    if opset is not None and opset < src_opset:
        m = downgrade(m, opset)
    try:
        onnx.checker.check_model(m)
    except Exception as e:  # noqa: BLE001
        import re

        msg = str(e).splitlines()[0]
        culprit = re.search(r"Node \(([^)]*)\)", msg)
        raise EmitError(f"the emitted ONNX does not check: {msg[:160]}", culprit.group(1) if culprit else None) from None
    return m


def serialize(model: onnx.ModelProto) -> bytes:
    """Deterministic bytes (protobuf deterministic serialization)."""
    return model.SerializeToString(deterministic=True)
