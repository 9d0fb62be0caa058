"""Partitioning: acyclic segments, version gating with the reason, the seed's options."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from device_agent.bundle import Bundle
from device_agent.bundle_runtime import onnxruntime_runners, run_bundle
from device_agent.errors import InvalidInput
from host.compiler.api import compile_model


def _run_matches(r) -> None:
    b = Bundle.open(r.bundle_dir)
    ins, want = b.read_reference()
    got = run_bundle(b, onnxruntime_runners(b), ins)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5)


def test_diamond_around_an_unsupported_op_does_not_merge_into_a_cycle(tiny, save_model, tmp_path):
    # a = relu(x); b = erf(a) [TVM below 7.0]; y = a + b. Merging relu and add would need erf inside.
    m = tiny([helper.make_node("Relu", ["x"], ["a"], name="relu"),
              helper.make_node("Erf", ["a"], ["b"], name="erf"),
              helper.make_node("Add", ["a", "b"], ["y"], name="add")],
             [("x", [2, 8])], [("y", [2, 8])])
    r = compile_model(save_model(m), tmp_path / "out", trt_version="6.0.1")
    assert [(p["id"], p["ops"]) for p in r.parts] == [("trt_0", ["Relu"]), ("tvm_0", ["Erf"]), ("trt_1", ["Add"])]
    seg1 = r.manifest.segments[1]
    assert [t.name for t in seg1.inputs] == ["a", "b"]
    _run_matches(r)
    # at 7.0.0 erf is offloaded: one segment, no remainder
    r7 = compile_model(save_model(m), tmp_path / "out7", trt_version="7.0.0")
    assert len(r7.manifest.segments) == 1 and r7.manifest.remainder is None


@pytest.mark.parametrize("op, ok_at, below", [("Erf", "7.0.0", "6.0.1"), ("Sin", "5.1.5", "5.1.0"),
                                              ("LeakyRelu", "5.1.5", "5.0.2")])
def test_version_gate_offloads_at_min_version_and_explains_below(tiny, save_model, tmp_path, op, ok_at, below):
    core = helper.make_node(op, ["a"], ["b"])
    m = tiny([helper.make_node("Relu", ["x"], ["a"]), core, helper.make_node("Relu", ["b"], ["y"])],
             [("x", [1, 3, 4])], [("y", [1, 3, 4])])
    r = compile_model(save_model(m), tmp_path / "ok", trt_version=ok_at)
    assert r.manifest.not_offloaded == [] and r.manifest.remainder is None
    r = compile_model(save_model(m), tmp_path / "below", trt_version=below)
    assert [(e["op"], e["reason"]) for e in r.manifest.not_offloaded] == [
        (op, f"{op.lower()} needs TensorRT >= {ok_at}, target is {below}")]
    _run_matches(r)


def test_3d_conv_needs_trt_6(tiny, save_model, tmp_path):
    w = np.random.default_rng(0).standard_normal((2, 1, 3, 3, 3)).astype(np.float32)
    m = tiny([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 6)], [("x", [1, 1, 4, 4, 4])],
             [("y", [1, 2, 4, 4, 4])], inits={"w": w})
    r = compile_model(save_model(m), tmp_path / "a", trt_version="5.1.5")
    assert r.manifest.not_offloaded[0]["reason"] == "3-d Conv needs TensorRT >= 6.0.1, target is 5.1.5"
    r = compile_model(save_model(m), tmp_path / "b", trt_version="6.0.1")
    assert r.manifest.not_offloaded == []


def test_no_offload_keeps_the_op_in_tvm_and_results_still_match(tiny, save_model, tmp_path):
    m = tiny([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["a"], ["y"])],
             [("x", [2, 8])], [("y", [2, 8])])
    r = compile_model(save_model(m), tmp_path / "out", exclude_ops=("Sigmoid",))
    assert [(e["op"], e["reason"]) for e in r.manifest.not_offloaded] == [
        ("Sigmoid", "Sigmoid kept in TVM on request (--no-offload Sigmoid)")]
    _run_matches(r)


def test_remove_no_mac_subgraphs_keeps_mac_free_segments_in_tvm(tiny, save_model, tmp_path):
    w = np.ones((8, 8), np.float32) / 8
    m = tiny([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Erf", ["a"], ["b"]),
              helper.make_node("MatMul", ["b", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
             [("x", [2, 8])], [("y", [2, 8])], inits={"w": w})
    r = compile_model(save_model(m), tmp_path / "out", trt_version="6.0.1", remove_no_mac_subgraphs=True)
    assert [s.ops for s in r.manifest.segments] == [["MatMul", "Relu"]]
    relu = [e for e in r.manifest.not_offloaded if e["op"] == "Relu"]
    assert relu and "remove_no_mac_subgraphs" in relu[0]["reason"]
    _run_matches(r)


def test_implicit_batch_refuses_ops_on_the_batch_axis_and_is_refused_for_trt_10(tiny, save_model, tmp_path):
    m = tiny([helper.make_node("Softmax", ["x"], ["y"], axis=0)], [("x", [2, 8])], [("y", [2, 8])])
    r = compile_model(save_model(m), tmp_path / "a", trt_version="8.2", use_implicit_batch=True)
    assert "touches the batch axis (use_implicit_batch)" in r.manifest.not_offloaded[0]["reason"]
    r = compile_model(save_model(m), tmp_path / "b", trt_version="8.2")
    assert r.manifest.not_offloaded == []
    with pytest.raises(InvalidInput, match="use_implicit_batch needs TensorRT < 10"):
        compile_model(save_model(m), tmp_path / "c", trt_version="10.3", use_implicit_batch=True)


def test_segments_are_downgraded_to_the_parsers_opset(tiny, save_model, tmp_path):
    # opset-13 Squeeze/ReduceSum take axes as an input; TensorRT 7's parser (opset 11) needs attributes
    m = tiny([helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
              helper.make_node("Squeeze", ["s", "axes"], ["y"])],
             [("x", [2, 3, 4])], [("y", [2, 3])], inits={"axes": np.array([2], np.int64)})
    r = compile_model(save_model(m), tmp_path / "out", trt_version="7.1.3")
    seg = r.manifest.segments[0]
    assert seg.opset == 11 and r.manifest.remainder is None
    import onnx

    emitted = onnx.load(str(Bundle.open(r.bundle_dir).segment_path("trt_0")))
    assert emitted.opset_import[0].version == 11
    assert [len(n.input) for n in emitted.graph.node] == [1, 1]  # axes became attributes
    _run_matches(r)


def test_shape_tensors_are_offloaded_from_trt_8_and_stay_in_tvm_before_with_reason(tiny, save_model, tmp_path):
    # y = reshape(x, shape(x)) : Shape makes int64 data, Reshape's shape is computed at run time (a shape
    # tensor). fold=False keeps the Shape node (folding would make the shape a constant here).
    m = tiny([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["y"])],
             [("x", [2, 3])], [("y", [2, 3])])
    r = compile_model(save_model(m), tmp_path / "out", trt_version="7.1.3", fold=False)
    reasons = {e["op"]: e["reason"] for e in r.manifest.not_offloaded}
    assert reasons["Shape"] == "Shape on int64 tensor 's' needs TensorRT >= 8.0.0, target is 7.1.3"
    assert reasons["Reshape"] == ("Reshape input 1 ('s') is computed at run time; TensorRT >= 8.0.0 takes it as "
                                  "a shape tensor, target is 7.1.3")
    assert r.manifest.segments == []
    _run_matches(r)
    r = compile_model(save_model(m), tmp_path / "out8", trt_version="8.2.1", fold=False)
    assert r.manifest.not_offloaded == [] and [s.ops for s in r.manifest.segments] == [["Shape", "Reshape"]]


def test_duplicate_and_missing_node_names_get_unique_names(tiny, save_model, tmp_path):
    m = tiny([helper.make_node("Relu", ["x"], ["a"], name="same"), helper.make_node("Erf", ["a"], ["b"], name="same"),
              helper.make_node("Sigmoid", ["b"], ["y"])], [("x", [2, 8])], [("y", [2, 8])])
    r = compile_model(save_model(m), tmp_path / "out", trt_version="6.0.1")
    assert [e["node"] for e in r.manifest.not_offloaded] == ["same_1"]
    assert [p["ops"] for p in r.parts] == [["Relu"], ["Erf"], ["Sigmoid"]]
    _run_matches(r)


def test_output_that_no_node_computes_is_refused(tiny, save_model, tmp_path):
    m = tiny([helper.make_node("Relu", ["x"], ["y"])], [("x", [2, 8])], [("y", [2, 8]), ("x", [2, 8])])
    with pytest.raises(InvalidInput, match="output 'x' is a model input or a constant"):
        compile_model(save_model(m), tmp_path / "out")


def test_host_check_refuses_a_bundle_whose_tvm_part_computes_differently(tiny, save_model, tmp_path):
    # linear downsampling Resize: TVM 0.27's ONNX frontend gives other numbers than onnxruntime
    from device_agent.errors import BuildFailed

    scales = np.array([1, 1, 0.6, 0.6], np.float32)
    m = tiny([helper.make_node("Relu", ["x"], ["a"]),
              helper.make_node("Resize", ["a", "", "scales"], ["y"], mode="linear")],
             [("x", [1, 1, 2, 4])], [("y", [1, 1, 1, 2])], inits={"scales": scales})
    with pytest.raises(BuildFailed, match="does not reproduce onnxruntime on output 'y'"):
        compile_model(save_model(m), tmp_path / "out", trt_version="6.0.1")
    assert not (tmp_path / "out").exists()
    # offloaded (TensorRT 8.2 takes linear Resize at opset 13), the same model compiles
    assert compile_model(save_model(m), tmp_path / "ok", trt_version="8.2.1").manifest.remainder is None


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_reflect_and_edge_pad_are_offloaded_from_trt_8_2(tiny, save_model, tmp_path, mode):
    # onnx-tensorrt's 8.2 Pad importer maps reflect / edge to ISliceLayer kREFLECT / kCLAMP (silero-vad,
    # basic-pitch, open-nsfw pad that way); its 8.0 importer takes constant 0 padding only
    m = tiny([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Pad", ["a", "p"], ["b"], mode=mode),
              helper.make_node("Relu", ["b"], ["y"])],
             [("x", [1, 2, 5, 5])], [("y", [1, 2, 7, 9])],
             inits={"p": np.array([0, 0, 1, 2, 0, 0, 1, 2], np.int64)})
    r = compile_model(save_model(m), tmp_path / "nano", trt_version="8.2.1")
    assert r.manifest.not_offloaded == [] and r.manifest.remainder is None and len(r.manifest.segments) == 1
    _run_matches(r)
    r = compile_model(save_model(m), tmp_path / "old", trt_version="8.0.1")
    assert [(e["op"], e["reason"]) for e in r.manifest.not_offloaded] == [
        ("Pad", f"Pad mode {mode!r} needs TensorRT >= 8.2.0, target is 8.0.1")]
    _run_matches(r)
