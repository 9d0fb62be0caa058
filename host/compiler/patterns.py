"""The TensorRT op table: which ONNX node a TensorRT version's ONNX parser takes, and why not.

Each rule carries the seed's op name (``tensorrt.<op>`` in TVM's contrib table; "-" for rows taken
from onnx-tensorrt's per-release ``docs/operators.md``), the ONNX op it is written as, the minimum
TensorRT version, the data types each version takes, and attribute checks. ``check_node`` returns
``None`` (offload) or a one-line reason (keep in TVM). The rows are in ``optable/rows.py``, the
attribute checks in ``optable/checks.py``; this module applies them.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np
import onnx
from onnx import numpy_helper

from host.compiler.optable.base import (INDEX_TYPES, V1000, Check, Context, Ladder, Rule,
                                        attr, axes_of, first_version_with, input_value, needs, types_at, ver)
from host.compiler.frontend import is_dynamic_dim
from host.compiler.graphs import subgraphs
from host.compiler.optable.rows import LEFT_OUT, RULES
from host.compiler.profiles import Version, format_version, max_parser_opset

__all__ = ["Check", "Context", "Rule", "MAC_OPS", "OP_TABLE", "FLOAT_TYPES", "check_node", "table_rows",
           "min_version_for", "first_version_taking", "outer_scope_inputs", "LEFT_OUT"]

FLOAT_TYPES = frozenset({"float32", "float16"})
MAC_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
OP_TABLE: Dict[str, Rule] = {r.op: r for r in RULES}
_RULES = RULES  # the seed's name for the row list


def min_version_for(op: str) -> Optional[str]:
    """The first TensorRT version whose parser takes ``op`` at all (None: no version in the table)."""
    rule = OP_TABLE.get(op)
    return format_version(rule.min_trt) if rule else None


# -- tensor positions: which ladder a node's input/output is judged by

def _schema(op: str, opset: int):
    try:
        return onnx.defs.get_schema(op, max_inclusive_version=opset)
    except Exception:  # noqa: BLE001 - SchemaError
        return None


def _is_index_param(schema, type_str: str) -> bool:
    """A position the op itself fixes to int/bool (Gather's indices, Shape's output, a comparison's result)."""
    if type_str.startswith("tensor("):
        allowed = {type_str}
    else:
        allowed = next((set(tc.allowed_type_strs) for tc in schema.type_constraints
                        if tc.type_param_str == type_str), set())
    return bool(allowed) and allowed <= {"tensor(int32)", "tensor(int64)", "tensor(bool)"}


def _positions(node: onnx.NodeProto, ctx: Context, rule: Rule):
    """(name, key, ladder or None) for each non-constant input and each output; None: an index position."""
    schema = _schema(node.op_type, ctx.model_opset)
    for kind, names, params in (("in", node.input, schema.inputs if schema else []),
                                ("out", node.output, schema.outputs if schema else [])):
        for i, name in enumerate(names):
            if not name or (kind == "in" and name in ctx.constants):
                continue
            key = f"{kind}{i}"
            if key in rule.io_types:
                yield name, key, rule.io_types[key]
                continue
            p = params[min(i, len(params) - 1)] if params else None
            if p is not None and _is_index_param(schema, p.type_str):
                yield name, key, None
            else:
                yield name, key, rule.types


def _type_reason(op: str, rule: Rule, name: str, dt: str, lad: Optional[Ladder], ctx: Context) -> Optional[str]:
    if dt == "?" or dt.startswith("onnx:"):
        return f"{op}: {name!r} is not a tensor of a type the op table knows ({dt})"
    if lad is None:  # index/flag position
        if dt in INDEX_TYPES:
            return None
        return f"{op} on {dt} tensor {name!r} is not offloaded (TensorRT takes int32/int64/bool there)"
    taken = types_at(lad, ctx.trt)
    if dt in taken:
        if ctx.use_implicit_batch and dt in ("int32", "int64"):
            return (f"{op} on {dt} tensor {name!r} is not offloaded with use_implicit_batch "
                    "(int data, shape tensors among it, is taken in explicit batch only)")
        return None
    later = first_version_with(lad, dt, ctx.trt)
    if later is not None:
        return needs(f"{op} on {dt} tensor {name!r}", later, ctx)
    names = "/".join(sorted(types_at(lad, (99, 0, 0)), key=_dtype_order)) or "no"
    return f"{op} on {dt} tensor {name!r} is not offloaded (TensorRT takes {names} there)"


def _dtype_order(dt: str) -> tuple:
    order = ["float32", "float16", "int32", "int64", "bool", "int8", "uint8"]
    return (order.index(dt) if dt in order else len(order), dt)


# -- subgraphs (If / Loop bodies)

def outer_scope_inputs(node: onnx.NodeProto) -> List[str]:
    """Names a node's subgraphs read from the enclosing graph (recursively), in first-use order."""
    out: List[str] = []

    def walk(g: onnx.GraphProto, bound: Set[str]) -> None:
        bound = bound | {i.name for i in g.input} | {i.name for i in g.initializer}
        for n in g.node:
            for t in n.input:
                if t and t not in bound and t not in out:
                    out.append(t)
            for _, sub in subgraphs(n):
                walk(sub, bound)
            bound = bound | {t for t in n.output if t}

    for _, g in subgraphs(node):
        walk(g, set())
    return out


def _vi_type(vi: onnx.ValueInfoProto) -> Optional[Tuple[str, list]]:
    if not vi.type.HasField("tensor_type"):
        return None
    t = vi.type.tensor_type
    try:
        dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)).name
    except Exception:  # noqa: BLE001
        dt = f"onnx:{t.elem_type}"
    if not t.HasField("shape"):
        return dt, None
    return dt, [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]


