"""`deploy run`: .npy inputs in, an .npz of outputs out, equal to onnxruntime on the original model."""
from __future__ import annotations

import numpy as np

from tests.host.cli.helpers import parse_json


def test_run_with_npy_inputs_writes_outputs_that_match_onnxruntime_on_the_original_model(agent_factory, deploy,
                                                                                         tiny_model, tmp_path):
    import onnxruntime as ort

    agent = agent_factory()
    x = np.random.default_rng(7).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out" / "y.npz"
    data = parse_json(deploy("run", str(tiny_model), "--device", agent.address, "--input", f"input={tmp_path / 'x.npy'}",
                             "-o", str(out), "--json"))
    assert data["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [1, 10]}]
    got = np.load(out)["logits"]
    want = ort.InferenceSession(str(tiny_model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-4


def test_run_with_an_unknown_input_name_exits_2_names_the_inputs_and_writes_nothing(agent_factory, deploy,
                                                                                    tiny_model, tmp_path):
    agent = agent_factory()
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    out = tmp_path / "y.npz"
    proc = deploy("run", str(tiny_model), "--device", agent.address, "--input", f"image={tmp_path / 'x.npy'}",
                  "-o", str(out), "--json")
    assert proc.returncode == 2, proc.stderr
    assert "['input']" in proc.stderr and "image" in proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stdout == "" and not out.exists()


def test_run_with_a_wrong_shape_is_refused_by_the_agent_with_exit_2_and_it_keeps_serving(agent_factory, deploy,
                                                                                         tiny_model, tmp_path):
    agent = agent_factory()
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 16, 16), np.float32))
    proc = deploy("run", str(tiny_model), "--device", agent.address, "--input", f"input={tmp_path / 'x.npy'}",
                  "-o", str(tmp_path / "y.npz"))
    assert proc.returncode == 2, proc.stderr
    assert "shape" in proc.stderr
    assert not (tmp_path / "y.npz").exists()
    np.save(tmp_path / "ok.npy", np.zeros((1, 3, 32, 32), np.float32))
    ok = deploy("run", str(tiny_model), "--device", agent.address, "--input", f"input={tmp_path / 'ok.npy'}",
                "-o", str(tmp_path / "y.npz"))
    assert ok.returncode == 0, ok.stderr
    assert np.load(tmp_path / "y.npz")["logits"].shape == (1, 10)


def test_run_with_a_file_that_is_not_npy_exits_2_before_any_device_work(deploy, tiny_model, tmp_path):
    bad = tmp_path / "x.npy"
    bad.write_text("not numpy")
    proc = deploy("run", str(tiny_model), "--device", "127.0.0.1:9", "--input", f"input={bad}",
                  "-o", str(tmp_path / "y.npz"))
    assert proc.returncode == 2, proc.stderr  # not 3: the file is checked before the (dead) device
    assert "is not a .npy array" in proc.stderr
