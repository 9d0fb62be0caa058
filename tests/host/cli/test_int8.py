"""`deploy compile/push --int8` through the installed entry point: bad calibration data is one line and exit 2,
an accuracy floor fails the compile, a push verifies against the INT8 reference on a real loopback agent, and
the agent's cache keeps FP32 and INT8 engines apart."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.host.cli.helpers import parse_json


def _error_line(proc) -> str:
    """The one error line (a progress line such as "compiling ..." may come before it)."""
    errors = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and proc.stderr.strip().endswith(errors[0]), proc.stderr
    return errors[0]


def _samples(n: int = 6, shape=(1, 3, 32, 32), dtype=np.float32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(dtype)


@pytest.fixture
def calib(tmp_path: Path) -> Path:
    path = tmp_path / "cal.npz"
    np.savez(path, input=_samples())
    return path


def _bad(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.npz"
    if kind == "wrong-name":
        np.savez(path, image=_samples())
    elif kind == "wrong-shape":
        np.savez(path, input=_samples(shape=(1, 3, 16, 16)))
    elif kind == "no-sample-axis":
        np.savez(path, input=_samples()[0])
    elif kind == "wrong-dtype":
        np.savez(path, input=np.ones((4, 1, 3, 32, 32), np.int32))
    elif kind == "empty":
        np.savez(path, input=np.zeros((0, 1, 3, 32, 32), np.float32))
    elif kind == "no-arrays":
        np.savez(path)
    elif kind == "not-npz":
        path.write_bytes(b"not a zip file")
    elif kind == "empty-dir":
        path = tmp_path / "empty"
        path.mkdir()
    return path


@pytest.mark.parametrize("kind,needle", [
    ("wrong-name", "the model's inputs are ['input']"),
    ("wrong-shape", "it needs [N, 1, 3, 32, 32]"),
    ("no-sample-axis", "it needs [N, 1, 3, 32, 32]"),
    ("wrong-dtype", "is int32, the model's input is float32"),
    ("empty", "holds no samples"),
    ("no-arrays", "holds no arrays"),
    ("not-npz", "cannot be read as .npz/.npy"),
    ("empty-dir", "holds no arrays"),
])
def test_bad_calibration_data_is_one_line_exit_2_and_writes_no_bundle(deploy, tiny_model, tmp_path, kind, needle):
    out = tmp_path / "out"
    proc = deploy("compile", str(tiny_model), "-o", str(out), "--int8", "--calibration", str(_bad(tmp_path, kind)))
    assert proc.returncode == 2, proc.stderr
    assert needle in _error_line(proc), proc.stderr
    assert not out.exists()


def test_a_calibration_folder_of_npy_files_named_by_input_is_taken_and_json_stays_one_object(
        deploy, tiny_model, tmp_path):
    folder = tmp_path / "cal"
    folder.mkdir()
    np.save(folder / "input.npy", _samples())
    proc = deploy("compile", str(tiny_model), "-o", str(tmp_path / "out"), "--int8", "--calibration", str(folder),
                  "--calibrator", "percentile", "--json")  # its calibrator print()s progress: not on our stdout
    import json

    data = json.loads(proc.stdout)
    assert data["precision"] == "int8" and data["int8"]["calibration_samples"] == 6


@pytest.mark.parametrize("args,needle", [
    (["--int8"], "--int8 needs --calibration"),
    (["--calibration", "x.npz"], "only apply with --int8"),
    (["--max-rel-err", "0.1"], "only applies with --int8"),
    (["--int8", "--calibration", "CAL", "--calibrator", "kl"], "unknown calibrator 'kl'"),
])
def test_int8_flags_without_their_partners_are_one_line_exit_2(deploy, tiny_model, tmp_path, calib, args, needle):
    args = [str(calib) if a == "CAL" else a for a in args]
    proc = deploy("compile", str(tiny_model), "-o", str(tmp_path / "out"), *args)
    assert proc.returncode == 2 and needle in _error_line(proc), proc.stderr


def test_an_accuracy_floor_fails_the_compile_with_one_line_and_writes_nothing(deploy, tiny_model, tmp_path, calib):
    out = tmp_path / "out"
    proc = deploy("compile", str(tiny_model), "-o", str(out), "--int8", "--calibration", str(calib),
                  "--max-rel-err", "1e-9")
    assert proc.returncode == 1
    line = _error_line(proc)
    assert "above --max-rel-err 1e-09" in line and "'logits'" in line, proc.stderr
    assert not out.exists()
    proc = deploy("compile", str(tiny_model), "-o", str(out), "--int8", "--calibration", str(calib),
                  "--min-cosine", "0.999999999")
    assert proc.returncode == 1 and "below --min-cosine" in _error_line(proc), proc.stderr


def test_push_int8_verifies_on_the_agent_against_the_int8_reference_and_reports_accuracy(
        agent_factory, deploy, tiny_model, calib):
    agent = agent_factory()
    data = parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--int8", "--calibration",
                             str(calib), "--json"))
    assert data["precision"] == "int8" and data["int8_warning"] is None  # x86-cpu: no GPU to warn about
    assert data["verify"]["passed"] and data["verify"]["max_rel_err"] < 1e-3  # same Q/DQ graph on the agent
    acc = data["accuracy"]
    assert acc["dataset"] == "calibration" and acc["samples"] == 6
    assert 0 < acc["max_rel_err"] < 0.1 and acc["min_cosine"] > 0.99
    assert acc["outputs"][0]["top1_agreement"] is not None


def test_the_agent_cache_keeps_fp32_and_int8_engines_of_one_model_apart(agent_factory, deploy, tiny_model, calib,
                                                                        tmp_path):
    agent = agent_factory()
    fp32 = parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--json"))
    int8 = parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--int8", "--calibration",
                             str(calib), "--json"))
    assert fp32["precision"] == "fp32" and fp32["accuracy"] is None
    assert [s["cache"] for s in int8["build"]["segments"]] == ["miss"]  # not the FP32 engine
    other = tmp_path / "other.npz"
    np.savez(other, input=_samples(seed=9))
    again = parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--int8", "--calibration",
                              str(other), "--json"))
    assert [s["cache"] for s in again["build"]["segments"]] == ["miss"]  # other samples, other scales
    engines = parse_json(deploy("cache", "ls", "--device", agent.address, "--json"))["engines"]
    precisions = sorted(e["attributes"]["precision"] for e in engines)
    assert precisions == ["fp32", "int8", "int8"]  # (the int8+fp16 push below adds a fourth)
    calibrations = {e["attributes"].get("calibration") for e in engines if e["attributes"]["precision"] == "int8"}
    assert len(calibrations) == 2 and all(c.startswith("sha256:") for c in calibrations)
    assert [s["cache"] for s in parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--int8",
                                                  "--calibration", str(calib), "--json"))["build"]["segments"]] == ["hit"]
    half = parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--int8", "--calibration",
                             str(calib), "--fp16", "--json"))
    assert half["precision"] == "int8+fp16" and [s["cache"] for s in half["build"]["segments"]] == ["miss"]
