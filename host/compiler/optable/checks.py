"""Attribute checks of the op table: a check returns None (the parser takes the node) or a one-line reason.

The restrictions are those onnx-tensorrt's ``docs/operators.md`` states per release (its
"Restrictions" column); where a list drops a restriction, the check applies only below that
release and says which version takes the node.
"""
from __future__ import annotations

import re
from typing import Optional

import numpy as np
import onnx

from host.compiler.optable.base import (V820, V840, V850, V1000, Check, Context, attr, input_value, needs,
                                        ver)


# -- convolution, pooling, dense (seed)

def spatial_rank(node: onnx.NodeProto, ctx: Context) -> int:
    k = attr(node, "kernel_shape")
    if k is not None:
        return len(k)
    return max(ctx.rank(node.input[0]) - 2, 0)


def conv_like(min3d=(6, 0, 1)) -> Check:
    def check(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
        r = spatial_rank(node, ctx)
        if r > 3 or r < 1:
            return f"{node.op_type} with {r} spatial dims is not supported by TensorRT"
        if r == 3 and ctx.trt < min3d:
            return needs(f"3-d {node.op_type}", min3d, ctx)
        return None
    return check


def no_dilation(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    d = attr(node, "dilations")
    if d and any(x != 1 for x in d):
        return f"{node.op_type} with dilations {list(d)} is not supported by the TensorRT ONNX parser"
    return None


def single_output(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    if len([o for o in node.output if o]) > 1:
        return f"{node.op_type} with more than one output is not offloaded (TensorRT's parser gives only the first)"
    return None


def bn_inference(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    if attr(node, "training_mode", 0):
        return "BatchNormalization in training mode is not offloaded"
    return single_output(node, ctx)


def gemm_rank(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    if any(ctx.rank(i) == 0 for i in node.input[:2]):
        return f"{node.op_type} on scalars is not offloaded"
    return None


def pool_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    """MaxPool: no Indices output, no storage order; every pool: dilations empty or all ones (10.x list)."""
    if node.op_type == "MaxPool" and attr(node, "storage_order", 0):
        return "MaxPool with storage_order=1 is not offloaded"
    r = no_dilation(node, ctx)
    if r:
        return r
    return single_output(node, ctx)


def reduce_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    """``noop_with_empty_axes`` only matters when no axes are given (then the op is an identity that
    TensorRT's parser would reduce instead); with axes present it means nothing."""
    if not attr(node, "noop_with_empty_axes", 0):
        return None
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        given = ctx.value(node.input[1])
        axes = None if given is None else given.tolist()
    if axes:
        return None
    return f"{node.op_type} with noop_with_empty_axes and no axes is not offloaded"


def rank_at_least(n: int) -> Check:
    def check(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
        if any(ctx.rank(i) < n for i in node.input[:1]):
            return f"{node.op_type} on a tensor of rank < {n} is not offloaded"
        return None
    return check


def split_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    """Opset 18's num_outputs: a segment written below opset 18 (the parser's opset) says the same with
    explicit sizes (emit), which needs the split dim before run time."""
    n = attr(node, "num_outputs")
    if n is None or len(node.input) > 1 or min(ctx.model_opset, ctx.parser_opset) >= 18:
        return None
    shape = ctx.shape(node.input[0]) or []
    axis = attr(node, "axis", 0)
    dim = shape[axis] if -len(shape) <= axis < len(shape) else None
    if not isinstance(dim, int) or dim <= 0:
        return (f"Split with num_outputs over a dim known only at run time is not offloaded below opset 18 "
                f"(TensorRT {ver(ctx.trt)} parses opset <= {ctx.parser_opset})")
    if dim <= -(-dim // n) * (n - 1):
        return f"Split of {dim} into {n} outputs leaves an empty output"
    return None


# -- padding and resampling (seed, with the lists' modes)

def pad_mode(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    mode = attr(node, "mode", "constant")
    if mode == "constant":
        return None
    # reflect / edge are ISliceLayer's kREFLECT / kCLAMP from the 8.2 parser on (its Pad importer; the 8.0 one
    # takes constant 0 padding only); the lists themselves name no Pad mode
    need = {"reflect": V820, "edge": V820, "wrap": V1000}.get(mode)
    if need is not None and ctx.trt >= need:
        return None
    if need is None:
        return f"Pad mode {mode!r} is not supported by TensorRT"
    return needs(f"Pad mode {mode!r}", need, ctx)


_RESIZE_CTM = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")


def resize_mode(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    mode = attr(node, "mode", "nearest")
    if mode not in ("nearest", "linear"):
        return f"Resize mode {mode!r} is not offloaded (TensorRT takes nearest and linear)"
    ctm = attr(node, "coordinate_transformation_mode", "half_pixel")
    if ctm == "tf_crop_and_resize":
        return "Resize with tf_crop_and_resize is not offloaded"
    if ctm not in _RESIZE_CTM:
        return (f"Resize coordinate_transformation_mode {ctm!r} is not offloaded "
                f"(TensorRT takes {', '.join(_RESIZE_CTM)})")
    if attr(node, "antialias", 0):
        return "Resize with antialias is not offloaded"
    if attr(node, "axes") is not None or attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        return "Resize with axes/keep_aspect_ratio_policy is not offloaded"
    return None


def upsample_mode(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    mode = attr(node, "mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        return f"Upsample mode {mode!r} is not offloaded (TensorRT takes nearest and linear)"
    return None


def grid_sample_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    """4-d input (10.0 list). Opset 20 renamed the modes (bilinear -> linear, bicubic -> cubic); a segment
    written below 20 keeps the node's attributes as they are, so the new names cannot go there."""
    if ctx.rank(node.input[0]) != 4:
        return f"GridSample on a {ctx.rank(node.input[0])}-d input is not offloaded (TensorRT takes 4-d input)"
    mode = attr(node, "mode")  # absent: each opset's default is the same (bi)linear mode
    seg_opset = min(ctx.model_opset, ctx.parser_opset)
    if mode in ("linear", "cubic") and seg_opset < 20:
        return (f"GridSample mode {mode!r} (opset-20 name) is not written at the segment's opset {seg_opset}; "
                f"{needs('it', V1000, ctx)}")
    return None


def deform_conv_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    r = spatial_rank(node, ctx)
    if r not in (1, 2):
        return f"DeformConv with {r} spatial dims is not offloaded (TensorRT takes 1-d and 2-d)"
    pads = attr(node, "pads")
    if pads and list(pads[:len(pads) // 2]) != list(pads[len(pads) // 2:]):
        return f"DeformConv with pads {list(pads)} is not offloaded (begin and end pads must be equal)"
    return None


# -- quantization

def zero_point_zero(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    """QuantizeLinear/DequantizeLinear: zero point absent or all zeros, no blocked quantization."""
    if attr(node, "block_size", 0):
        return f"{node.op_type} with block_size is not offloaded (blocked quantization)"
    if len(node.input) < 3 or not node.input[2]:
        return None
    zp = ctx.value(node.input[2])
    if zp is None:
        return f"{node.op_type} zero point {node.input[2]!r} has no value the op table can read; TensorRT needs it 0"
    if np.any(zp.astype(np.float64) != 0):
        return f"{node.op_type} with a non-zero zero point is not offloaded (TensorRT takes symmetric quantization)"
    return None


# -- recurrent

def rnn_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    op = node.op_type
    if attr(node, "layout", 0):
        return f"{op} with layout=1 is not offloaded (the lists take layout 0)"
    if op == "LSTM" and attr(node, "input_forget", 0):
        return "LSTM with input_forget=1 is not offloaded"
    acts = attr(node, "activations")
    if attr(node, "direction", "forward") == "bidirectional" and acts:
        acts = [a.decode() if isinstance(a, bytes) else a for a in acts]
        half = len(acts) // 2
        if acts[:half] != acts[half:]:
            return f"bidirectional {op} with different forward and reverse activations is not offloaded"
    return None


# -- control flow (the nodes inside are judged by the table itself: patterns.check_node)

def if_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    then_g, else_g = attr(node, "then_branch"), attr(node, "else_branch")
    if then_g is None or else_g is None:
        return "If without both branches is not offloaded"
    then_names = {o.name for o in then_g.output}
    same = [o.name for o in else_g.output if o.name in then_names]
    if same:
        return f"If whose branches both output {same[0]!r} is not offloaded (TensorRT needs different names)"
    for a, b in zip(then_g.output, else_g.output):
        sa, sb = _vi_shape(a), _vi_shape(b)
        if sa is None or sb is None:
            continue
        if ctx.trt >= V1000 and len(sa) != len(sb):
            return f"If whose branches give ranks {len(sa)} and {len(sb)} is not offloaded (TensorRT needs the same rank)"
        if ctx.trt < V1000 and not _broadcastable(sa, sb):
            return f"If whose branches give shapes {sa} and {sb} is not offloaded (TensorRT needs broadcastable shapes)"
    return None


def loop_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    body = attr(node, "body")
    if body is None:
        return "Loop without a body is not offloaded"
    n_carried = len(body.input) - 2
    n_scan = len(body.output) - 1 - n_carried
    trip = node.input[0] if node.input else ""
    if n_scan > 0 and (not trip or trip not in ctx.constants):
        return "Loop with scan outputs needs a constant trip count (TensorRT: scan output length cannot be dynamic)"
    for vin, vout in zip(body.input[2:], body.output[1:1 + n_carried]):
        si, so = _vi_shape(vin), _vi_shape(vout)
        if si is not None and so is not None and len(si) == len(so) and all(
                isinstance(a, int) and isinstance(b, int) for a, b in zip(si, so)) and si != so:
            return (f"Loop whose carried value {vin.name!r} changes shape {si} -> {so} is not offloaded "
                    "(TensorRT needs the same shape in every iteration)")
    return None


def _vi_shape(vi: onnx.ValueInfoProto):
    t = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]


def _broadcastable(a, b) -> bool:
    for x, y in zip(reversed(a), reversed(b)):
        if isinstance(x, int) and isinstance(y, int) and x != y and 1 not in (x, y):
            return False
    return True


# -- indexing, sorting, scatter

def gather_indices_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    """The 8.0 list takes only non-negative Gather indices; 8.2 on takes negative ones."""
    idx = input_value(node, 1, ctx)
    if ctx.trt < (8, 2, 0) and idx is not None and np.any(idx < 0):
        return needs(f"{node.op_type} with negative indices", (8, 2, 0), ctx)
    return None


def topk_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    if ctx.trt >= V1000 and attr(node, "sorted", 1) != 1:
        return "TopK with sorted=0 is not offloaded (TensorRT 10's parser needs sorted=1)"
    k = input_value(node, 1, ctx) if len(node.input) > 1 else np.array(attr(node, "k", 1))
    if k is not None and int(np.atleast_1d(k)[0]) >= 3840:
        return f"TopK with K={int(np.atleast_1d(k)[0])} is not offloaded (TensorRT takes K < 3840)"
    return None


def hardmax_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    shape = ctx.shape(node.input[0]) or []
    axis = attr(node, "axis", -1 if ctx.model_opset >= 13 else 1)
    if shape and not isinstance(shape[axis % len(shape)], int):
        return f"Hardmax over a dimension not known at build time is not offloaded (axis {axis})"
    return None


def no_reduction(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    red = attr(node, "reduction", "none")
    if red != "none":
        return f"{node.op_type} with reduction {red!r} is not offloaded (TensorRT's scatter takes none)"
    return None


def static_input(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    shape = ctx.shape(node.input[0]) or []
    if any(not isinstance(d, int) for d in shape):
        return f"{node.op_type} on an input with run-time dimensions is not offloaded (TensorRT needs them static)"
    return None


def static_before(v) -> Check:
    """ReverseSequence: the lists before ``v`` take no dynamic input shapes."""
    def check(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
        shape = ctx.shape(node.input[0]) or []
        if ctx.trt < v and any(not isinstance(d, int) for d in shape):
            return needs(f"{node.op_type} on a dynamic-shape input", v, ctx)
        return None
    return check


# -- math with conditions

def range_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    """Before 8.4 the lists take float Range only when start, limit and delta are initializers."""
    if ctx.trt < V840 and ctx.dtype(node.input[0]) in ("float32", "float16") and any(
            t not in ctx.constants for t in node.input[:3]):
        return needs("Range on run-time float inputs", V840, ctx)
    return None


_EINSUM_TERM = re.compile(r"[A-Za-z]|\.\.\.")


def einsum_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    """The 8.2-8.6 lists: no ellipsis, no diagonal (repeated index in one operand), no broadcasting."""
    if ctx.trt >= V1000:
        return None
    eq = str(attr(node, "equation", "")).replace(" ", "")
    lhs = eq.split("->")[0]
    if "..." in eq:
        return needs("Einsum with an ellipsis", V1000, ctx)
    sizes = {}
    for term, name in zip(lhs.split(","), node.input):
        letters = _EINSUM_TERM.findall(term)
        if len(set(letters)) != len(letters):
            return needs("Einsum with a diagonal (repeated index in one operand)", V1000, ctx)
        for letter, d in zip(letters, ctx.shape(name) or []):
            if isinstance(d, int) and sizes.setdefault(letter, d) != d:
                return needs("Einsum broadcasting between inputs", V1000, ctx)
    return None


def dropout_inference(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    """10.x list: ``training_mode`` an initializer that is False (it must be constant: const_inputs)."""
    if len(node.input) > 2 and node.input[2]:
        v = ctx.value(node.input[2])
        if v is None or bool(np.atleast_1d(v)[0]):
            return "Dropout in training mode (or with a training_mode the op table cannot read) is not offloaded"
    return single_output(node, ctx)


def constant_ok(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
    for name in ("sparse_value", "value_string", "value_strings"):
        if attr(node, name) is not None:
            return f"Constant with {name} is not offloaded"
    return None


def version_note(v, what: str) -> Check:
    """A restriction lifted at ``v``: refuse below it with the version that takes the node."""
    def check(node: onnx.NodeProto, ctx: Context) -> Optional[str]:
        return needs(f"{node.op_type} {what}", v, ctx) if ctx.trt < v else None
    return check


__all__ = [n for n in dir() if not n.startswith("_")] + ["ver"]
