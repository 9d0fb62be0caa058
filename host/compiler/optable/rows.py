"""The rows of the TensorRT op table, by family.

Rows with a seed name are the seed's (``tensorrt.<op>`` in TVM's contrib table) with their minimum
versions unchanged; their data types and restrictions now follow the lists. Rows with seed "-"
come from onnx-tensorrt's ``docs/operators.md``: the minimum version is the first release branch
whose list marks the op supported (5.1, 6.0, 7.0, 7.1, 7.2.1, 8.0-GA, 8.2-GA, 8.4-GA, 8.5-GA, 8.6-GA,
9.x, 10.0-GA, 10.1-GA; a branch stands for its first release: 5.1 -> 5.1.5, 6.0 -> 6.0.1, others
X.Y.0), the ladder says the "Supported Types" of each list, and the checks its "Restrictions".
"""
from __future__ import annotations

from typing import List

from host.compiler.optable import checks as c
from host.compiler.optable.base import (ARITH, FLOAT, MOVES, V500, V515, V601, V700, V721, V800, V820, V840,
                                        V850, V860, V910, V920, V1000, V1010, Rule, ladder)

REDUCE = ladder("F", V1000, "F I")       # reductions: INT32/INT64 from the 10.0 list
GATHER = ladder("F", V800, "F I", V850, "F I B")  # BOOL from the 8.5 list
SHAPE_OUT = {"out0": ladder("", V800, "I")}  # a shape tensor: int64 (INT32 before 10) from 8.0

