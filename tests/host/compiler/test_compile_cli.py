"""`deploy compile --json` and `deploy inspect` through the installed entry point."""
from __future__ import annotations

import json
import subprocess
import sys

from onnx import helper

DEPLOY = [sys.executable, "-m", "host.cli.app"]


def test_compile_json_and_inspect_explain_every_op_not_offloaded(tiny, save_model, tmp_path):
    m = tiny([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Erf", ["a"], ["b"]),
              helper.make_node("Relu", ["b"], ["y"])], [("x", [2, 8])], [("y", [2, 8])])
    path = save_model(m)
    res = subprocess.run(DEPLOY + ["compile", str(path), "-o", str(tmp_path / "out"), "--trt-version", "6.0.1",
                                   "--json"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["digest"].startswith("sha256:") and len(data["digest"]) == 71
    assert [(s["id"], s["kind"], s["ops"]) for s in data["segments"]] == [
        ("trt_0", "tensorrt", ["Relu"]), ("tvm_0", "tvm", ["Erf"]), ("trt_1", "tensorrt", ["Relu"])]
    assert data["not_offloaded"] == [{"op": "Erf", "node": "Erf_1",
                                      "reason": "erf needs TensorRT >= 7.0.0, target is 6.0.1"}]
    assert (tmp_path / "out" / "bundle.tar").is_file()

    for target in (tmp_path / "out", tmp_path / "out" / "bundle.tar"):
        res = subprocess.run(DEPLOY + ["inspect", str(target)], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert "erf needs TensorRT >= 7.0.0, target is 6.0.1" in res.stdout
        assert "tvm_0" in res.stdout and data["digest"] in res.stdout
    res = subprocess.run(DEPLOY + ["inspect", str(tmp_path / "out"), "--json"], capture_output=True, text=True,
                         timeout=120)
    info = json.loads(res.stdout)
    assert info["digest"] == data["digest"] and info["needs_tvm_runtime"] is True


def test_inspect_of_something_not_a_bundle_is_exit_2(tmp_path):
    res = subprocess.run(DEPLOY + ["inspect", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "is not a bundle" in res.stderr
