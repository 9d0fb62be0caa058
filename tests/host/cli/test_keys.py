"""`deploy keys init / rotate / ls`: real keys in a real key directory, through the installed entry point."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tests.host.cli.helpers import parse_json


def test_init_ls_rotate_and_the_refusals(deploy, tmp_path):
    keydir = tmp_path / "keys"
    env = {**os.environ, "DEPLOY_KEYS_DIR": str(keydir)}
    made = parse_json(deploy("keys", "init", "--json", env=env))
    assert [r["role"] for r in made["roles"]] == ["root", "targets", "snapshot", "timestamp"]
    assert made["trust_root"] == str(keydir / "trust_root.json") and made["root_version"] == 1
    root = json.loads(Path(made["trust_root"]).read_text())
    assert root["signed"]["_type"] == "root" and len(root["signatures"]) == 1  # TUF's format, signed
    assert stat.S_IMODE(keydir.stat().st_mode) == 0o700
    key_files = sorted(keydir.glob("*.key"))
    assert len(key_files) == 4 and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in key_files)
    assert all(r["threshold"] == 1 and r["keys"][0]["private_here"] for r in made["roles"])

    again = deploy("keys", "init", env=env)
    assert again.returncode == 2 and "already holds the fleet's keys" in again.stderr

    old_targets = next(r for r in made["roles"] if r["role"] == "targets")["keys"][0]["keyid"]
    rotated = parse_json(deploy("keys", "rotate", "targets", "--json", env=env))
    assert rotated["root_version"] == 2 and rotated["revoked"] == [old_targets[:12]]
    listed = parse_json(deploy("keys", "ls", "--json", env=env))
    targets = next(r for r in listed["roles"] if r["role"] == "targets")
    assert listed["root_version"] == 2 and targets["keys"][0]["keyid"] != old_targets
    assert not list(keydir.glob(f"targets-{old_targets[:12]}.key"))  # the revoked private key is gone

    loose = next(keydir.glob("timestamp-*.key"))
    loose.chmod(0o644)
    refused = deploy("keys", "rotate", "snapshot", env=env)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert f"key file {loose} has loose permissions" in refused.stderr and "chmod 600" in refused.stderr
    assert parse_json(deploy("keys", "ls", "--json", env=env))["root_version"] == 2  # nothing was changed


def test_ls_without_keys_says_how_to_make_them(deploy, tmp_path):
    proc = deploy("keys", "ls", env={**os.environ, "DEPLOY_KEYS_DIR": str(tmp_path / "none")})
    assert proc.returncode == 2 and "deploy keys init" in proc.stderr and proc.stderr.count("\n") == 1
