"""--shape-range / --shape-profiles: bad ranges are one line and exit 2 with nothing written; a ranged bundle keeps
its symbolic dims, records its profiles and reproduces onnxruntime at MIN, OPT, MAX and shapes between."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from device_agent.bundle import Bundle
from device_agent.bundle_runtime import onnxruntime_runners, run_bundle
from device_agent.errors import InvalidInput
from device_agent.shape_profiles import pick
from host.compiler.api import compile_model
from host.compiler.shape_ranges import parse_input_shape, profiles_from_flags, read_shape_profiles
from tests.host.cli.helpers import tiny_conv_net

DEPLOY = [sys.executable, "-m", "host.cli.app"]
RANGE = "input=1x3x16x16:1x3x32x32:1x3x64x64"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """Bx3xHxW, batch fixed at 1, height and width symbolic."""
    return tiny_conv_net(tmp_path_factory.mktemp("ranged") / "m.onnx", size=("H", "W"))


@pytest.mark.parametrize("args, message", [
    (["--shape-range", "input=1x3x16x16:1x3x8x32:1x3x64x64"], "MIN 16 > OPT 8 at dim 2; each dim needs MIN <= OPT"),
    (["--input-shape", "input=1x3x48x0"], "--input-shape input: dim 0 in 1x3x48x0 is not a size between 1"),
    (["--shape-range", "input=1x3x16:1x3x32:1x3x64"], "rank 3, but the model's input 'input' has rank 4"),
    ([], "input 'input' dim 2 is symbolic ('H') and has no size: fix it with --input-shape input=Dx... or give "
         "its range with --shape-range input=MIN:OPT:MAX"),
])
def test_a_bad_range_is_one_line_exit_2_and_nothing_written(model, tmp_path, args, message):
    out = tmp_path / "out"
    res = subprocess.run(DEPLOY + ["compile", str(model), "-o", str(out)] + args, capture_output=True, text=True,
                         timeout=120)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("compiling")]
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize("ranges, batch, message", [
    (["input=1x3x16x16:1x3x32x32:1x3x64x24"], None, "OPT 32 > MAX 24 at dim 3"),
    (["input=1x1x16x16:1x3x32x32:1x3x64x64"], None, "the model fixes dim 1 of 'input' at 3"),
    (["input=1x3x0x16:1x3x32x32:1x3x64x64"], None, "dim 0 in 1x3x0x16 is not a size between 1"),
    (["input=1x3x16x16"], None, "must be NAME=MIN:OPT:MAX with full shapes"),
    (["image=1x3x16x16:1x3x32x32:1x3x64x64"], None, "names 'image', but the model's inputs are"),
    ([RANGE, RANGE], None, "names input 'input' twice"),
    ([RANGE], "1:1:2", "--batch-range is the short form"),
])
def test_each_bad_range_names_what_is_wrong(model, tmp_path, ranges, batch, message):
    with pytest.raises(InvalidInput, match=re.escape(message)):
        compile_model(model, tmp_path / "out", shape_profiles=profiles_from_flags(ranges, None, batch))
    assert not (tmp_path / "out").exists()
    with pytest.raises(InvalidInput, match=re.escape("dim -1 in 1x3x-1x8 is not a size between 1")):
        parse_input_shape("input=1x3x-1x8")


def test_a_profile_file_with_several_tables_and_its_mistakes(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[narrow]\ninput = "1x3x16x16:1x3x24x24:1x3x32x32"\n'
                 '[wide]\ninput = "1x3x32x32:1x3x48x48:1x3x64x64"\n')
    assert [p["input"][2] for p in read_shape_profiles(f)] == [[1, 3, 32, 32], [1, 3, 64, 64]]
    f.write_text('[narrow]\ninput = "1x3x16x16:1x3x24x24:1x3x32x32"\n[wide]\nother = "1x4:1x5:1x6"\n')
    with pytest.raises(InvalidInput, match="every profile must range the same inputs"):
        read_shape_profiles(f)
    f.write_text('input = "1x3x16x16:1x3x24x24:1x3x32x32"\n')
    with pytest.raises(InvalidInput, match="needs one table per profile"):
        read_shape_profiles(f)
    with pytest.raises(InvalidInput, match="no such file"):
        read_shape_profiles(tmp_path / "missing.toml")


def _check_against_onnxruntime(model: Path, bundle: Bundle, shapes) -> None:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for i, hw in enumerate(shapes):
        x = np.random.default_rng(i).standard_normal((1, 3) + tuple(hw)).astype(np.float32)
        got = run_bundle(bundle, onnxruntime_runners(bundle), {"input": x})["logits"]
        np.testing.assert_allclose(got, sess.run(None, {"input": x})[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("no_offload", [(), ("Relu",)], ids=["one-segment", "tvm-remainder"])
def test_a_ranged_bundle_runs_every_shape_in_range_and_refuses_others(model, tmp_path, no_offload):
    r = compile_model(model, tmp_path / "out", shape_profiles=[{"input": [[1, 3, 16, 16], [1, 3, 32, 32],
                                                                          [1, 3, 64, 64]]}],
                      exclude_ops=no_offload)
    m = r.manifest
    assert m.inputs[0].shape == [1, 3, "H", "W"]
    assert m.options["shape_profiles"] == [{"input": {"min": [1, 3, 16, 16], "opt": [1, 3, 32, 32],
                                                      "max": [1, 3, 64, 64]}}]
    first = m.segments[0]
    assert first.profiles == [[{"name": "input", "min": [1, 3, 16, 16], "opt": [1, 3, 32, 32],
                                "max": [1, 3, 64, 64]}]]
    assert (m.remainder is not None) == bool(no_offload)
    from host.compiler.inspect import describe, render_lines

    assert "profile 0: input 1x3x16x16..1x3x64x64 (opt 1x3x32x32)" in render_lines(describe(m))  # deploy inspect
    bundle = Bundle.open(r.bundle_dir)
    assert bundle.read_reference()[0]["input"].shape == (1, 3, 32, 32)  # the reference at OPT
    rng = np.random.default_rng(7)
    _check_against_onnxruntime(model, bundle, [(16, 16), (32, 32), (64, 64)]
                               + [tuple(rng.integers(16, 65, 2)) for _ in range(3)])
    with pytest.raises(InvalidInput, match=r"input 'input' has shape 1x3x65x16, outside every optimization profile "
                                           r"of this bundle \(input: 1x3x16x16..1x3x64x64\)"):
        run_bundle(bundle, onnxruntime_runners(bundle), {"input": np.zeros((1, 3, 65, 16), np.float32)})


def test_several_profiles_reach_each_segment_and_the_tightest_is_picked(model, tmp_path):
    profiles = [{"input": [[1, 3, 16, 16], [1, 3, 24, 24], [1, 3, 32, 32]]},
                {"input": [[1, 3, 16, 16], [1, 3, 48, 48], [1, 3, 64, 64]]}]
    r = compile_model(model, tmp_path / "out", shape_profiles=profiles)
    assert [p[0]["max"] for p in r.manifest.segments[0].profiles] == [[1, 3, 32, 32], [1, 3, 64, 64]]
    bounds = [{"input": (p["input"][0], p["input"][2])} for p in profiles]
    assert pick(bounds, {"input": (1, 3, 20, 20)}) == 0  # both hold it: the narrow one
    assert pick(bounds, {"input": (1, 3, 40, 20)}) == 1
    assert pick(bounds, {"input": (1, 3, 80, 20)}) is None
    _check_against_onnxruntime(model, Bundle.open(r.bundle_dir), [(16, 16), (32, 24), (64, 64)])


def test_a_size_the_range_computes_that_crosses_into_tvm_is_bound_at_run_time(tmp_path):
    """A strided conv's output width depends on the range: the remainder takes the segment's outputs as the agent
    allocates them (``<id>.alloc``) and binds the width with match_cast, so every width in range runs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((2, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
                           helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Sigmoid", ["r"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, "h", "w"])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "m.onnx")
    r = compile_model(tmp_path / "m.onnx", tmp_path / "out", exclude_ops=("Relu",),
                      shape_profiles=[{"x": [[1, 3, 16, 16], [1, 3, 32, 32], [1, 3, 64, 64]]}])
    assert r.manifest.remainder is not None and r.manifest.segments[0].outputs[0].shape == [1, 2, "c_d2", "c_d3"]
    bundle = Bundle.open(r.bundle_dir)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for hw in [(16, 16), (17, 33), (64, 63)]:
        x = np.random.default_rng(hw[1]).standard_normal((1, 3) + hw).astype(np.float32)
        got = run_bundle(bundle, onnxruntime_runners(bundle), {"x": x})["y"]
        np.testing.assert_allclose(got, sess.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_compile_and_inspect_json_of_a_ranged_bundle_name_its_profiles_and_symbolic_dims(model, tmp_path):
    from tests.host.cli.helpers import parse_json

    out = tmp_path / "out"
    parse_json(subprocess.run(DEPLOY + ["compile", str(model), "-o", str(out), "--shape-range", RANGE, "--json"],
                              capture_output=True, text=True, timeout=300))
    data = parse_json(subprocess.run(DEPLOY + ["inspect", str(out), "--json"], capture_output=True, text=True,
                                     timeout=120))
    assert data["options"]["shape_profiles"] == [
        {"input": {"min": [1, 3, 16, 16], "opt": [1, 3, 32, 32], "max": [1, 3, 64, 64]}}]
    assert data["inputs"][0]["shape"] == [1, 3, "H", "W"]