SEED: List[Rule] = [
    # activations
    Rule("Relu", "nn.relu", V500, types=ladder("F", V1000, "F I")),
    Rule("Sigmoid", "sigmoid", V500),
    Rule("Tanh", "tanh", V500),
    Rule("LeakyRelu", "nn.leaky_relu", V515),
    Rule("Clip", "clip", V515, const_inputs=(1, 2)),
    Rule("Elu", "nn.elu", V515),
    Rule("Selu", "nn.selu", V515),
    Rule("Softplus", "nn.softplus", V515),
    Rule("HardSigmoid", "nn.hard_sigmoid", V515),
    Rule("PRelu", "nn.prelu", V515, const_inputs=(1,)),
    Rule("Gelu", "nn.gelu", V1000),
    # normalization / softmax
    Rule("BatchNormalization", "nn.batch_norm", V500, const_inputs=(1, 2, 3, 4), checks=[c.bn_inference]),
    Rule("LayerNormalization", "nn.layer_norm", V860, const_inputs=(1, 2), checks=[c.single_output],
         note="only the first output (10.0 list)"),
    Rule("InstanceNormalization", "nn.instance_norm", V515, const_inputs=(1, 2)),
    Rule("Softmax", "nn.softmax", V500, batch_axis_attr="axis"),
    Rule("LogSoftmax", "nn.log_softmax", V500, batch_axis_attr="axis"),
    Rule("LRN", "nn.lrn", V515),
    # convolutions, dense
    Rule("Conv", "nn.conv1d/conv2d/conv3d", V500, const_inputs=(1, 2), checks=[c.conv_like()]),
    Rule("ConvTranspose", "nn.conv1d/2d/3d_transpose", V500, const_inputs=(1, 2),
         checks=[c.conv_like(), c.no_dilation]),
    Rule("Gemm", "nn.dense", V500, checks=[c.gemm_rank]),
    Rule("MatMul", "nn.matmul/nn.batch_matmul", V500, checks=[c.gemm_rank]),
    # binaries (INT32 in every 8.x list, INT64 in 10.x; Pow stays float)
    Rule("Add", "add/nn.bias_add", V500, types=ARITH),
    Rule("Sub", "subtract", V500, types=ARITH),
    Rule("Mul", "multiply", V500, types=ARITH),
    Rule("Div", "divide", V500, types=ARITH),
    Rule("Pow", "power", V500),
    Rule("Max", "maximum", V500, types=ARITH),
    Rule("Min", "minimum", V500, types=ARITH),
    Rule("Sum", "add (variadic)", V500, types=ARITH),
    Rule("Mean", "mean (variadic)", V500, types=ARITH),
    # pools (dilations empty or all ones: 10.0 list)
    Rule("MaxPool", "nn.max_pool1d/2d/3d", V500, checks=[c.conv_like(), c.pool_ok]),
    Rule("AveragePool", "nn.avg_pool1d/2d/3d", V500, checks=[c.conv_like(), c.pool_ok]),
    Rule("GlobalAveragePool", "nn.global_avg_pool2d/adaptive_avg_pool", V500, checks=[c.conv_like()]),
    Rule("GlobalMaxPool", "nn.global_max_pool2d/adaptive_max_pool", V500, checks=[c.conv_like()]),
    # unary math
    Rule("Exp", "exp", V500),
    Rule("Log", "log", V500),
    Rule("Sqrt", "sqrt", V500),
    Rule("Abs", "abs", V500, types=ARITH),
    Rule("Neg", "negative", V500, types=ARITH),
    Rule("Reciprocal", "reciprocal", V500),
    Rule("Sin", "sin", V515),
    Rule("Cos", "cos", V515),
    Rule("Atan", "atan", V515),
    Rule("Ceil", "ceil", V515),
    Rule("Floor", "floor", V515),
    Rule("Erf", "erf", V700),
    # shape manipulation (Reshape's shape, Slice's starts/ends: shape tensors from 8.0)
    Rule("Flatten", "nn.batch_flatten", V500, batch_axis_attr="axis", moves_data=True, types=MOVES),
    Rule("Unsqueeze", "expand_dims", V500, const_inputs=(1,), batch_axis_attr="axes", moves_data=True,
         types=MOVES),
    Rule("Squeeze", "squeeze", V500, const_inputs=(1,), batch_axis_attr="axes", moves_data=True, types=MOVES),
    Rule("Concat", "concatenate", V500, batch_axis_attr="axis", moves_data=True, types=MOVES),
    Rule("Transpose", "transpose/layout_transform", V500, moves_data=True, types=MOVES),
    Rule("Reshape", "reshape", V500, const_inputs=(1,), moves_data=True, types=MOVES, shape_inputs={1: V800}),
    Rule("Pad", "nn.pad", V500, const_inputs=(1, 2, 3), checks=[c.pad_mode], moves_data=True,
         types=ladder("F", V800, "F I"), shape_inputs={1: V800},
         note="pads computed at run time from 8.0 (the parser pads through a fill-mode slice)"),
    Rule("Split", "split", V515, const_inputs=(1,), batch_axis_attr="axis", checks=[c.split_ok], moves_data=True,
         types=MOVES),
    Rule("Slice", "strided_slice", V515, const_inputs=(1, 2, 3, 4), moves_data=True, types=MOVES,
         shape_inputs={1: V800, 2: V800}, note="axes and steps constant"),
    Rule("Identity", "identity", V500, moves_data=True, types=MOVES),
    Rule("Dropout", "nn.dropout (inference)", V500, const_inputs=(1, 2), checks=[c.dropout_inference]),
    # reductions
    Rule("ReduceSum", "sum", V500, const_inputs=(1,), batch_axis_attr="axes", checks=[c.reduce_ok], types=REDUCE),
    Rule("ReduceProd", "prod", V500, const_inputs=(1,), batch_axis_attr="axes", checks=[c.reduce_ok], types=REDUCE),
    Rule("ReduceMax", "max", V500, const_inputs=(1,), batch_axis_attr="axes", checks=[c.reduce_ok], types=REDUCE),
    Rule("ReduceMin", "min", V500, const_inputs=(1,), batch_axis_attr="axes", checks=[c.reduce_ok], types=REDUCE),
    Rule("ReduceMean", "mean", V500, const_inputs=(1,), batch_axis_attr="axes", checks=[c.reduce_ok], types=REDUCE),
    # resampling
    Rule("Resize", "image.resize", V700, const_inputs=(1, 2, 3), checks=[c.resize_mode],
         note="nearest/linear; half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, asymmetric, align_corners"),
]


def _new(op: str, min_trt, **kw) -> Rule:
    return Rule(op, "-", min_trt, **kw)


