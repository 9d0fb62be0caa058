"""`deploy fleet ls` and `deploy fleet warm` as a user runs them: real agents, the installed entry point."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import tomli_w

from tests.device_agent.onnx_models import conv_net


def inventory_of(tmp_path: Path, devices: dict) -> dict:
    path = tmp_path / "deploy.toml"
    path.write_text(tomli_w.dumps({"devices": devices}))
    return dict(os.environ, DEPLOY_INVENTORY=str(path))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fleet_ls_groups_live_agents_and_lists_a_dead_one_as_unreachable(agent_factory, tmp_path, deploy):
    a, b = agent_factory(), agent_factory()
    env = inventory_of(tmp_path, {"a": {"address": a.address, "profile": "x86-cpu"},
                                  "b": {"address": b.address, "profile": "x86-cpu"},
                                  "gone": {"address": f"127.0.0.1:{closed_port()}"}})
    proc = deploy("fleet", "ls", "--json", env=env)
    assert proc.returncode == 3, proc.stderr
    data = json.loads(proc.stdout)
    [cls] = data["classes"]
    assert [d["name"] for d in cls["devices"]] == ["a", "b"] and cls["facts"]["backend"] == "onnxruntime"
    assert [u["device"] for u in data["unreachable"]] == ["gone"] and data["unreachable"][0]["unreachable"]


def test_fleet_warm_prints_a_table_per_class_reports_a_dead_device_and_skips_warm_ones_on_a_second_run(
        agent_factory, tmp_path, deploy):
    a, b = agent_factory(), agent_factory()
    env = inventory_of(tmp_path, {"a": {"address": a.address, "profile": "x86-cpu"},
                                  "b": {"address": b.address, "profile": "x86-cpu"},
                                  "gone": {"address": f"127.0.0.1:{closed_port()}"}})
    model = tmp_path / "m.onnx"
    model.write_bytes(conv_net())
    first = deploy("fleet", "warm", str(model), env=env)
    assert first.returncode == 3, first.stderr  # every failure was an unreachable device
    assert "1 build(s)" in first.stdout and "built on" in first.stdout and "gone" in first.stdout
    assert "next `deploy fleet warm`" in first.stdout
    assert "gone: down: refused" in first.stdout and "Connection refused" not in first.stdout, "short state; -v for more"
    second = deploy("fleet", "warm", str(model), "--json", env=env)
    data = json.loads(second.stdout)
    assert second.returncode == 3 and data["builds"] == 0 and not data["ok"]
    assert sorted(data["classes"][0]["skipped"]) == ["a", "b"]
    assert [u["device"] for u in data["unreachable"]] == ["gone"]
    assert data["unreachable"][0]["state"] == "down: refused" and "Connection refused" in data["unreachable"][0]["reason"]


def test_fleet_warm_shows_a_running_builds_progress(agent_factory, tmp_path, deploy):
    from tests.device_agent.onnx_models import wide_mlp

    a, b = agent_factory(build_heartbeat_s=0.005), agent_factory(build_heartbeat_s=0.005)
    env = inventory_of(tmp_path, {"a": {"address": a.address, "profile": "x86-cpu"},
                                  "b": {"address": b.address, "profile": "x86-cpu"}})
    model = tmp_path / "mlp.onnx"
    model.write_bytes(wide_mlp(1024, 2, seed=72))  # 8 MiB: its onnxruntime build beats many times at 5 ms
    proc = deploy("fleet", "warm", str(model), env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    progress = [line.split() for line in lines if line.split()[:1] == ["progress"]]
    assert progress, proc.stderr
    # "progress a: trt_0 building 0 s", from the builder only, between its build start and its end
    assert all(p[1] in ("a:", "b:") and p[3] == "building" and p[-1] == "s" for p in progress), progress
    assert len({p[1] for p in progress}) == 1, "one build per class"
    first = next(i for i, line in enumerate(lines) if line.split()[:1] == ["progress"])
    assert any(line.split()[:1] == ["build_started"] for line in lines[:first])
    assert any(line.split()[:1] == ["built"] for line in lines[first:])
    assert len(progress) <= 3, "rate-limited: the agent sent a heartbeat every 5 ms"
