"""--batch MIN:OPT:MAX keeps a symbolic batch dim through segments and the TVM remainder."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from device_agent.bundle import Bundle
from device_agent.bundle_runtime import onnxruntime_runners, run_bundle
from device_agent.errors import InvalidInput
from host.compiler.api import compile_model


def _model(path):
    w = np.random.default_rng(3).standard_normal((8, 8)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("Erf", ["a"], ["b"]),
         helper.make_node("Sigmoid", ["b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        initializer=[onnx.numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("trt", ["6.0.1", "8.2.1"])
def test_dynamic_batch_bundle_runs_at_any_batch_in_range(tmp_path, trt):
    path = _model(tmp_path / "m.onnx")
    r = compile_model(path, tmp_path / "out", batch="1:4:8", trt_version=trt)
    m = r.manifest
    assert m.inputs[0].shape == ["batch", 8] and m.options["batch"] == [1, 4, 8]
    assert all(t.shape[0] == "batch" for s in m.segments for t in s.inputs + s.outputs)
    assert (m.remainder is not None) == (trt == "6.0.1")
    b = Bundle.open(r.bundle_dir)
    ins, _ = b.read_reference()
    assert ins["x"].shape == (4, 8)  # reference data at OPT
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 4, 7):
        x = np.random.default_rng(n).standard_normal((n, 8)).astype(np.float32)
        got = run_bundle(b, onnxruntime_runners(b), {"x": x})["y"]
        np.testing.assert_allclose(got, sess.run(None, {"x": x})[0], rtol=1e-4, atol=1e-6)


def test_wrong_input_is_refused_by_the_runtime(tmp_path):
    r = compile_model(_model(tmp_path / "m.onnx"), tmp_path / "out", batch="1:4:8")
    b = Bundle.open(r.bundle_dir)
    with pytest.raises(InvalidInput, match="has shape \\[2, 9\\], the bundle takes \\['batch', 8\\]"):
        run_bundle(b, onnxruntime_runners(b), {"x": np.zeros((2, 9), np.float32)})
    with pytest.raises(InvalidInput, match="is float64, the bundle takes float32"):
        run_bundle(b, onnxruntime_runners(b), {"x": np.zeros((2, 8))})
    with pytest.raises(InvalidInput, match="has batch 9, the bundle was compiled for 1..8"):
        run_bundle(b, onnxruntime_runners(b), {"x": np.zeros((9, 8), np.float32)})
