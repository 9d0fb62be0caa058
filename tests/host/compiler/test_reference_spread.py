"""The compiler measures how far two correct fp32 runs of the model disagree, and push's default verify
tolerance never asks a device for less than twice that."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from host.compiler.api import CompileOptions, compile_model
from host.pipeline.push import default_tolerance


def _model(path: Path, scale: float) -> Path:
    """Conv(x, W + D) - Conv(x, W), with W ~ ``scale`` x N(0, 1) and D ~ N(0, 1).

    Optimised, onnxruntime runs the convolutions with other kernels (its NCHWc layout) than unoptimised
    (im2col and GEMM), which sum in another order. With a large W the subtraction cancels almost all of each
    sum and leaves that rounding visible (the extreme of a model that amplifies rounding, as PP-OCRv4's text
    detector does); with W = 0 nothing cancels and the runs agree to fp32 precision."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((16, 16, 3, 3)) * scale).astype(np.float32)
    wd = (w + rng.standard_normal((16, 16, 3, 3))).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "wd"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Sub", ["a", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(wd, "wd")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def test_a_model_that_amplifies_rounding_gets_its_fp32_spread_recorded_and_a_wider_default_tolerance(tmp_path):
    res = compile_model(_model(tmp_path / "cancel.onnx", 1e4), tmp_path / "out", CompileOptions(profile="x86-cpu"))
    spread = res.manifest.reference["fp32_spread"]
    assert spread > 1e-3
    assert default_tolerance(False, False, spread) == 2 * spread


def test_an_ordinary_model_agrees_with_itself_and_keeps_the_fixed_tolerance(tmp_path):
    res = compile_model(_model(tmp_path / "plain.onnx", 0.0), tmp_path / "out", CompileOptions(profile="x86-cpu"))
    spread = res.manifest.reference["fp32_spread"]
    assert 0 <= spread < 1e-5
    assert default_tolerance(False, False, spread) == 1e-3
    assert default_tolerance(True, False, spread) == 5e-2
