"""`deploy devices` (live state of the inventory, in parallel, short deadline) and `deploy cache ls|prune`."""
from __future__ import annotations

import os
import socket
import time

from tests.host.cli.helpers import parse_json, tiny_conv_net


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_devices_shows_live_state_of_each_inventory_device_and_marks_the_dead_one(agent_factory, deploy,
                                                                                   tiny_model, tmp_path):
    a, b = agent_factory(), agent_factory(profile="jetson-nano")
    parse_json(deploy("push", str(tiny_model), "--device", a.address, "--json"))
    dead = f"127.0.0.1:{_closed_port()}"
    inventory = tmp_path / "deploy.toml"
    inventory.write_text(f'[devices.alpha]\naddress = "{a.address}"\nprofile = "x86-cpu"\ntags = ["lab"]\n\n'
                         f'[devices.beta]\naddress = "{b.address}"\n\n'
                         f'[devices.gone]\naddress = "{dead}"\ntags = ["lab"]\n')
    env = {**os.environ, "DEPLOY_INVENTORY": str(inventory)}
    started = time.monotonic()
    data = parse_json(deploy("devices", "--timeout", "2", "--json", env=env), exit_code=1)
    assert time.monotonic() - started < 15
    rows = {r["name"]: r for r in data["devices"]}
    assert set(rows) >= {"alpha", "beta", "gone"}
    assert rows["alpha"]["reachable"] and rows["alpha"]["engines"] == 1 and rows["alpha"]["engine_bytes"] > 0
    assert rows["alpha"]["store_free_bytes"] > 0 and rows["alpha"]["profile"] == "x86-cpu"
    assert rows["beta"]["reachable"] and rows["beta"]["engines"] == 0
    assert rows["beta"]["profile"] == "jetson-nano", "the agent's own --profile shows when the inventory has none"
    assert rows["gone"]["reachable"] is False and "unreachable" in rows["gone"]["error"]
    assert rows["gone"]["state"] == "down: refused" and rows["alpha"]["state"] == "up"

    lab = parse_json(deploy("devices", "--tag", "lab", "--json", env=env), exit_code=1)
    assert sorted(r["name"] for r in lab["devices"]) == ["alpha", "gone"]

    table = deploy("devices", env=env)
    assert table.returncode == 1, table.stderr
    assert "alpha" in table.stdout and "down: refused" in table.stdout and "up" in table.stdout


def test_devices_queries_in_parallel_and_answers_within_the_deadline_when_devices_never_answer(deploy, tmp_path):
    # listening sockets that never speak HTTP/2: each connection opens and each call hangs until its deadline
    sockets = [socket.socket() for _ in range(8)]
    try:
        lines = []
        for i, s in enumerate(sockets):
            s.bind(("127.0.0.1", 0))
            s.listen(8)
            lines.append(f'[devices.mute{i}]\naddress = "127.0.0.1:{s.getsockname()[1]}"\n')
        inventory = tmp_path / "deploy.toml"
        inventory.write_text("\n".join(lines))
        env = {**os.environ, "DEPLOY_INVENTORY": str(inventory)}
        started = time.monotonic()
        data = parse_json(deploy("devices", "--timeout", "1.5", "--json", env=env), exit_code=1)
        elapsed = time.monotonic() - started
    finally:
        for s in sockets:
            s.close()
    assert [r["reachable"] for r in data["devices"]] == [False] * 8
    assert all("DEADLINE_EXCEEDED" in r["error"] for r in data["devices"]), data
    assert {r["state"] for r in data["devices"]} == {"down: timeout"}
    # one after another would take 8 x 1.5 s = 12 s
    assert elapsed < 9, f"took {elapsed:.1f} s for eight silent devices with a 1.5 s deadline"


def test_cache_ls_lists_built_engines_and_prune_all_removes_them(agent_factory, deploy, tiny_model, tmp_path):
    agent = agent_factory(keep_versions=1)  # each push records a version; the one kept pins its engine
    pushed = parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--json"))
    listing = parse_json(deploy("cache", "ls", "--device", agent.address, "--json"))
    assert len(listing["engines"]) == len(pushed["build"]["segments"]) == 1
    entry = listing["engines"][0]
    assert entry["backend"] == "onnxruntime" and entry["size"] > 0 and listing["total_bytes"] >= entry["size"]
    newer = parse_json(deploy("push", str(tiny_conv_net(tmp_path / "newer.onnx", seed=7)), "--device", agent.address,
                              "--name", pushed["model"]["name"], "--json"))  # the first is no longer kept

    pruned = parse_json(deploy("cache", "prune", "--device", agent.address, "--all", "--json"))
    assert pruned["removed"] == [entry["key"]] and pruned["freed_bytes"] == entry["size"]
    left = parse_json(deploy("cache", "ls", "--device", agent.address, "--json"))["engines"]
    assert [e["key"] for e in left] == pruned["kept"] and len(newer["build"]["segments"]) == 1 == len(left)
    again = parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--json"))
    assert again["build"]["segments"][0]["cache"] == "miss", "a pruned engine is rebuilt"


def test_cache_prune_without_saying_what_to_prune_exits_2(deploy):
    proc = deploy("cache", "prune", "--device", "127.0.0.1:9")
    assert proc.returncode == 2
    assert "exactly one of --all, --max-bytes N or --key KEY" in proc.stderr