def _constant_value(node: onnx.NodeProto) -> Optional[onnx.TensorProto]:
    """A Constant node's value as a tensor, whichever value attribute it uses (None: sparse or string)."""
    name = node.output[0]
    for a in node.attribute:
        if a.name == "value":
            return a.t
        if a.name in ("value_float", "value_floats", "value_int", "value_ints"):
            v = onnx.helper.get_attribute_value(a)
            arr = np.array(v, np.float32 if "float" in a.name else np.int64)
            return numpy_helper.from_array(arr, name)
    return None


def _inner_context(g: onnx.GraphProto, ctx: Context) -> Context:
    types = dict(ctx.types)
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = _vi_type(vi)
        if t is not None:
            types[vi.name] = t
    inits = dict(ctx.initializers)
    for init in g.initializer:
        inits[init.name] = init
        types[init.name] = (np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)).name, list(init.dims))
    for n in g.node:
        if n.op_type == "Constant" and n.output:
            value = _constant_value(n)
            if value is not None:
                inits[n.output[0]] = value
                types[n.output[0]] = (np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.data_type)).name,
                                      list(value.dims))
    constants = set(ctx.constants) | set(inits)
    return dataclasses.replace(ctx, types=types, constants=constants, initializers=inits, in_subgraph=True)


def _subgraph_reason(node: onnx.NodeProto, ctx: Context, exclude: Sequence[str]) -> Optional[str]:
    for attr_name, g in subgraphs(node):
        inner = _inner_context(g, ctx)
        for n in g.node:
            r = check_node(n, inner, exclude)
            if r:
                return f"{node.op_type} is not offloaded: its {attr_name} holds {n.op_type} ({r})"
    return None


# -- implicit batch (TensorRT < 10 only): the first dim of every tensor is the batch, untouchable

_DEFAULT_AXIS = {"Split": 0, "Gather": 0, "GatherElements": 0, "ArgMax": 0, "ArgMin": 0, "TopK": -1,
                 "LpNormalization": -1, "ScatterElements": 0, "Scatter": 0, "OneHot": -1}


