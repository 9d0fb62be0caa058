"""Model versions across releases: this host with an agent of the previous release (8001344, before model versions),
and a host of that release with this agent. Both processes run the previous release's own code, taken from git."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, AgentHandle
from tests.host.cli.helpers import tiny_conv_net

PREVIOUS_RELEASE = "8001344"  # the last commit that landed before the model RPCs


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory) -> Path:
    if subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", PREVIOUS_RELEASE + "^{commit}"],
                      capture_output=True).returncode != 0:
        pytest.skip(f"this clone lacks commit {PREVIOUS_RELEASE} (a shallow clone)")
    root = tmp_path_factory.mktemp("previous")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", PREVIOUS_RELEASE], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root


def _env(code: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(code))  # with cwd=code: that release's packages come first


def test_this_host_pushes_to_a_previous_release_agent_and_says_it_keeps_no_versions(previous_release, tmp_path,
                                                                                    deploy):
    old = AgentHandle(store_dir=tmp_path / "store", args=["--backend", "onnxruntime"], log_path=tmp_path / "a.log",
                      env=_env(previous_release))
    boot = f"import sys; sys.path.insert(0, {str(previous_release)!r}); from device_agent.__main__ import main; main()"
    old.command = lambda listen: [sys.executable, "-c", boot, "--listen", listen,  # type: ignore[method-assign]
                                  "--store", str(old.store_dir), *old.args]
    old.start()
    try:
        model = tiny_conv_net(tmp_path / "det.onnx")
        plain = deploy("push", str(model), "--device", old.address, "--json")
        assert plain.returncode == 0, plain.stderr
        pushed = json.loads(plain.stdout)
        assert pushed["model"] is None  # pushed, built and verified as before; no version
        # that agent takes no FindMissingBlobs: the whole bundle went as one archive of schema 1, weights inline
        assert pushed["upload"]["transport"] == "archive" and pushed["upload"]["parts_total"] == 1
        named = deploy("push", str(model), "--device", old.address, "--name", "det")
        assert named.returncode != 0
        errors = [line for line in named.stderr.splitlines() if line.startswith("error")]  # progress lines before it
        assert len(errors) == 1 and "does not keep model versions" in errors[0] and "upgrade it" in errors[0], errors
    finally:
        old.stop()


def test_a_previous_release_host_pushes_to_this_agent(previous_release, tmp_path, agent_factory):
    agent = agent_factory(backend="onnxruntime")
    model = tiny_conv_net(tmp_path / "det.onnx")
    proc = subprocess.run([sys.executable, "-c", "from host.cli.app import entry; entry()", "push", str(model),
                           "--device", agent.address, "--json"], capture_output=True, text=True, timeout=300,
                          env=_env(previous_release), cwd=str(previous_release))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["verify"]["passed"] and "model" not in out  # the old host knows nothing of versions
    store = subprocess.run([sys.executable, "-c", "from host.cli.app import entry; entry()", "store", "prune",
                            "--device", agent.address, "--all", "--json"], capture_output=True, text=True,
                           timeout=120, env=_env(previous_release), cwd=str(previous_release))
    assert store.returncode == 0, store.stderr  # a reply with the new `kept` field reads fine there
