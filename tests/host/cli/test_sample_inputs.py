"""`--inputs` / `--input`, `--input-shape` and `--no-offload` mean the same on compile, push, bench and run."""
from __future__ import annotations

import numpy as np

from tests.exporter_models import flatten_by_shape_model, if_reading_outer_graph_model
from tests.host.cli.helpers import parse_json


def test_push_with_an_integer_input_takes_its_samples_from_an_npz_and_verifies_against_them(
        agent_factory, deploy, tmp_path):
    model = if_reading_outer_graph_model(tmp_path)
    agent = agent_factory()
    refused = deploy("push", str(model), "--device", agent.address)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: input 'sr' is int64 [1]: give its values with --inputs FILE.npz or --input sr=FILE.npy "
        "(random integers make no meaningful reference)")
    x = np.random.default_rng(3).standard_normal((1, 4)).astype(np.float32)
    np.savez(tmp_path / "samples.npz", x=x, sr=np.array([16000], np.int64))
    data = parse_json(deploy("push", str(model), "--device", agent.address, "--inputs", str(tmp_path / "samples.npz"),
                             "--json", check=True))
    assert data["verify"]["passed"] and data["verify"]["max_rel_err"] < 1e-6
    # --input NAME=FILE.npy wins over the .npz: another sample rate takes the other branch, so another bundle
    np.save(tmp_path / "sr.npy", np.array([4000], np.int64))
    other = parse_json(deploy("push", str(model), "--device", agent.address, "--inputs", str(tmp_path / "samples.npz"),
                              "--input", f"sr={tmp_path / 'sr.npy'}", "--json", check=True))
    assert other["bundle_digest"] != data["bundle_digest"] and other["compile"]["cache"] == "miss"
    assert other["verify"]["passed"]


def test_push_no_offload_keeps_the_op_in_a_tvm_part(agent_factory, deploy, tmp_path):
    model = flatten_by_shape_model(tmp_path, dims=(1, 3, 8, 8))
    agent = agent_factory()
    data = parse_json(deploy("push", str(model), "--device", agent.address, "--no-offload", "Relu", "--json",
                             check=True))
    assert [(p["kind"], p["ops"]) for p in data["parts"]] == [("tensorrt", 1), ("tensorrt", 2), ("tvm", 1)]
    assert data["verify"]["passed"]


def test_run_with_a_symbolic_model_takes_the_shape_from_its_inputs(agent_factory, deploy, tmp_path):
    model = flatten_by_shape_model(tmp_path)  # input x is [N, 3, 8, 8]
    agent = agent_factory()
    x = np.random.default_rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    data = parse_json(deploy("run", str(model), "--device", agent.address, "--input", f"x={tmp_path / 'x.npy'}",
                             "-o", str(tmp_path / "out.npz"), "--json", check=True))
    assert data["outputs"] == [{"name": "y", "dtype": "float32", "shape": [2, 5]}]


def test_bad_sample_files_are_one_line_errors_before_any_device_work(deploy, tmp_path):
    model = flatten_by_shape_model(tmp_path, dims=(1, 3, 8, 8))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    for args, expect in (
            (["--inputs", str(tmp_path / "missing.npz")], "error: --inputs "),
            (["--inputs", str(tmp_path / "bad.npz")], "is not an .npz of arrays"),
            (["--input", "x"], "error: --input 'x' must be NAME=FILE.npy")):
        proc = deploy("compile", str(model), "-o", str(tmp_path / "out"), *args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert expect in lines[-1] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
