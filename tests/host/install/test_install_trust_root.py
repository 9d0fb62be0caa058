"""`deploy agent install` and the fleet's trust root: which file goes to the device and how the agent is told."""
from __future__ import annotations

from pathlib import Path

import pytest

from device_agent.errors import InvalidInput
from host.install.agent_installer import TRUST_REQUIREMENTS, InstallRequest, _env_file, trust_files
from host.install.ssh import parse_target
from host.security import keys


def request(tmp_path: Path, trust_root: "Path | None" = None) -> InstallRequest:
    return InstallRequest(target=parse_target("me@jetson"), name="jetson", known_hosts=tmp_path / "kh",
                          pki_dir=tmp_path / "pki", token_dir=tmp_path / "tokens", trust_root=trust_root)


def test_the_hosts_trust_root_goes_to_the_device_and_the_agent_requires_signed_bundles(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOY_KEYS_DIR", str(tmp_path / "none"))
    assert trust_files(request(tmp_path)) == {}  # a host without keys: the agent runs with signing off
    assert b"TRUST_ROOT" not in _env_file(request(tmp_path), "/opt/a", {})
    fleet = keys.init(tmp_path / "keys").path
    monkeypatch.setenv("DEPLOY_KEYS_DIR", str(fleet))
    files = trust_files(request(tmp_path))
    assert files == {"trust_root.json": (fleet / keys.TRUST_ROOT).read_bytes()}
    env = _env_file(request(tmp_path), "/opt/a", files).decode()
    assert "DEPLOY_AGENT_TRUST_ROOT=/opt/a/etc/trust_root.json" in env and "DEPLOY_AGENT_REQUIRE_SIGNED=1" in env
    assert any(r.startswith("tuf") for r in TRUST_REQUIREMENTS)
    with pytest.raises(InvalidInput, match="--trust-root .*missing.json"):
        trust_files(request(tmp_path, tmp_path / "missing.json"))