def _implicit_batch_reason(node: onnx.NodeProto, rule: Rule, ctx: Context) -> Optional[str]:
    if not ctx.use_implicit_batch:
        return None
    op = node.op_type
    rank = ctx.rank(node.input[0]) if node.input else 0
    axes = None
    if rule.batch_axis_attr:
        axes_input = 1 if rule.batch_axis_attr == "axes" else None
        axes = axes_of(node, ctx, rule.batch_axis_attr, axes_input)
        has_axes_input = axes_input is not None and len(node.input) > 1 and bool(node.input[1])
        if axes is None and op in _DEFAULT_AXIS:
            axes = [_DEFAULT_AXIS[op]]
        if axes is None and op in ("Softmax", "LogSoftmax", "Hardmax"):
            axes = [-1 if ctx.model_opset >= 13 else 1]
        if axes is None and op == "MeanVarianceNormalization":
            axes = [0, 2, 3]
        if axes is None and has_axes_input:
            return f"{op} over axes the op table cannot read may touch the batch axis (use_implicit_batch)"
        if axes is None and op.startswith("Reduce"):
            return f"{op} over all axes touches the batch axis (use_implicit_batch)"
        if axes is None and op == "Squeeze":
            return "Squeeze of every size-1 axis may touch the batch axis (use_implicit_batch)"
    if op == "CumSum":
        v = input_value(node, 1, ctx)
        axes = None if v is None else [int(np.atleast_1d(v)[0])]
        if axes is None:
            return "CumSum over an axis the op table cannot read may touch the batch axis (use_implicit_batch)"
    if axes and any(a == 0 or (a < 0 and rank and a + rank == 0) for a in axes):
        return f"{op} along axis 0 touches the batch axis (use_implicit_batch)"
    if op == "Transpose":
        perm = attr(node, "perm")
        if perm is None or perm[0] != 0:
            return "Transpose that moves the batch axis is not offloaded (use_implicit_batch)"
    if op == "Reshape" and node.output:
        src, dst = ctx.shape(node.input[0]) or [None], ctx.shape(node.output[0]) or [None]
        if not src or not dst or src[0] != dst[0]:
            return "Reshape that changes the batch axis is not offloaded (use_implicit_batch)"
    if op == "Tile":
        reps = input_value(node, 1, ctx)
        if reps is None or int(np.atleast_1d(reps)[0]) != 1:
            return "Tile that may repeat the batch axis is not offloaded (use_implicit_batch)"
    if op in ("Upsample", "Resize"):
        for pos in (1, 2, 3):
            v = input_value(node, pos, ctx)
            if v is not None and v.size == rank and v.dtype.kind == "f" and float(v.flat[0]) != 1.0:
                return f"{op} that scales the batch axis is not offloaded (use_implicit_batch)"
    if op == "Trilu" and rank <= 2:
        return "Trilu on a rank-2 tensor works on the batch axis (use_implicit_batch)"
    return None


# -- the check

