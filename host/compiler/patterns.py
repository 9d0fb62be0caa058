"""The TensorRT op table: which ONNX node a TensorRT version's ONNX parser takes, and why not.

Each rule carries the seed's op name (``tensorrt.<op>`` in TVM's contrib table), the ONNX op it is
written as, the minimum TensorRT version, and attribute checks. A check returns ``None`` (offload)
or a one-line reason (keep in TVM).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import onnx
from onnx import helper

from host.compiler.profiles import Version, format_version

FLOAT_TYPES = frozenset({"float32", "float16"})
MAC_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


@dataclass
class Context:
    """What a check may look at: tensor types, constants, target, options."""

    types: Dict[str, Tuple[str, list]]
    constants: Set[str]
    trt: Version
    parser_opset: int
    model_opset: int
    use_implicit_batch: bool = False

    def rank(self, name: str) -> int:
        return len(self.types.get(name, ("", []))[1])

    def dtype(self, name: str) -> str:
        return self.types.get(name, ("?", []))[0]


Check = Callable[[onnx.NodeProto, Context], Optional[str]]


@dataclass
class Rule:
    op: str                      # ONNX op type
    seed: str                    # name in the seed's / TVM's TensorRT table
    min_trt: Version = (5, 1, 5)
    const_inputs: Sequence[int] = ()   # input positions that must be constants (weights, shapes)
    checks: List[Check] = field(default_factory=list)
    batch_axis_attr: Optional[str] = None  # attribute holding an axis/axes (implicit-batch check)
    moves_data: bool = False     # pure data movement: int32 tensors are fine from TensorRT 8.0


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _spatial_rank(node: onnx.NodeProto, ctx: Context) -> int:
    k = _attr(node, "kernel_shape")
    if k is not None:
        return len(k)
    return max(ctx.rank(node.input[0]) - 2, 0)


def _conv_like(min3d: Version = (6, 0, 1)) -> Check:
    def check(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
        r = _spatial_rank(node, ctx)
        if r > 3 or r < 1:
            return f"{node.op_type} with {r} spatial dims is not supported by TensorRT"
        if r == 3 and ctx.trt < min3d:
            return (f"3-d {node.op_type} needs TensorRT >= {format_version(min3d)}, "
                    f"target is {format_version(ctx.trt)}")
        return None
    return check


def _no_dilation(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    d = _attr(node, "dilations")
    if d and any(x != 1 for x in d):
        return f"{node.op_type} with dilations {list(d)} is not supported by the TensorRT ONNX parser"
    return None


def _single_output(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    if len([o for o in node.output if o]) > 1:
        return f"{node.op_type} with more than one output is not offloaded (TensorRT's parser gives only the first)"
    return None


def _bn_inference(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    if _attr(node, "training_mode", 0):
        return "BatchNormalization in training mode is not offloaded"
    return _single_output(node, ctx)


def _pad_mode(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    mode = _attr(node, "mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode == "constant":
        return None
    need = {"reflect": (8, 5, 0), "edge": (8, 5, 0), "wrap": (10, 0, 0)}.get(mode)
    if need is not None and ctx.trt >= need:
        return None
    if need is None:
        return f"Pad mode {mode!r} is not supported by TensorRT"
    return f"Pad mode {mode!r} needs TensorRT >= {format_version(need)}, target is {format_version(ctx.trt)}"


def _resize_mode(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    mode = _attr(node, "mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("nearest", "linear"):
        return f"Resize mode {mode!r} is not offloaded (TensorRT takes nearest and linear)"
    ctm = _attr(node, "coordinate_transformation_mode", b"half_pixel")
    ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
    if ctm == "tf_crop_and_resize":
        return "Resize with tf_crop_and_resize is not offloaded"
    if _attr(node, "antialias", 0):
        return "Resize with antialias is not offloaded"
    if _attr(node, "axes") is not None or _attr(node, "keep_aspect_ratio_policy", b"stretch") not in (b"stretch", "stretch"):
        return "Resize with axes/keep_aspect_ratio_policy is not offloaded"
    return None


def _gemm_rank(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    ranks = [ctx.rank(i) for i in node.input[:2]]
    if any(r == 0 for r in ranks):
        return f"{node.op_type} on scalars is not offloaded"
    return None


def _pool_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    if node.op_type == "MaxPool" and _attr(node, "storage_order", 0):
        return "MaxPool with storage_order=1 is not offloaded"
    if node.op_type == "MaxPool":
        r = _no_dilation(node, ctx)
        if r:
            return r
    return _single_output(node, ctx)


def _reduce_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    if _attr(node, "noop_with_empty_axes", 0):
        return f"{node.op_type} with noop_with_empty_axes is not offloaded"
    return None


def _rank_at_least(n: int) -> Check:
    def check(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
        if any(ctx.rank(i) < n for i in node.input[:1]):
            return f"{node.op_type} on a tensor of rank < {n} is not offloaded"
        return None
    return check


def _split_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    if _attr(node, "num_outputs") is not None and len(node.input) < 2:
        # opset 18 uneven split by num_outputs: fine for TensorRT >= 8.6's parser only
        if ctx.trt < (8, 6, 0):
            return "Split with num_outputs needs TensorRT >= 8.6.0"
    return None


_V515, _V601, _V700 = (5, 1, 5), (6, 0, 1), (7, 0, 0)

_RULES: List[Rule] = [
    # activations
    Rule("Relu", "nn.relu", (5, 0, 0)),
    Rule("Sigmoid", "sigmoid", (5, 0, 0)),
    Rule("Tanh", "tanh", (5, 0, 0)),
    Rule("LeakyRelu", "nn.leaky_relu", _V515),
    Rule("Clip", "clip", _V515, const_inputs=(1, 2)),
    Rule("Elu", "nn.elu", _V515),
    Rule("Selu", "nn.selu", _V515),
    Rule("Softplus", "nn.softplus", _V515),
    Rule("HardSigmoid", "nn.hard_sigmoid", _V515),
    Rule("PRelu", "nn.prelu", _V515, const_inputs=(1,)),
    Rule("Gelu", "nn.gelu", (10, 0, 0)),
    # normalization / softmax
    Rule("BatchNormalization", "nn.batch_norm", (5, 0, 0), const_inputs=(1, 2, 3, 4), checks=[_bn_inference]),
    Rule("LayerNormalization", "nn.layer_norm", (8, 6, 0), const_inputs=(1, 2), checks=[_single_output]),
    Rule("InstanceNormalization", "nn.instance_norm", (5, 1, 5), const_inputs=(1, 2)),
    Rule("Softmax", "nn.softmax", (5, 0, 0), batch_axis_attr="axis"),
    Rule("LogSoftmax", "nn.log_softmax", (5, 0, 0), batch_axis_attr="axis"),
    Rule("LRN", "nn.lrn", _V515),
    # convolutions, dense
    Rule("Conv", "nn.conv1d/conv2d/conv3d", (5, 0, 0), const_inputs=(1, 2), checks=[_conv_like()]),
    Rule("ConvTranspose", "nn.conv1d/2d/3d_transpose", (5, 0, 0), const_inputs=(1, 2),
         checks=[_conv_like(), _no_dilation]),
    Rule("Gemm", "nn.dense", (5, 0, 0), checks=[_gemm_rank]),
    Rule("MatMul", "nn.matmul/nn.batch_matmul", (5, 0, 0), checks=[_gemm_rank]),
    # binaries
    Rule("Add", "add/nn.bias_add", (5, 0, 0)),
    Rule("Sub", "subtract", (5, 0, 0)),
    Rule("Mul", "multiply", (5, 0, 0)),
    Rule("Div", "divide", (5, 0, 0)),
    Rule("Pow", "power", (5, 0, 0)),
    Rule("Max", "maximum", (5, 0, 0)),
    Rule("Min", "minimum", (5, 0, 0)),
    Rule("Sum", "add (variadic)", (5, 0, 0)),
    Rule("Mean", "mean (variadic)", (5, 0, 0)),
    # pools
    Rule("MaxPool", "nn.max_pool1d/2d/3d", (5, 0, 0), checks=[_conv_like(), _pool_ok]),
    Rule("AveragePool", "nn.avg_pool1d/2d/3d", (5, 0, 0), checks=[_conv_like(), _pool_ok]),
    Rule("GlobalAveragePool", "nn.global_avg_pool2d/adaptive_avg_pool", (5, 0, 0), checks=[_conv_like()]),
    Rule("GlobalMaxPool", "nn.global_max_pool2d/adaptive_max_pool", (5, 0, 0), checks=[_conv_like()]),
    # unary math
    Rule("Exp", "exp", (5, 0, 0)),
    Rule("Log", "log", (5, 0, 0)),
    Rule("Sqrt", "sqrt", (5, 0, 0)),
    Rule("Abs", "abs", (5, 0, 0)),
    Rule("Neg", "negative", (5, 0, 0)),
    Rule("Reciprocal", "reciprocal", (5, 0, 0)),
    Rule("Sin", "sin", _V515),
    Rule("Cos", "cos", _V515),
    Rule("Atan", "atan", _V515),
    Rule("Ceil", "ceil", _V515),
    Rule("Floor", "floor", _V515),
    Rule("Erf", "erf", _V700),
    # shape manipulation
    Rule("Flatten", "nn.batch_flatten", (5, 0, 0), batch_axis_attr="axis", moves_data=True),
    Rule("Unsqueeze", "expand_dims", (5, 0, 0), const_inputs=(1,), batch_axis_attr="axes", moves_data=True),
    Rule("Squeeze", "squeeze", (5, 0, 0), const_inputs=(1,), batch_axis_attr="axes", moves_data=True),
    Rule("Concat", "concatenate", (5, 0, 0), batch_axis_attr="axis", moves_data=True),
    Rule("Transpose", "transpose/layout_transform", (5, 0, 0), moves_data=True),
    Rule("Reshape", "reshape", (5, 0, 0), const_inputs=(1,), moves_data=True),
    Rule("Pad", "nn.pad", (5, 0, 0), const_inputs=(1, 2, 3), checks=[_pad_mode], moves_data=True),
    Rule("Split", "split", _V515, const_inputs=(1,), batch_axis_attr="axis", checks=[_split_ok], moves_data=True),
    Rule("Slice", "strided_slice", _V515, const_inputs=(1, 2, 3, 4), moves_data=True),
    Rule("Identity", "identity", (5, 0, 0), moves_data=True),
    Rule("Dropout", "nn.dropout (inference)", (5, 0, 0), const_inputs=(1, 2), checks=[_single_output]),
    # reductions
    Rule("ReduceSum", "sum", (5, 0, 0), const_inputs=(1,), batch_axis_attr="axes", checks=[_reduce_ok]),
    Rule("ReduceProd", "prod", (5, 0, 0), const_inputs=(1,), batch_axis_attr="axes", checks=[_reduce_ok]),
    Rule("ReduceMax", "max", (5, 0, 0), const_inputs=(1,), batch_axis_attr="axes", checks=[_reduce_ok]),
    Rule("ReduceMin", "min", (5, 0, 0), const_inputs=(1,), batch_axis_attr="axes", checks=[_reduce_ok]),
    Rule("ReduceMean", "mean", (5, 0, 0), const_inputs=(1,), batch_axis_attr="axes", checks=[_reduce_ok]),
    # resampling
    Rule("Resize", "image.resize", _V700, const_inputs=(1, 2, 3), checks=[_resize_mode]),
]

OP_TABLE: Dict[str, Rule] = {r.op: r for r in _RULES}


def _implicit_batch_reason(node: onnx.NodeProto, rule: Rule, ctx: Context) -> Optional[str]:
    if not ctx.use_implicit_batch:
        return None
    if rule.batch_axis_attr:
        v = _attr(node, rule.batch_axis_attr)
        if v is None and rule.batch_axis_attr == "axes" and rule.op.startswith("Reduce"):
            return f"{node.op_type} over all axes touches the batch axis (use_implicit_batch)"
        axes = v if isinstance(v, (list, tuple)) else ([] if v is None else [v])
        rank = ctx.rank(node.input[0]) if node.input else 0
        if any(a == 0 or (a < 0 and rank and a + rank == 0) for a in axes):
            return f"{node.op_type} along axis 0 touches the batch axis (use_implicit_batch)"
    if node.op_type == "Transpose":
        perm = _attr(node, "perm")
        if perm is None or perm[0] != 0:
            return "Transpose that moves the batch axis is not offloaded (use_implicit_batch)"
    return None


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
        return (f"{op.lower()} needs TensorRT >= {format_version(rule.min_trt)}, "
                f"target is {format_version(ctx.trt)}")
    try:
        schema = onnx.defs.get_schema(op, max_inclusive_version=ctx.parser_opset)
    except Exception:  # noqa: BLE001 - SchemaError: op newer than the parser's opset
        schema = None
    if schema is None:
        return (f"{op} exists only from an opset newer than {ctx.parser_opset}, the highest "
                f"TensorRT {format_version(ctx.trt)}'s parser reads")
    for pos in rule.const_inputs:
        if pos < len(node.input) and node.input[pos] and node.input[pos] not in ctx.constants:
            return f"{op} input {pos} ({node.input[pos]!r}) is computed at run time; TensorRT needs it constant"
    data_inputs = [n for i, n in enumerate(node.input) if n and i not in rule.const_inputs and n not in ctx.constants]
    for name in list(data_inputs) + [o for o in node.output if o]:
        dt = ctx.dtype(name)
        if dt not in FLOAT_TYPES and not (rule.moves_data and dt == "int32" and ctx.trt >= (8, 0, 0)):
            return f"{op} on {dt} tensor {name!r} is not offloaded (TensorRT segments take float32/float16 data)"
        shape = ctx.types.get(name, ("", None))[1]
        if shape is None or any(isinstance(d, str) and d != "batch" for d in shape):
            return f"{op}: the shape of {name!r} is not known at compile time"
    if not data_inputs:
        return f"{op} has only constant inputs (folded by TVM instead)"
    reason = _implicit_batch_reason(node, rule, ctx)
    if reason:
        return reason
    for check in rule.checks:
        reason = check(node, ctx)
        if reason:
            return reason
    return None


def table_rows() -> List[Dict[str, str]]:
    """The op table for docs and ``deploy inspect --ops``."""
    return [{"op": r.op, "seed": r.seed, "min_trt": format_version(r.min_trt)} for r in _RULES]
