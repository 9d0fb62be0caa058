"""Bad input: one clear line, InvalidInput (CLI exit 2), and no output directory left behind."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from device_agent.errors import InvalidInput
from host.compiler.api import compile_model

DEPLOY = [sys.executable, "-m", "host.cli.app"]


def _relu(tiny, shape=(1, 4)):
    return tiny([helper.make_node("Relu", ["x"], ["y"])], [("x", list(shape))], [("y", list(shape))])


def _assert_refused(path: Path, out: Path, message: str, **kw) -> None:
    with pytest.raises(InvalidInput, match=message):
        compile_model(path, out, **kw)
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_not_onnx(tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(b"this is not a protobuf \xff\xff")
    _assert_refused(p, tmp_path / "out", "is not an ONNX model")


def test_truncated_file(tiny, save_model, tmp_path):
    big = tiny([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", [1, 64])], [("y", [1, 64])],
               inits={"w": np.ones((64, 64), np.float32)})
    data = save_model(big).read_bytes()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) // 2])
    _assert_refused(p, tmp_path / "out", "is not an ONNX model \\(or is truncated\\)")


def test_opset_out_of_range(tiny, save_model, tmp_path):
    m = _relu(tiny)
    m.opset_import[0].version = 5
    _assert_refused(save_model(m), tmp_path / "out", "opset 5 is outside the supported range")


def test_missing_external_data(tiny, tmp_path):
    m = tiny([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", [1, 64])], [("y", [1, 64])],
             inits={"w": np.ones((64, 64), np.float32)})
    p = tmp_path / "ext.onnx"
    onnx.save(m, str(p), save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
              size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    _assert_refused(p, tmp_path / "out", "external data file 'weights.bin' .* is missing")


def test_external_data_present_compiles(tiny, tmp_path):
    m = tiny([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", [1, 64])], [("y", [1, 64])],
             inits={"w": np.ones((64, 64), np.float32)})
    p = tmp_path / "ext.onnx"
    onnx.save(m, str(p), save_as_external_data=True, location="weights.bin", size_threshold=0)
    r = compile_model(p, tmp_path / "out")
    assert r.manifest.segments[0].ops == ["MatMul"]


def test_unknown_profile(tiny, save_model, tmp_path):
    _assert_refused(save_model(_relu(tiny)), tmp_path / "out", "unknown profile 'jetson-tx9'; choose one of",
                    profile="jetson-tx9")


def test_unresolvable_symbolic_shape(tiny, save_model, tmp_path):
    p = save_model(_relu(tiny, ("n", 4)))
    _assert_refused(p, tmp_path / "out", "input 'x' dim 0 is symbolic \\('n'\\) and has no size: fix it with "
                                         "--input-shape x=Dx... or give its range with --shape-range x=MIN:OPT:MAX")
    _assert_refused(p, tmp_path / "out2", "does not fit the model's shape", input_shapes={"x": [2, 5]})
    # the two documented ways out both work
    assert compile_model(p, tmp_path / "ok1", input_shapes={"x": [2, 4]}).manifest.inputs[0].shape == [2, 4]
    r = compile_model(p, tmp_path / "ok2", batch="1:4:8")
    assert r.manifest.inputs[0].shape == ["batch", 4] and r.manifest.options["batch"] == [1, 4, 8]


def test_bad_trt_version_and_batch_syntax(tiny, save_model, tmp_path):
    p = save_model(_relu(tiny, ("n", 4)))
    _assert_refused(p, tmp_path / "o1", "is not like 8.5", trt_version="eight")
    _assert_refused(p, tmp_path / "o2", "must be MIN:OPT:MAX", batch="8")
    _assert_refused(p, tmp_path / "o3", "needs 1 <= MIN <= OPT <= MAX", batch="4:2:8")


def test_cli_prints_one_line_and_exits_2(tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(b"garbage")
    res = subprocess.run(DEPLOY + ["compile", str(p), "-o", str(tmp_path / "out"), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stdout == ""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "is not an ONNX model" in lines[0]
    assert not (tmp_path / "out").exists()


def test_output_dir_holding_other_files_is_refused(tiny, save_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(InvalidInput, match="not empty and holds no bundle"):
        compile_model(save_model(_relu(tiny)), out)
    assert (out / "precious.txt").read_text() == "keep me"