def check_node(node: onnx.NodeProto, ctx: Context, exclude: Sequence[str] = ()) -> Optional[str]:
    """None if TensorRT of ``ctx.trt`` takes this node, else the reason it stays in TVM."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return f"{op} from domain {node.domain!r} is not in the TensorRT op table"
    if op in exclude:
        return f"{op} kept in TVM on request (--no-offload {op})"
    rule = OP_TABLE.get(op)
    if rule is None:
        return f"{op} is not in the TensorRT op table"
    if ctx.trt < rule.min_trt:
        return needs(op.lower() if rule.from_seed else op, rule.min_trt, ctx)
    seg_opset = min(ctx.model_opset, ctx.parser_opset) if ctx.model_opset else ctx.parser_opset
    schema = _schema(op, seg_opset)
    if schema is None:
        return (f"{op} exists only from an opset newer than {ctx.parser_opset}, the highest "
                f"TensorRT {format_version(ctx.trt)}'s parser reads")
    if schema.deprecated:
        return (f"{op} is deprecated at opset {seg_opset} (the segment's opset for TensorRT "
                f"{format_version(ctx.trt)}); ONNX redefined it at a newer opset than the parser reads")
    if ctx.use_implicit_batch and rule.explicit_batch_only:
        return f"{op} is not offloaded with use_implicit_batch (it needs explicit batch)"
    for pos in rule.const_inputs:
        name = node.input[pos] if pos < len(node.input) else ""
        if not name or name in ctx.constants or (pos not in rule.shape_inputs and name in ctx.quantized_weights):
            continue
        since = rule.shape_inputs.get(pos)
        what = f"{op} input {pos} ({name!r}) is computed at run time"
        if since is None:
            return f"{what}; TensorRT needs it constant"
        if ctx.use_implicit_batch:
            return f"{what}; TensorRT takes it as a shape tensor in explicit batch only (use_implicit_batch)"
        if ctx.trt < since:
            return f"{what}; TensorRT >= {ver(since)} takes it as a shape tensor, target is {ver(ctx.trt)}"
    data_inputs = [n for n, key, _ in _positions(node, ctx, rule) if key.startswith("in")]
    for name, key, lad in _positions(node, ctx, rule):
        reason = _type_reason(op, rule, name, ctx.dtype(name), lad, ctx)
        if reason:
            return reason
        shape = ctx.shape(name)
        if shape is None and not ctx.in_subgraph:  # inside a branch, TensorRT works the shapes out itself
            return f"{op}: the shape of {name!r} is not known at compile time"
        if not ctx.in_subgraph and any(isinstance(d, str) and not is_dynamic_dim(d) for d in shape):
            return f"{op}: the shape of {name!r} is not known at compile time"
    outer = [t for t in outer_scope_inputs(node) if t not in ctx.constants]
    qdq_weight = op in ("QuantizeLinear", "DequantizeLinear") and any(o in ctx.quantized_weights for o in node.output)
    if not data_inputs and not outer and not ctx.in_subgraph and not qdq_weight:
        return f"{op} has only constant inputs (folded by TVM instead)"
    reason = _implicit_batch_reason(node, rule, ctx)
    if reason:
        return reason
    for check in rule.checks:
        reason = check(node, ctx)
        if reason:
            return reason
    return _subgraph_reason(node, ctx, exclude)


def _versions() -> List[Version]:
    from host.compiler.optable import base

    vs = {getattr(base, n) for n in dir(base) if n.startswith("V") and n[1:].isdigit()}
    for r in RULES:
        vs.add(r.min_trt)
        vs.update(v for v, _ in r.types)
        vs.update(r.shape_inputs.values())
    return sorted(vs)


def first_version_taking(node: onnx.NodeProto, ctx: Context, exclude: Sequence[str] = ()) -> Optional[str]:
    """The first TensorRT version after ``ctx.trt`` whose table takes this very node (attributes, types,
    opset), or None when no version in the table does. Implicit batch is kept below 10 and dropped from 10."""
    for v in _versions():
        if v <= ctx.trt:
            continue
        c = dataclasses.replace(ctx, trt=v, parser_opset=max_parser_opset(v),
                                use_implicit_batch=ctx.use_implicit_batch and v < V1000)
        if check_node(node, c, exclude) is None:
            return format_version(v)
    return None


def _ladder_text(lad: Ladder) -> str:
    steps = []
    for v, ts in lad:
        names = " ".join(sorted(ts, key=_dtype_order)) or "-"
        steps.append(names if v == (0, 0, 0) else f"{format_version(v)}: {names}")
    return "; ".join(steps)


def table_rows() -> List[Dict[str, str]]:
    """The op table for docs and ``deploy inspect --ops``; ``seed`` is "-" for rows the seed lacked."""
    rows = []
    for r in RULES:
        rows.append({"op": r.op, "seed": r.seed, "from_seed": "yes" if r.from_seed else "no",
                     "min_trt": format_version(r.min_trt), "types": _ladder_text(r.types),
                     "constant_inputs": ", ".join(str(i) for i in r.const_inputs if i not in r.shape_inputs),
                     "shape_tensor_inputs": ", ".join(f"{i} (from {format_version(v)})"
                                                      for i, v in sorted(r.shape_inputs.items())),
                     "explicit_batch_only": "yes" if r.explicit_batch_only else "",
                     "source": r.source or "seed", "note": r.note})
    return rows
