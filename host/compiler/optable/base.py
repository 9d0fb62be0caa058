"""What a row of the op table is made of: the target context, the rule, data-type ladders, helpers.

Data types are written as tokens (``F`` float32+float16, ``I`` int32+int64, ``B`` bool, ``i8``,
``u8``, ``f32``) and a *ladder* says from which TensorRT version an op takes which of them, as
onnx-tensorrt's ``docs/operators.md`` of each release lists them ("Supported Types"). Before 10.0
the parser casts INT64 to INT32 (the lists' note), so ``I`` covers int64 wherever a list names
INT32; from 10.0 INT64 is native. INT8 is a quantized type (Q/DQ only) in every list, so plain
int8 arithmetic is never offloaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from host.compiler.profiles import Version, format_version

# TensorRT releases whose onnx-tensorrt operator list a row is taken from (release branches 5.1 ... 10.1-GA)
V500, V515, V601, V700, V721 = (5, 0, 0), (5, 1, 5), (6, 0, 1), (7, 0, 0), (7, 2, 1)
V800, V820, V840, V850, V860 = (8, 0, 0), (8, 2, 0), (8, 4, 0), (8, 5, 0), (8, 6, 0)
V910, V920, V1000, V1010 = (9, 1, 0), (9, 2, 0), (10, 0, 0), (10, 1, 0)

_TOKENS: Dict[str, FrozenSet[str]] = {
    "F": frozenset({"float32", "float16"}),
    "f32": frozenset({"float32"}),
    "I": frozenset({"int32", "int64"}),
    "B": frozenset({"bool"}),
    "i8": frozenset({"int8"}),
    "u8": frozenset({"uint8"}),
}
# dtypes of positions the op itself fixes to an index or flag type (Gather's indices, Shape's output,
# comparison results, TopK's indices): taken wherever the op is
INDEX_TYPES = frozenset({"int32", "int64", "bool"})

Ladder = Tuple[Tuple[Version, FrozenSet[str]], ...]


def ladder(first: str, *steps) -> Ladder:
    """``ladder("F", V800, "F I B")``: float before 8.0, float/int/bool from 8.0 on."""
    out = [((0, 0, 0), _types(first))]
    for v, spec in zip(steps[::2], steps[1::2]):
        out.append((v, _types(spec)))
    return tuple(out)


def _types(spec: str) -> FrozenSet[str]:
    acc: Set[str] = set()
    for tok in spec.split():
        acc |= _TOKENS[tok]
    return frozenset(acc)


def types_at(lad: Ladder, trt: Version) -> FrozenSet[str]:
    have: FrozenSet[str] = frozenset()
    for v, ts in lad:
        if trt >= v:
            have = ts
    return have


def first_version_with(lad: Ladder, dtype: str, after: Version) -> Optional[Version]:
    for v, ts in lad:
        if dtype in ts and v > after:
            return v
    return None


# The usual ladders, named for what the ops do (exact per-op ladders are written in the rows)
FLOAT = ladder("F")
ARITH = ladder("F", V800, "F I")              # elementwise math/comparison: INT32 in every 8.x list
MOVES = ladder("F", V800, "F I B")            # data movement: INT32 + BOOL in every 8.x list
SHAPE_TENSORS_FROM = V800                     # first list with types (INT32 shape tensors); explicit batch


@dataclass
class Context:
    """What a check may look at: tensor types, constants (and their values), target, options."""

    types: Dict[str, Tuple[str, list]]
    constants: Set[str]
    trt: Version
    parser_opset: int
    model_opset: int
    use_implicit_batch: bool = False
    initializers: Mapping[str, onnx.TensorProto] = field(default_factory=dict)  # values of constants, by name
    in_subgraph: bool = False     # judging a node inside an If/Loop body (the whole op is offloaded)
    #: weights behind Q -> DQ (explicit INT8): computed by nodes, but TensorRT's parser takes them as weights
    quantized_weights: Set[str] = field(default_factory=set)

    @classmethod
    def for_model(cls, model: onnx.ModelProto, types: Dict[str, Tuple[str, list]], trt: Version,
                  parser_opset: int, model_opset: int, use_implicit_batch: bool = False) -> "Context":
        inits = {i.name: i for i in model.graph.initializer}
        weights: Set[str] = set()
        for n in model.graph.node:  # topological order: Q(weight) comes before its DQ
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input and (
                    n.input[0] in inits or n.input[0] in weights):
                weights.update(o for o in n.output if o)
        return cls(types=types, constants=set(inits), trt=trt, parser_opset=parser_opset,
                   model_opset=model_opset, use_implicit_batch=use_implicit_batch, initializers=inits,
                   quantized_weights=weights)

    def rank(self, name: str) -> int:
        return len(self.types.get(name, ("", []))[1] or [])

    def dtype(self, name: str) -> str:
        return self.types.get(name, ("?", []))[0]

    def shape(self, name: str) -> Optional[list]:
        return self.types.get(name, ("", None))[1]

    def value(self, name: str) -> Optional[np.ndarray]:
        """The value of a constant input, when the context was given it (``initializers``)."""
        t = self.initializers.get(name)
        return None if t is None else numpy_helper.to_array(t)


Check = Callable[[onnx.NodeProto, Context], Optional[str]]


@dataclass
class Rule:
    op: str                      # ONNX op type
    seed: str                    # name in the seed's / TVM's TensorRT table; "-" for rows the seed lacked
    min_trt: Version = V515
    const_inputs: Sequence[int] = ()   # input positions that must be constants (weights, shapes)
    checks: List[Check] = field(default_factory=list)
    batch_axis_attr: Optional[str] = None  # attribute holding an axis/axes (implicit-batch check)
    moves_data: bool = False     # pure data movement (kept for callers; the ladder says the types)
    types: Ladder = FLOAT        # dtypes of the op's data tensors by TensorRT version
    io_types: Mapping[str, Ladder] = field(default_factory=dict)  # "in0"/"out1": a position's own ladder
    shape_inputs: Mapping[int, Version] = field(default_factory=dict)  # may be run-time shape tensors from
    explicit_batch_only: bool = False  # refused with use_implicit_batch (shape tensors, control flow, ...)
    source: str = ""             # the onnx-tensorrt list(s) the row and its restrictions come from
    note: str = ""               # restrictions in short, for the docs

    @property
    def from_seed(self) -> bool:
        return self.seed != "-"


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def ver(v: Version) -> str:
    return format_version(v)


def needs(what: str, v: Version, ctx: Context) -> str:
    """'<what> needs TensorRT >= V, target is T' - the one form for 'a later version takes it'."""
    return f"{what} needs TensorRT >= {ver(v)}, target is {ver(ctx.trt)}"


def input_value(node: onnx.NodeProto, pos: int, ctx: Context) -> Optional[np.ndarray]:
    if pos < len(node.input) and node.input[pos]:
        return ctx.value(node.input[pos])
    return None


def axes_of(node: onnx.NodeProto, ctx: Context, attr_name: str = "axes", input_pos: Optional[int] = 1):
    """Axes from the attribute or, from the opsets that moved it there, the constant input (None: unknown)."""
    v = attr(node, attr_name)
    if v is not None:
        return list(v) if isinstance(v, (list, tuple)) else [v]
    if input_pos is not None:
        arr = input_value(node, input_pos, ctx)
        if arr is not None:
            return [int(x) for x in np.atleast_1d(arr)]
    return None
