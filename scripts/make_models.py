"""Build real architectures as ONNX with seeded random weights (no torch, no downloads).

    python scripts/make_models.py OUT_DIR [--only resnet18,resnet50,mobilenetv2,transformer,small_cnn]

Weights are He-scaled normals from ``numpy.random.default_rng(seed)``, BatchNorm statistics are
random but sane, so activations stay O(1) through 50 layers and relative error is meaningful.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


class Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[onnx.TensorProto] = []
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, prefix: str, arr: np.ndarray) -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op: str, inputs: List[str], n_out: int = 1, **attrs) -> str:
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=outs[0] + "_node", **attrs))
        return outs[0]

    # layers
    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, bias: bool = False) -> str:
        fan_in = cin // group * k * k
        w = (self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        ins = [x, self.const("w", w)]
        if bias:
            ins.append(self.const("b", (self.rng.standard_normal(cout) * 0.01).astype(np.float32)))
        return self.node("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group)

    def bn(self, x: str, c: int) -> str:
        r = self.rng
        return self.node("BatchNormalization", [
            x, self.const("g", (1 + 0.1 * r.standard_normal(c)).astype(np.float32)),
            self.const("be", (0.1 * r.standard_normal(c)).astype(np.float32)),
            self.const("m", (0.1 * r.standard_normal(c)).astype(np.float32)),
            self.const("v", (1 + 0.1 * np.abs(r.standard_normal(c))).astype(np.float32))], epsilon=1e-5)

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, act: Optional[str] = "Relu") -> str:
        y = self.bn(self.conv(x, cin, cout, k, stride, group), cout)
        if act == "Relu":
            y = self.node("Relu", [y])
        elif act == "Relu6":
            y = self.node("Clip", [y, self.const("lo", np.array(0, np.float32)), self.const("hi", np.array(6, np.float32))])
        return y

    def dense(self, x: str, cin: int, cout: int) -> str:
        w = (self.rng.standard_normal((cin, cout)) * np.sqrt(1.0 / cin)).astype(np.float32)
        y = self.node("MatMul", [x, self.const("w", w)])
        return self.node("Add", [y, self.const("b", (0.01 * self.rng.standard_normal(cout)).astype(np.float32))])

    def model(self, name: str, inputs, outputs) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="make_models")
        m.ir_version = 7
        onnx.checker.check_model(m)
        return m


def _image_input(batch) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 224, 224])


def _classifier(b: Builder, x: str, c: int, classes: int = 1000) -> str:
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    w = (b.rng.standard_normal((classes, c)) * np.sqrt(1.0 / c)).astype(np.float32)
    return b.node("Gemm", [x, b.const("fc_w", w), b.const("fc_b", np.zeros(classes, np.float32))], transB=1)


def resnet(depth: int, seed: int = 0, batch=1) -> onnx.ModelProto:
    """ResNet-18 (basic blocks) or ResNet-50 (bottlenecks), torchvision layout."""
    b = Builder(seed)
    x = b.conv_bn("input", 3, 64, 7, 2)
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    bottleneck = depth == 50
    blocks = [3, 4, 6, 3] if depth == 50 else [2, 2, 2, 2]
    cin = 64
    for stage, n in enumerate(blocks):
        width = 64 * 2 ** stage
        cout = width * 4 if bottleneck else width
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            if bottleneck:
                y = b.conv_bn(x, cin, width, 1)
                y = b.conv_bn(y, width, width, 3, stride)
                y = b.conv_bn(y, width, cout, 1, act=None)
            else:
                y = b.conv_bn(x, cin, width, 3, stride)
                y = b.conv_bn(y, width, cout, 3, act=None)
            short = x if (stride == 1 and cin == cout) else b.conv_bn(x, cin, cout, 1, stride, act=None)
            x = b.node("Relu", [b.node("Add", [y, short])])
            cin = cout
    out = _classifier(b, x, cin)
    return b.model(f"resnet{depth}", [_image_input(batch)],
                   [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, 1000])])


def small_cnn(seed: int = 0, batch=1) -> onnx.ModelProto:
    """Three conv-BN-ReLU stages and a 10-class head on a 3x64x64 image: the tutorials' model (compiles and
    benchmarks in well under a second, so every tutorial runs in the test suite)."""
    b = Builder(seed)
    x = b.conv_bn("input", 3, 16, 3, 2)
    x = b.conv_bn(x, 16, 32, 3, 2)
    x = b.conv_bn(x, 32, 64, 3, 2)
    out = _classifier(b, x, 64, classes=10)
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 64, 64])
    return b.model("small_cnn", [image], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, 10])])


def mobilenetv2(seed: int = 0, batch=1) -> onnx.ModelProto:
    b = Builder(seed)
    x = b.conv_bn("input", 3, 32, 3, 2, act="Relu6")
    cin = 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = x if t == 1 else b.conv_bn(x, cin, hidden, 1, act="Relu6")
            y = b.conv_bn(y, hidden, hidden, 3, stride, group=hidden, act="Relu6")
            y = b.conv_bn(y, hidden, c, 1, act=None)
            x = b.node("Add", [x, y]) if stride == 1 and cin == c else y
            cin = c
    x = b.conv_bn(x, cin, 1280, 1, act="Relu6")
    out = _classifier(b, x, 1280)
    return b.model("mobilenetv2", [_image_input(batch)],
                   [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, 1000])])


def transformer_encoder(seed: int = 0, batch=1, seq: int = 64, d: int = 128, heads: int = 4, ff: int = 512) -> onnx.ModelProto:
    """One post-norm encoder block: multi-head self-attention + GELU (Erf) feed-forward + LayerNorm
    (written as ReduceMean/Sub/Pow/Sqrt/Div so opset 13 parsers read it)."""
    b = Builder(seed)
    dh = d // heads
    x = "tokens"

    def layer_norm(v: str) -> str:
        mean = b.node("ReduceMean", [v], axes=[-1])
        c = b.node("Sub", [v, mean])
        var = b.node("ReduceMean", [b.node("Pow", [c, b.const("two", np.array(2, np.float32))])], axes=[-1])
        std = b.node("Sqrt", [b.node("Add", [var, b.const("eps", np.array(1e-5, np.float32))])])
        y = b.node("Div", [c, std])
        y = b.node("Mul", [y, b.const("gamma", (1 + 0.1 * b.rng.standard_normal(d)).astype(np.float32))])
        return b.node("Add", [y, b.const("beta", (0.1 * b.rng.standard_normal(d)).astype(np.float32))])

    def heads_split(v: str) -> str:
        r = b.node("Reshape", [v, b.const("shape", np.array([batch, seq, heads, dh], np.int64))])
        return b.node("Transpose", [r], perm=[0, 2, 1, 3])

    q, k, v = (heads_split(b.dense(x, d, d)) for _ in range(3))
    kt = b.node("Transpose", [k], perm=[0, 1, 3, 2])
    scores = b.node("Div", [b.node("MatMul", [q, kt]), b.const("scale", np.array(np.sqrt(dh), np.float32))])
    attn = b.node("Softmax", [scores], axis=-1)
    ctx = b.node("Transpose", [b.node("MatMul", [attn, v])], perm=[0, 2, 1, 3])
    ctx = b.node("Reshape", [ctx, b.const("shape", np.array([batch, seq, d], np.int64))])
    h = layer_norm(b.node("Add", [x, b.dense(ctx, d, d)]))
    f = b.dense(h, d, ff)
    gelu = b.node("Mul", [b.node("Mul", [f, b.const("half", np.array(0.5, np.float32))]),
                          b.node("Add", [b.node("Erf", [b.node("Div", [f, b.const("sqrt2", np.array(np.sqrt(2), np.float32))])]),
                                         b.const("one", np.array(1, np.float32))])])
    out = layer_norm(b.node("Add", [h, b.dense(gelu, ff, d)]))
    return b.model("transformer_encoder", [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, [batch, seq, d])],
                   [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, seq, d])])


MODELS: Dict[str, Callable[[], onnx.ModelProto]] = {
    "resnet18": lambda: resnet(18),
    "resnet50": lambda: resnet(50),
    "mobilenetv2": mobilenetv2,
    "transformer": transformer_encoder,
}
# Made only when named (--only small_cnn): the tests that take every model of MODELS stay as they are.
ON_REQUEST: Dict[str, Callable[[], onnx.ModelProto]] = {"small_cnn": small_cnn}


def write_models(out_dir: Path, only: Optional[List[str]] = None) -> Dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, make in {**MODELS, **ON_REQUEST}.items():
        if (only and name not in only) or (not only and name in ON_REQUEST):
            continue
        p = out_dir / f"{name}.onnx"
        if not p.exists():
            tmp = p.with_suffix(".tmp")
            onnx.save(make(), str(tmp))
            tmp.replace(p)
        paths[name] = p
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join({**MODELS, **ON_REQUEST}))
    a = ap.parse_args()
    for name, p in write_models(a.out_dir, [s for s in a.only.split(",") if s] or None).items():
        print(f"{name}: {p} ({p.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
