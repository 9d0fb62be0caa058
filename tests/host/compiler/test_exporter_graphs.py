"""What published exporters write (shape subgraphs, -1 dims, If reading the outer graph, integer inputs,
names TVM renames) compiles, or fails with one line that says what to do. Models are built here."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from device_agent.bundle import Bundle
from device_agent.bundle_runtime import onnxruntime_runners, run_bundle
from device_agent.errors import InvalidInput
from host.compiler.api import compile_model
from host.compiler.frontend import ShapeError
from host.compiler.lower import TvmImportError
from host.compiler.patterns import OP_TABLE
from host.compiler.profiles import format_version
from host.compiler.reference import SampleError
from tests.exporter_models import batch_arithmetic_model
from tests.exporter_models import const as _const
from tests.exporter_models import flatten_by_shape_model as _flatten_by_shape_model
from tests.exporter_models import if_reading_outer_graph_model as _if_reading_outer_graph_model
from tests.exporter_models import save as _save

RNG = np.random.default_rng(7)


def _rel_err(bundle_dir, inputs=None):
    bundle = Bundle.open(bundle_dir)
    ins, want = bundle.read_reference()
    got = run_bundle(bundle, onnxruntime_runners(bundle), ins)
    return max(float(np.abs(got[k] - want[k]).max() / max(np.abs(want[k]).max(), 1e-12)) for k in want)


def test_shape_subgraph_is_folded_into_one_tensorrt_segment_once_shapes_are_bound(tmp_path):
    path = _flatten_by_shape_model(tmp_path)
    for trt in ("8.5.2", "10.3.0"):
        r = compile_model(path, tmp_path / f"out-{trt}", trt_version=trt, input_shapes={"x": [2, 3, 8, 8]})
        m = r.manifest
        assert [p["kind"] for p in r.parts] == ["tensorrt"] and m.remainder is None and m.not_offloaded == []
        assert sorted(m.segments[0].ops) == ["Conv", "Gemm", "Relu", "Reshape"]  # the shape arithmetic is gone
        prep = m.options["prepare"]
        assert prep["nodes_before"] == 8 and prep["nodes_after"] == 4 and prep["skipped"] is None
        assert {"Shape", "Gather", "Unsqueeze", "Concat"} <= set(prep["ops_removed"])
        assert m.source_digest.endswith(__import__("hashlib").sha256(path.read_bytes()).hexdigest())
        assert _rel_err(r.bundle_dir) < 1e-5


def test_minus_one_dims_take_any_input_shape_and_without_one_say_which_dim(tmp_path):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "paddle_style",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, -1, -1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 3, -1, -1])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "neg.onnx"
    onnx.save(model, str(path))  # the checker takes -1 dims; written as Paddle writes them
    r = compile_model(path, tmp_path / "out", input_shapes={"x": [1, 3, 48, 192]})
    assert r.manifest.inputs[0].shape == [1, 3, 48, 192] and r.manifest.outputs[0].shape == [1, 3, 48, 192]
    with pytest.raises(ShapeError, match=r"input 'x' dim 0 is symbolic \('-1'\) and has no size: fix it with --input-shape x=Dx"):
        compile_model(path, tmp_path / "out2")
    with pytest.raises(ShapeError, match=r"does not fit the model's shape \['-1', 3, '-1', '-1'\]"):
        compile_model(path, tmp_path / "out3", input_shapes={"x": [1, 4, 48, 192]})


def test_if_whose_branch_reads_the_outer_graph_compiles_in_tvm_and_follows_the_sample_input(tmp_path):
    path = _if_reading_outer_graph_model(tmp_path)
    x = RNG.standard_normal((1, 4)).astype(np.float32)
    for sr, expect in ((16000, np.maximum(x, 0) * 2), (4000, np.maximum(x, 0) + 2)):
        out = tmp_path / f"out-{sr}"
        r = compile_model(path, out, exclude_ops=("If",), sample_inputs={"x": x, "sr": np.array([sr], np.int64)})
        tvm_parts = [p for p in r.parts if p["kind"] == "tvm"]
        assert tvm_parts and "If" in tvm_parts[0]["ops"]
        bundle = Bundle.open(r.bundle_dir)
        ins, want = bundle.read_reference()
        assert ins["sr"].tolist() == [sr] and np.array_equal(ins["x"], x)  # the reference is the user's sample
        np.testing.assert_allclose(want["out"], expect, rtol=1e-6)
        got = run_bundle(bundle, onnxruntime_runners(bundle), ins)
        np.testing.assert_allclose(got["out"], expect, rtol=1e-6)


def test_integer_input_without_a_sample_is_refused_with_what_to_pass(tmp_path):
    path = _if_reading_outer_graph_model(tmp_path)
    with pytest.raises(SampleError, match=r"input 'sr' is int64 \[1\]: give its values with --inputs FILE.npz "
                                          r"or --input sr=FILE.npy"):
        compile_model(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_sample_inputs_that_do_not_fit_are_one_line_errors(tmp_path):
    path = _flatten_by_shape_model(tmp_path, dims=(1, 3, 8, 8))
    with pytest.raises(SampleError, match=r"sample inputs \['nope'\] are not inputs of the model"):
        compile_model(path, tmp_path / "a", sample_inputs={"nope": np.zeros(3, np.float32)})
    with pytest.raises(InvalidInput, match=r"does not fit the model's shape"):
        compile_model(path, tmp_path / "b", sample_inputs={"x": np.zeros((1, 3, 9, 9), np.float32)})
    with pytest.raises(SampleError, match=r"sample input 'x' is int64, the model takes float32"):
        compile_model(path, tmp_path / "c", sample_inputs={"x": np.zeros((1, 3, 8, 8), np.int64)})


def test_a_sample_binds_symbolic_dims_without_input_shape(tmp_path):
    path = _flatten_by_shape_model(tmp_path)
    x = RNG.standard_normal((3, 3, 8, 8)).astype(np.float32)
    r = compile_model(path, tmp_path / "out", sample_inputs={"x": x})
    assert r.manifest.inputs[0].shape == [3, 3, 8, 8] and len(r.manifest.segments) == 1
    assert np.array_equal(Bundle.open(r.bundle_dir).read_reference()[0]["x"], x)


def test_op_neither_tensorrt_nor_tvm_takes_fails_naming_op_node_and_the_version_that_would(tmp_path):
    hidden = 4
    nodes = [helper.make_node("LSTM", ["x", "W", "R"], ["Y", "Yh"], hidden_size=hidden, name="encoder/lstm"),
             helper.make_node("Relu", ["Yh"], ["y"])]
    g = helper.make_graph(nodes, "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, hidden])],
                          [_const("W", RNG.standard_normal((1, 4 * hidden, 3)).astype(np.float32)),
                           _const("R", RNG.standard_normal((1, 4 * hidden, hidden)).astype(np.float32))])
    path = _save(tmp_path, g)
    need = format_version(OP_TABLE["LSTM"].min_trt)
    with pytest.raises(TvmImportError) as err:
        compile_model(path, tmp_path / "out", exclude_ops=("LSTM",))
    msg = str(err.value)
    assert "\n" not in msg and "LSTM node 'encoder/lstm'" in msg and "TVM 0.27's ONNX importer has no LSTM" in msg
    assert "kept in TVM on request (--no-offload LSTM)" in msg and "drop --no-offload LSTM: TensorRT 10.3.0 takes it" in msg
    with pytest.raises(TvmImportError) as err:  # a target below the first TensorRT whose parser has LSTM
        compile_model(path, tmp_path / "old", trt_version="6.0.1")
    assert f"TensorRT >= {need} takes it: compile for a device or --trt-version that has it" in str(err.value)
    assert not (tmp_path / "out").exists()
    # and where the target's TensorRT takes it, it is simply offloaded
    r = compile_model(path, tmp_path / "ok")
    assert [p["kind"] for p in r.parts] == ["tensorrt"] and need


def test_tvm_warnings_stay_off_the_terminal_and_verbose_shows_them(tmp_path):
    # a Gather left to TVM makes its C++ side warn "Fast mode segfaults when there are out-of-bounds indices"
    # on stderr, and names with dots and slashes (what PyTorch and tf2onnx write) reach it renamed
    nodes = [helper.make_node("Relu", ["input.1"], ["model/relu;1"]),
             helper.make_node("Gather", ["model/relu;1", "idx"], ["out.3"], axis=1)]
    g = helper.make_graph(nodes, "dots", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("out.3", TensorProto.FLOAT, [1, 2])],
                          [_const("idx", np.array([3, 1], np.int64))])
    path = _save(tmp_path, g)
    cmd = [sys.executable, "-m", "host.cli.app", "compile", str(path), "--no-offload", "Gather"]
    quiet = subprocess.run(cmd + ["-o", str(tmp_path / "a")], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "Warning" not in quiet.stderr and "segfaults" not in quiet.stderr, quiet.stderr
    loud = subprocess.run(cmd + ["-o", str(tmp_path / "b"), "-v"], capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0 and "host.compiler.lower: tvm: " in loud.stderr and "segfaults" in loud.stderr
    bundle = Bundle.open(tmp_path / "a" / "bundle")
    ins, want = bundle.read_reference()
    got = run_bundle(bundle, onnxruntime_runners(bundle), ins)
    np.testing.assert_array_equal(got["out.3"], want["out.3"])


@pytest.mark.parametrize("trt", ["8.2.1", "8.5.2", "10.3.0"])
def test_dynamic_batch_keeps_the_batch_shape_subgraph_inside_one_tensorrt_segment(tmp_path, trt):
    import onnxruntime as ort

    path = batch_arithmetic_model(tmp_path)
    r = compile_model(path, tmp_path / "out", trt_version=trt, batch="1:2:4")
    m = r.manifest
    assert [p["kind"] for p in r.parts] == ["tensorrt"] and m.not_offloaded == [] and m.remainder is None
    assert {"Shape", "Gather", "Mul", "Concat", "Reshape", "Expand"} <= set(m.segments[0].ops)  # not folded
    assert m.inputs[0].shape == ["batch", 3, 8, 8] and m.outputs[0].shape == ["batch", 4, 8, 8]
    bundle = Bundle.open(r.bundle_dir)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 3, 4):
        x = RNG.standard_normal((b, 3, 8, 8)).astype(np.float32)
        got = run_bundle(bundle, onnxruntime_runners(bundle), {"x": x})["y"]
        np.testing.assert_allclose(got, sess.run(["y"], {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_clip_with_a_run_time_bound_becomes_max_min_inside_the_segment(tmp_path):
    # a mel front-end: clip the log-spectrum at its own maximum minus 80 dB
    nodes = [helper.make_node("ReduceMax", ["x"], ["peak"], keepdims=0),
             helper.make_node("Sub", ["peak", "range"], ["floor"]),
             helper.make_node("Clip", ["x", "floor"], ["y"])]
    g = helper.make_graph(nodes, "melclip", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
                          [_const("range", np.float32(1.0))])
    path = _save(tmp_path, g)
    r = compile_model(path, tmp_path / "out")
    assert [p["kind"] for p in r.parts] == ["tensorrt"] and "Clip" not in r.manifest.segments[0].ops
    assert r.manifest.options["prepare"]["rewrites"] == {"Clip with run-time bounds -> Max/Min": 1}
    assert _rel_err(r.bundle_dir) == 0.0


@pytest.mark.parametrize("allowzero", [0, 1])
def test_reshape_allowzero_without_effect_is_dropped_for_an_older_parser_opset(tmp_path, allowzero):
    # 0 is the default; 1 (what PyTorch's exporter writes) changes nothing when the shape holds no 0
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["y"], allowzero=allowzero)]
    g = helper.make_graph(nodes, "reshape14", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
                          [_const("shape", np.array([3, 4], np.int64))])
    path = _save(tmp_path, g, opset=14)
    r = compile_model(path, tmp_path / "out", trt_version="8.2.1")  # its parser reads opset <= 13
    assert [p["kind"] for p in r.parts] == ["tensorrt"] and r.manifest.segments[0].opset == 13
    assert _rel_err(r.bundle_dir) == 0.0


def test_layer_normalization_is_decomposed_below_tensorrt_8_6_and_kept_from_8_6(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("LayerNormalization", ["h", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5)]
    g = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 8])],
                          [_const("w", RNG.standard_normal((8, 8)).astype(np.float32)),
                           _const("gamma", RNG.standard_normal(8).astype(np.float32)),
                           _const("beta", RNG.standard_normal(8).astype(np.float32))])
    path = _save(tmp_path, g, opset=17)
    old = compile_model(path, tmp_path / "a", trt_version="8.5.2")
    assert [p["kind"] for p in old.parts] == ["tensorrt"] and "LayerNormalization" not in old.manifest.segments[0].ops
    assert list(old.manifest.options["prepare"]["rewrites"].values()) == [1]
    assert _rel_err(old.bundle_dir) < 1e-5
    new = compile_model(path, tmp_path / "b", trt_version="8.6.1")
    assert "LayerNormalization" in new.manifest.segments[0].ops and new.manifest.options["prepare"]["rewrites"] == {}


def test_independent_heads_share_one_segment_unless_a_tvm_part_lies_between(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["boxes"]), helper.make_node("Sigmoid", ["x"], ["scores"])]
    g = helper.make_graph(nodes, "heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 8]),
                           helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 8])])
    r = compile_model(_save(tmp_path, g), tmp_path / "a")
    assert [(p["kind"], sorted(p["ops"])) for p in r.parts] == [("tensorrt", ["Relu", "Sigmoid"])]
    assert _rel_err(r.bundle_dir) == 0.0
    # Relu -> Erf (kept in TVM) -> Tanh: merging Relu's and Tanh's segments would need Erf inside, refused
    chain = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Erf", ["a"], ["b"]),
             helper.make_node("Tanh", ["b"], ["y"])]
    g2 = helper.make_graph(chain, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    r2 = compile_model(_save(tmp_path, g2, name="c.onnx"), tmp_path / "b", exclude_ops=("Erf",))
    assert [p["kind"] for p in r2.parts] == ["tensorrt", "tvm", "tensorrt"]
    assert _rel_err(r2.bundle_dir) < 1e-6
