"""Each exit code of push/bench/run through the installed entry point: 0, 1, 2, 3 (130 is in test_push/test_bench).

With --json, stdout holds nothing on failure and stderr exactly one line.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from tests.host.cli.helpers import parse_json


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert proc.stdout == ""
    return lines[0]


def test_exit_0_on_success(agent_factory, deploy, tiny_model):
    agent = agent_factory()
    assert parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--json"))["verify"]["passed"]


def test_exit_1_when_the_device_refuses_the_bundle_and_it_keeps_serving(agent_factory, deploy, tiny_model):
    agent = agent_factory(max_upload_bytes=4096)  # smaller than any bundle
    proc = deploy("push", str(tiny_model), "--device", agent.address, "--json")
    assert proc.returncode == 1, proc.stderr
    assert "RESOURCE_EXHAUSTED" in _one_error_line(proc)
    assert agent.alive()
    assert deploy("info", "--device", agent.address).returncode == 0


def test_exit_1_when_verification_exceeds_the_tolerance(agent_factory, deploy, tiny_model, tmp_path):
    import json

    import numpy as np

    from device_agent.fileio import sha256_file

    agent = agent_factory()
    # a bundle whose reference output is off by 1 (its manifest digest updated, so it is a valid bundle that is
    # wrong): the device's answer is compared and the push fails on the device side
    assert deploy("compile", str(tiny_model), "-o", str(tmp_path / "out")).returncode == 0
    bundle = tmp_path / "out" / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    [entry] = manifest["reference"]["outputs"]
    np.save(bundle / entry["path"], np.load(bundle / entry["path"]) + 1.0)
    entry["digest"] = sha256_file(bundle / entry["path"])
    for pinned in manifest.get("files", []):  # schema 2 pins every file again (docs/transport.md)
        if pinned["path"] == entry["path"]:
            pinned.update(digest=entry["digest"], size=(bundle / entry["path"]).stat().st_size)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    proc = deploy("push", str(bundle), "--device", agent.address, "--json")
    assert proc.returncode == 1, proc.stderr
    assert "differ from the host's reference" in _one_error_line(proc)


def test_exit_2_for_a_missing_model(deploy, tmp_path):
    proc = deploy("push", str(tmp_path / "nope.onnx"), "--device", "127.0.0.1:9", "--json")
    assert proc.returncode == 2
    assert "no such file" in _one_error_line(proc)


def test_exit_2_for_a_file_that_is_not_onnx(agent_factory, deploy, tmp_path):
    agent = agent_factory()
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    proc = deploy("push", str(bad), "--device", agent.address, "--json")
    assert proc.returncode == 2, proc.stderr
    assert "not an ONNX model" in _one_error_line(proc)
    bundles = Path(os.environ["XDG_CACHE_HOME"]) / "deploy" / "bundles"
    assert not list(bundles.glob(".tmp-*")), "a failed compile leaves no partial bundle in the host cache"


def test_exit_2_for_an_unknown_device_name(deploy, tiny_model, tmp_path):
    env = {**os.environ, "DEPLOY_INVENTORY": str(tmp_path / "empty.toml")}
    proc = deploy("push", str(tiny_model), "--device", "no-such-device", "--json", env=env)
    assert proc.returncode == 2
    assert "unknown device 'no-such-device'" in _one_error_line(proc)


def test_exit_2_for_an_unknown_profile(agent_factory, deploy, tiny_model):
    agent = agent_factory()
    proc = deploy("push", str(tiny_model), "--device", agent.address, "--profile", "jetson-tx9", "--json")
    assert proc.returncode == 2
    assert "unknown profile 'jetson-tx9'" in _one_error_line(proc)


def test_exit_2_for_a_usage_error(deploy, tiny_model):
    proc = deploy("push", str(tiny_model), "--iterations", "many")
    assert proc.returncode == 2


def test_exit_3_when_the_device_is_unreachable(deploy, tiny_model):
    for command in (["push", str(tiny_model)], ["bench", str(tiny_model)], ["cache", "ls"]):
        proc = deploy(*command, "--device", f"127.0.0.1:{_closed_port()}", "--json")
        assert proc.returncode == 3, (command, proc.stderr)
        assert "unreachable" in _one_error_line(proc)


def test_exit_1_not_3_when_the_agent_answers_that_it_lacks_the_requested_backend(agent_factory, deploy, tiny_model):
    agent = agent_factory()
    info = parse_json(deploy("info", "--device", agent.address, "--json"))
    if any(b["name"] == "trtexec" and b["available"] for b in info["backends"]):
        import pytest

        pytest.skip("this machine has trtexec")
    proc = deploy("push", str(tiny_model), "--device", agent.address, "--backend", "trtexec", "--json")
    assert proc.returncode == 1, proc.stderr
    line = _one_error_line(proc)
    assert "trtexec" in line and "not available on this device" in line and "unreachable" not in line
