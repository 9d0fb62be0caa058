"""INT8 through explicit quantization: Q/DQ inside the TensorRT segments for each target version, the Q/DQ
check, the accuracy report and its floors, bad calibration data (real onnxruntime quantizer, real files)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from host.compiler.api import compile_model
from host.compiler.profiles import get_profile, max_parser_opset
from host.compiler.quantize import Int8Options, QdqError, check_qdq, int8_warning
from tests.host.cli.helpers import tiny_conv_net


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_conv_net(tmp_path_factory.mktemp("int8") / "tiny.onnx")


def _calib(path: Path, n: int = 6, seed: int = 1, **arrays) -> Path:
    data = arrays or {"input": np.random.default_rng(seed).standard_normal((n, 1, 3, 32, 32)).astype(np.float32)}
    np.savez(path, **data)
    return path


@pytest.mark.parametrize("trt", ["8.2.1", "8.5.2", "10.3.0"])
def test_int8_bundle_holds_qdq_pairs_inside_one_tensorrt_segment_at_the_parsers_opset(model, tmp_path, trt):
    result = compile_model(model, tmp_path / "out", trt_version=trt,
                           int8=Int8Options(_calib(tmp_path / "cal.npz")))
    m = result.manifest
    assert m.remainder is None and [s.id for s in m.segments] == ["trt_0"]
    seg = onnx.load(str(result.bundle_dir / m.segments[0].path))
    ops = [n.op_type for n in seg.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 3  # weights and activations
    for conv in (n for n in seg.graph.node if n.op_type in ("Conv", "Gemm")):
        producers = {o: n.op_type for n in seg.graph.node for o in n.output}
        assert producers[conv.input[0]] == producers[conv.input[1]] == "DequantizeLinear"
    assert seg.opset_import[0].version <= max_parser_opset(get_profile("x86-cpu", trt).trt)
    assert m.segments[0].calibration.startswith("sha256:")
    info = m.options["int8"]
    assert m.options["precision"] == "int8" and info["qdq"]["per_channel"] >= 2  # Conv and Gemm weights
    out = info["accuracy"]["outputs"][0]
    assert out["name"] == "logits" and 0 < out["max_rel_err"] < 0.1 and out["cosine"] > 0.99
    assert out["top1_agreement"] is not None  # [1, 10] logits: a classifier's output


def test_int8_reference_is_the_quantized_graph_and_its_input_a_calibration_sample(model, tmp_path):
    cal = _calib(tmp_path / "cal.npz")
    result = compile_model(model, tmp_path / "out", int8=Int8Options(cal))
    from device_agent.bundle import Bundle

    ins, outs = Bundle.open(result.bundle_dir).read_reference()
    np.testing.assert_array_equal(ins["input"], np.load(cal)["input"][0])
    import onnxruntime as ort

    fp32 = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, ins)[0]
    seg = ort.InferenceSession(str(result.bundle_dir / result.manifest.segments[0].path),
                               providers=["CPUExecutionProvider"]).run(None, ins)[0]
    np.testing.assert_allclose(outs["logits"], seg, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(outs["logits"], fp32)  # the reference is INT8, not FP32


def test_accuracy_report_uses_the_validation_set_when_given(model, tmp_path):
    val = _calib(tmp_path / "val.npz", n=3, seed=7)
    result = compile_model(model, tmp_path / "out", int8=Int8Options(_calib(tmp_path / "cal.npz"), validation=val,
                                                                     calibrator="entropy"))
    acc = result.manifest.options["int8"]["accuracy"]
    assert acc["dataset"] == "validation" and acc["samples"] == 3
    assert result.manifest.options["int8"]["calibrator"] == "entropy"


def test_fp32_and_int8_bundles_of_one_model_differ_and_fp32_segments_carry_no_calibration(model, tmp_path):
    fp32 = compile_model(model, tmp_path / "a")
    int8 = compile_model(model, tmp_path / "b", int8=Int8Options(_calib(tmp_path / "cal.npz")))
    assert fp32.digest != int8.digest
    assert fp32.manifest.segments[0].calibration == ""
    assert "calibration" not in json.loads((fp32.bundle_dir / "manifest.json").read_text())["segments"][0]


def _qdq_model(scale_shape, weight: bool, opset: int) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.full(scale_shape, 0.1, np.float32), "s"),
             numpy_helper.from_array(np.zeros(scale_shape, np.int8), "z")]
    x = "x"
    if weight:
        inits.append(numpy_helper.from_array(np.ones((4, 2), np.float32), "w"))
        x = "w"
    nodes = [helper.make_node("QuantizeLinear", [x, "s", "z"], ["q"], name="q", axis=0),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq", axis=0)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_qdq_check_takes_per_channel_weights_and_per_tensor_activations():
    assert check_qdq(_qdq_model([4], weight=True, opset=13), (8, 2, 1), 13) == {"per_tensor": 0, "per_channel": 2}
    assert check_qdq(_qdq_model([], weight=False, opset=13), (8, 2, 1), 13)["per_tensor"] == 2


@pytest.mark.parametrize("weight,opset,trt,needle", [
    (False, 13, (10, 3, 0), "quantizes an activation per channel"),
    (True, 11, (8, 2, 1), "needs opset >= 13"),
    (True, 13, (7, 2, 3), "from 8.0"),
])
def test_qdq_check_refuses_what_the_target_parser_does_not_take(weight, opset, trt, needle):
    with pytest.raises(QdqError, match=needle):
        check_qdq(_qdq_model([4], weight=weight, opset=opset), trt, opset)


def test_int8_on_a_gpu_without_fast_int8_warns_and_one_with_it_does_not():
    assert "no fast INT8 path" in int8_warning(get_profile("jetson-nano").compute_capability)
    assert int8_warning(get_profile("jetson-xavier-nx").compute_capability) is None
    assert int8_warning(None) is None


def test_int8_for_the_nano_records_the_warning_in_the_manifest(model, tmp_path):
    result = compile_model(model, tmp_path / "out", profile="jetson-nano",
                           int8=Int8Options(_calib(tmp_path / "cal.npz")))
    assert "5.3" in result.manifest.options["int8"]["warning"]


def test_with_a_tvm_remainder_only_tensorrt_segments_hold_qdq_and_the_host_check_passes(model, tmp_path):
    result = compile_model(model, tmp_path / "out", exclude_ops=("Relu",),
                           int8=Int8Options(_calib(tmp_path / "cal.npz")))
    parts = result.manifest.options["parts"]
    assert result.manifest.remainder is not None
    tvm_ops = {op for p in parts if p["kind"] == "tvm" for op in p["ops"]}
    assert tvm_ops == {"Relu"}
    for seg in result.manifest.segments:
        ops = [n.op_type for n in onnx.load(str(result.bundle_dir / seg.path)).graph.node]
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and seg.calibration


@pytest.mark.parametrize("calibrator", ["percentile"])  # entropy: see docs/int8.md (same scales as minmax here)
def test_another_calibrator_gives_other_scales(model, tmp_path, calibrator):
    cal = _calib(tmp_path / "cal.npz")
    base = compile_model(model, tmp_path / "minmax", int8=Int8Options(cal))
    other = compile_model(model, tmp_path / calibrator, int8=Int8Options(cal, calibrator=calibrator))
    assert other.manifest.options["int8"]["calibrator"] == calibrator
    assert other.manifest.segments[0].digest != base.manifest.segments[0].digest


def test_int8_with_fp16_is_recorded_as_int8_with_fp16_fallback(model, tmp_path):
    result = compile_model(model, tmp_path / "out", fp16=True, int8=Int8Options(_calib(tmp_path / "cal.npz")))
    assert result.to_json()["precision"] == "int8+fp16"


def test_unnamed_nodes_are_named_so_they_can_be_quantized(model, tmp_path):
    m = onnx.load(str(model))
    for n in m.graph.node:
        n.name = ""
    path = tmp_path / "unnamed.onnx"
    onnx.save(m, str(path))
    result = compile_model(path, tmp_path / "out", int8=Int8Options(_calib(tmp_path / "cal.npz")))
    assert result.manifest.options["int8"]["quantized_nodes"] == 2  # the Conv and the Gemm


def test_a_model_with_nothing_to_quantize_in_tensorrt_is_refused_with_one_line(model, tmp_path):
    from device_agent.errors import InvalidInput

    with pytest.raises(InvalidInput, match="nothing to quantize"):
        compile_model(model, tmp_path / "out", exclude_ops=("Conv", "Gemm"),
                      int8=Int8Options(_calib(tmp_path / "cal.npz")))
    assert not (tmp_path / "out").exists()
