"""The seed's runtime variables on the agent (issue 13): `TVM_TENSORRT_*` as aliases of our settings.

Precedence flag > `DEPLOY_AGENT_*` > `TVM_TENSORRT_*` > default; `deploy info --json` reports each build default
in `settings` with where it came from, and the agent uses it (engines built FP16, with that workspace, one engine
per batch size, the cache in that directory).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from device_agent.config import SEED_ALIASES, add_arguments, from_namespace
from tests.host.cli.helpers import parse_json, tiny_conv_net

SEED = {"fp16": ("TVM_TENSORRT_USE_FP16", "1", True, ["--fp16"], True),
        "cache_dir": ("TVM_TENSORRT_CACHE_DIR", "/tmp/seed-cache", Path("/tmp/seed-cache"),
                      ["--cache-dir", "/tmp/flag-cache"], Path("/tmp/flag-cache")),
        "max_workspace_bytes": ("TVM_TENSORRT_MAX_WORKSPACE_SIZE", "12345", 12345,
                                ["--max-workspace-bytes", "777"], 777),
        "multi_engine_mode": ("TVM_TENSORRT_MULTI_ENGINE", "1", 1, ["--multi-engine-mode", "0"], 0)}


def _settings(argv: list[str], environ: dict[str, str]):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_namespace(parser.parse_args(argv), environ)


def test_every_seed_variable_is_an_alias():
    assert {name: var for name, (var, *_rest) in SEED.items()} == SEED_ALIASES


@pytest.mark.parametrize("name", sorted(SEED))
def test_precedence_flag_then_ours_then_the_seeds_then_default(name):
    var, raw, value, flag, flag_value = SEED[name]
    ours = "DEPLOY_AGENT_" + name.upper()
    s = _settings([], {var: raw})
    assert getattr(s, name) == value and s.source(name) == var
    default = _settings([], {})
    assert default.source(name) == "default" and getattr(default, name) != value
    ours_raw = {"fp16": "0", "cache_dir": "/tmp/ours", "max_workspace_bytes": "999", "multi_engine_mode": "0"}[name]
    s = _settings([], {var: raw, ours: ours_raw})
    assert s.source(name) == ours and getattr(s, name) != value
    s = _settings(flag, {var: raw, ours: ours_raw})
    assert s.source(name) == "flag" and getattr(s, name) == flag_value


def test_an_empty_seed_variable_is_unset_and_a_bad_one_names_itself():
    assert _settings([], {"TVM_TENSORRT_CACHE_DIR": ""}).source("cache_dir") == "default"
    with pytest.raises(SystemExit, match="TVM_TENSORRT_MAX_WORKSPACE_SIZE"):
        _settings([], {"TVM_TENSORRT_MAX_WORKSPACE_SIZE": "lots"})


def test_agent_started_with_the_seed_variables_reports_and_uses_them(agent_factory, deploy, tmp_path):
    cache = tmp_path / "seed-engines"
    env = {"TVM_TENSORRT_USE_FP16": "1", "TVM_TENSORRT_CACHE_DIR": str(cache),
           "TVM_TENSORRT_MAX_WORKSPACE_SIZE": str(48 << 20), "TVM_TENSORRT_MULTI_ENGINE": "1"}
    agent = agent_factory(env=env)
    settings = json.loads(deploy("info", "--device", agent.address, "--json", check=True).stdout)["settings"]
    assert settings == {"fp16": {"value": True, "source": "TVM_TENSORRT_USE_FP16"},
                        "cache_dir": {"value": str(cache), "source": "TVM_TENSORRT_CACHE_DIR"},
                        "max_workspace_bytes": {"value": 48 << 20, "source": "TVM_TENSORRT_MAX_WORKSPACE_SIZE"},
                        "multi_engine_mode": {"value": 1, "source": "TVM_TENSORRT_MULTI_ENGINE"}}

    model = tiny_conv_net(tmp_path / "dyn.onnx", batch="N")
    pushed = parse_json(deploy("push", str(model), "--device", agent.address, "--batch-range", "1:2:4",
                               "--batch", "2", "--no-verify", "--json"))
    assert pushed["build"]["built"] >= 1 and pushed["build"]["failed"] == 0
    engines = parse_json(deploy("cache", "ls", "--device", agent.address, "--json"))["engines"]
    assert engines
    for e in engines:
        assert e["attributes"]["precision"] == "fp16"  # FP16 engines, and in the cache key
        assert e["attributes"]["workspace"] == str(48 << 20)
        profiles = json.loads(e["attributes"]["profiles"])
        assert profiles and all(p["min"][0] == 2 for prof in profiles for p in prof), profiles  # one per batch
    assert any(p.is_file() for p in cache.rglob("*")), "the engine cache is in TVM_TENSORRT_CACHE_DIR"
    default_dir = agent.store_dir.parent / "engines"
    assert not default_dir.exists() or not any(p.is_file() for p in default_dir.rglob("*"))


def test_the_flag_wins_over_the_seed_variable_on_a_running_agent(agent_factory, deploy, tmp_path):
    agent = agent_factory(env={"TVM_TENSORRT_CACHE_DIR": str(tmp_path / "seed"), "TVM_TENSORRT_MULTI_ENGINE": "1",
                               "TVM_TENSORRT_MAX_WORKSPACE_SIZE": "1000"},
                          cache_dir=tmp_path / "flag", multi_engine_mode="0")
    settings = json.loads(deploy("info", "--device", agent.address, "--json", check=True).stdout)["settings"]
    assert settings["cache_dir"] == {"value": str(tmp_path / "flag"), "source": "flag"}
    assert settings["multi_engine_mode"] == {"value": 0, "source": "flag"}
    assert settings["max_workspace_bytes"] == {"value": 1000, "source": "TVM_TENSORRT_MAX_WORKSPACE_SIZE"}
    assert settings["fp16"] == {"value": False, "source": "default"}


def test_deploy_agent_help_names_the_seed_variables():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "device_agent", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for var in SEED_ALIASES.values():
        assert var in out