LISTS: List[Rule] = [
    # activations
    _new("Celu", V721, source="7.2.1"),
    _new("HardSwish", V840, source="8.4-GA"),
    _new("Mish", V1000, source="10.0-GA"),
    _new("Softsign", V515, source="5.1"),
    _new("ThresholdedRelu", V601, source="6.0"),
    _new("Shrink", V840, types=ladder("F I"), source="8.4-GA"),
    # unary math
    *[_new(op, V515, source="5.1") for op in ("Acos", "Acosh", "Asin", "Asinh", "Atanh", "Cosh", "Sinh", "Tan")],
    _new("Round", V820, source="8.2-GA"),
    _new("Sign", V820, types=ladder("F I"), source="8.2-GA"),
    _new("IsNaN", V820, source="8.2-GA"),
    _new("IsInf", V860, source="8.6-GA"),
    _new("Mod", V850, types=ladder("F I"), source="8.5-GA"),
    # comparisons and logic (the result is bool; the inputs take the ladder)
    *[_new(op, V700, types=ARITH, source="7.0") for op in ("Equal", "Greater", "Less")],
    *[_new(op, V721, types=ARITH, source="7.2.1") for op in ("GreaterOrEqual", "LessOrEqual")],
    *[_new(op, V700, types=ladder("B"), source="7.0") for op in ("And", "Or", "Not")],
    _new("Xor", V840, types=ladder("B"), source="8.4-GA"),
    _new("Where", V700, types=MOVES, source="7.0"),
    # normalization
    _new("GroupNormalization", V860, const_inputs=(1, 2), source="8.6-GA",
         note="an opset-18 op: TensorRT 8.6's parser reads opset 17, so 10.0 takes it in practice"),
    _new("MeanVarianceNormalization", V850, batch_axis_attr="axes", source="8.5-GA"),
    _new("LpNormalization", V721, batch_axis_attr="axis", source="7.2.1"),
    _new("Hardmax", V920, batch_axis_attr="axis", checks=[c.hardmax_ok], source="9.2",
         note="axis dimension static (10.0 list)"),
    # pools, convolution
    _new("LpPool", V721, checks=[c.conv_like(), c.pool_ok], source="7.2.1", note="dilations all ones"),
    _new("GlobalLpPool", V721, checks=[c.conv_like()], source="7.2.1"),
    _new("DeformConv", V1010, checks=[c.deform_conv_ok], source="10.1-GA",
         note="1-d or 2-d spatial input, equal begin/end pads"),
    # reductions, arg/top-k, scans
    *[_new(op, V515, const_inputs=(1,), batch_axis_attr="axes", checks=[c.reduce_ok], types=REDUCE,
           source="5.1", note="axes constant")
      for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")],
    *[_new(op, V700, batch_axis_attr="axis", types=ladder("F", V860, "F I"), source="7.0")
      for op in ("ArgMax", "ArgMin")],
    _new("TopK", V515, const_inputs=(1,), shape_inputs={1: V860}, batch_axis_attr="axis", checks=[c.topk_ok],
         types=ladder("F", V860, "F I"), source="5.1",
         note="K constant before 8.6 (8.2-8.5 lists); sorted=1 and K < 3840 (10.0 list)"),
    _new("CumSum", V721, const_inputs=(1,), source="7.2.1", note="axis constant"),
    # shape tensors and shape arithmetic
    _new("Shape", V515, types=MOVES, io_types=SHAPE_OUT, explicit_batch_only=True, source="5.1",
         note="its int64 output is a shape tensor: from 8.0, explicit batch"),
    _new("Size", V700, types=MOVES, io_types=SHAPE_OUT, explicit_batch_only=True, source="7.0"),
    _new("Cast", V515, types=ladder("F", V800, "F I B", V860, "F I B u8"), source="5.1",
         note="UINT8 from the 8.6 list"),
    _new("CastLike", V910, types=ladder("F I B u8"), source="9.1"),
    _new("ConstantOfShape", V700, const_inputs=(0,), shape_inputs={0: V800}, explicit_batch_only=True,
         types=ladder("f32", V1000, "F I B"), source="7.0", note="FP32 values only before 10.0"),
    _new("Expand", V700, const_inputs=(1,), shape_inputs={1: V800}, explicit_batch_only=True, types=MOVES,
         source="7.0"),
    _new("Tile", V700, const_inputs=(1,), shape_inputs={1: V800}, types=MOVES, source="7.0"),
    _new("Range", V700, explicit_batch_only=True, checks=[c.range_ok], types=ARITH, source="7.0",
         note="float inputs constant before 8.4 (8.2 list)"),
    _new("EyeLike", V721, explicit_batch_only=True, checks=[c.static_input], types=MOVES, source="7.2.1",
         note="static input dims (10.0 list)"),
    _new("Constant", V515, checks=[c.constant_ok], types=MOVES, source="5.1",
         note="met inside If/Loop bodies (the frontend folds the others)"),
    # indexing and scatter
    _new("Gather", V515, batch_axis_attr="axis", checks=[c.gather_indices_ok], types=GATHER, source="5.1"),
    _new("GatherElements", V721, batch_axis_attr="axis", checks=[c.gather_indices_ok], types=GATHER,
         source="7.2.1"),
    _new("GatherND", V820, explicit_batch_only=True, types=ladder("F I", V850, "F I B"), source="8.2-GA"),
    _new("ScatterND", V820, explicit_batch_only=True, checks=[c.no_reduction], types=ladder("F I"),
         source="8.2-GA", note="no reduction (10.0 list)"),
    _new("ScatterElements", V820, batch_axis_attr="axis", checks=[c.no_reduction], types=ladder("F I"),
         source="8.2-GA"),
    _new("Scatter", V820, batch_axis_attr="axis", types=ladder("F I"), source="8.2-GA"),
    _new("NonZero", V850, explicit_batch_only=True, source="8.5-GA"),
    _new("OneHot", V850, const_inputs=(1,), batch_axis_attr="axis", types=ladder("F I B"), source="8.5-GA",
         note="depth constant (10.0 list)"),
    _new("Trilu", V850, const_inputs=(1,), types=ladder("F I B"), source="8.5-GA"),
    _new("DepthToSpace", V515, types=ladder("F", V800, "F I"), source="5.1"),
    _new("SpaceToDepth", V515, types=ladder("F", V800, "F I"), source="5.1"),
    _new("ReverseSequence", V721, explicit_batch_only=True, checks=[c.static_before(V860)],
         types=ladder("F", V860, "F I B"), source="7.2.1", note="static input shapes before 8.6"),
    # resampling, vision
    _new("Upsample", V515, const_inputs=(1,), checks=[c.upsample_mode], source="5.1"),
    _new("GridSample", V850, checks=[c.grid_sample_ok], source="8.5-GA",
         note="4-d input (10.0 list); opset-20 mode names only in opset-20 segments"),
    _new("RoiAlign", V850, explicit_batch_only=True, source="8.5-GA"),
    _new("NonMaxSuppression", V850, explicit_batch_only=True, source="8.5-GA",
         note="8.0-8.4 lists: experimental, output padded to a fixed shape (not ONNX's), so from 8.5"),
    _new("Einsum", V820, explicit_batch_only=True, checks=[c.einsum_ok], source="8.2-GA",
         note="no ellipsis, diagonal or broadcasting before 10.0 (8.2-8.6 lists)"),
    # quantization (INT8 only through Q/DQ; zero point 0; the 8.5 branch refuses UINT8)
    _new("QuantizeLinear", V700, const_inputs=(1, 2), checks=[c.zero_point_zero],
         io_types={"out0": ladder("i8")}, source="7.0", note="y_zero_point 0, int8 output"),
    _new("DequantizeLinear", V700, const_inputs=(1, 2), checks=[c.zero_point_zero],
         io_types={"in0": ladder("i8")}, source="7.0", note="x_zero_point 0, int8 input"),
    # control flow and recurrent (every node inside must pass the table itself)
    _new("If", V800, explicit_batch_only=True, checks=[c.if_ok], types=ladder("F I B"), source="8.0-GA",
         note="branch outputs broadcastable (8.x) / same rank (10.x), different names"),
    _new("Loop", V700, explicit_batch_only=True, checks=[c.loop_ok], types=ladder("F", V800, "F I B"),
         source="7.0", note="scan outputs need a constant trip count; carried shapes fixed (10.0 list)"),
    *[_new(op, V700, const_inputs=(1, 2, 3), explicit_batch_only=True, checks=[c.rnn_ok], source="7.0",
           note="weights constant; bidirectional: same activations both ways; layout 0, input_forget 0")
      for op in ("LSTM", "GRU", "RNN")],
]

RULES: List[Rule] = SEED + LISTS

# ops that are on the lists but not in the table, and why (for the docs)
LEFT_OUT = {
    "ImageScaler, ParametricSoftplus, ScaledTanh": "experimental ops that ONNX no longer defines",
    "RandomNormal(Like), RandomUniform(Like)": "random: results cannot be checked (seed ignored by TensorRT)",
    "Scan": "rare in exported models; If and Loop cover control flow",
}
