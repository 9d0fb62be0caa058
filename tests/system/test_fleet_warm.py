"""`deploy fleet warm` over 12 real agent processes in 3 real device classes on loopback.

The classes differ for real: each group of agents runs in its own virtualenv with its own onnxruntime
(1.32 / 1.20 / 1.18), so the agents report different backend versions and their caches refuse each other's
engines; the inventory also gives each group its own profile, so each class gets its own bundle.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from host.client.agent import AgentClient
from host.inventory import Device, load
from host.fleet.warm import WarmEvent, Warmer, model_plans
from protos import agent_pb2
from tests.device_agent.onnx_models import conv_net, reference_run

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(300)]

PROFILES = ("x86-cpu", "jetson-xavier-nx", "jetson-nano")  # one per environment, in agent_envs order
PER_CLASS = 4


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "convnet.onnx"
    path.write_bytes(conv_net(seed=3, channels=16))
    return path


def start_fleet(agent_factory, agent_envs, tmp_path: Path, per_class: int = PER_CLASS,
                envs: int = 3) -> tuple[Path, dict]:
    """Agents in `envs` environments, `per_class` each; an inventory naming them with their group's profile."""
    handles, entries = {}, {}
    for k, env in enumerate(agent_envs[:envs]):
        for i in range(per_class):
            name = f"c{k}-{i}"
            handles[name] = agent_factory(python=env.python)
            entries[name] = {"address": handles[name].address, "profile": PROFILES[k], "tags": ["lab"]}
    path = tmp_path / "deploy.toml"
    path.write_text(tomli_w.dumps({"devices": entries}))
    return path, handles


def deploy_json(deploy, inventory: Path, *args: str) -> tuple[int, dict]:
    env = dict(os.environ, DEPLOY_INVENTORY=str(inventory))
    proc = deploy(*args, "--json", env=env, timeout=240)
    assert proc.stdout.strip(), f"deploy {' '.join(args)} printed nothing; stderr: {proc.stderr}"
    return proc.returncode, json.loads(proc.stdout)


def built_nothing_and_matches(device: Device, digest: str, feeds: dict, want: dict) -> None:
    """The device's Build is all cache hits, and running the model gives the reference outputs."""
    with AgentClient(device) as client:
        events = list(client.build(digest, agent_pb2.BuildOptions()))
        summary = [e.summary for e in events if e.WhichOneof("event") == "summary"][0]
        assert summary.built == 0 and summary.cache_hits == summary.segments >= 1, (device.name, summary)
        tensors = [agent_pb2.Tensor(name=k, dtype=str(v.dtype), shape=list(v.shape), data=v.tobytes())
                   for k, v in feeds.items()]
        reply = client.run(agent_pb2.RunRequest(bundle_digest=digest, inputs=tensors))
    for out in reply.outputs:
        got = np.frombuffer(out.data, dtype=out.dtype).reshape(tuple(out.shape))
        np.testing.assert_allclose(got, want[out.name], rtol=1e-4, atol=1e-5, err_msg=device.name)


def test_warm_builds_once_per_class_reports_a_killed_agent_and_completes_it_on_the_next_run(
        agent_factory, agent_envs, tmp_path, model, deploy):
    inventory, handles = start_fleet(agent_factory, agent_envs, tmp_path)

    code, listing = deploy_json(deploy, inventory, "fleet", "ls")
    assert code == 0, listing
    assert sorted(c["facts"]["backend_version"] for c in listing["classes"]) == sorted(
        e.ort_version for e in agent_envs)
    assert all(len(c["devices"]) == PER_CLASS for c in listing["classes"])

    victim: list[str] = []

    def kill_one_during_copy(event: WarmEvent) -> None:
        # the engines of the x86-cpu class were just fetched from its builder: kill one device about to get them
        if event.kind == "fetched" and event.device_class.profile == PROFILES[0] and not victim:
            victim.append(next(n for n in handles if n.startswith("c0-") and n != event.device))
            handles[victim[0]].kill()

    devices = load(inventory).select(["lab"])
    first = Warmer(devices, model_plans(model), concurrency=6, on_event=kill_one_during_copy).run()

    assert first.builds == 3 == len(first.classes)
    by_profile = {c.device_class.profile: c for c in first.classes}
    killed = by_profile[PROFILES[0]]
    assert victim and killed.unreachable == victim and "unreachable" in killed.failed[0].reason
    assert not first.ok
    for c in first.classes:
        assert c.built_on is not None and c.source == c.built_on
        expected = {n for n in c.devices if n not in victim}
        assert set(c.warm) == expected and len(c.copied_to) == len(expected) - 1, c.to_dict()
        if c is not killed:
            assert c.failed == []

    feeds = {"x": np.random.default_rng(7).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    want = reference_run(model.read_bytes(), feeds)
    for device in devices:
        if device.name not in victim:
            c = next(c for c in first.classes if device.name in c.devices)
            built_nothing_and_matches(device, c.bundle_digest, feeds, want)

    handles[victim[0]].start()  # same port, same store: the device comes back
    code, second = deploy_json(deploy, inventory, "fleet", "warm", str(model), "--tag", "lab")
    assert code == 0, second
    assert second["builds"] == 0 and second["ok"] and not second["unreachable"]
    for c in second["classes"]:
        if c["facts"]["profile"] == PROFILES[0]:
            assert c["copied_to"] == victim and sorted(c["skipped"]) == sorted(set(c["devices"]) - set(victim))
        else:
            assert c["copied_to"] == [] and sorted(c["skipped"]) == sorted(c["devices"])
        assert c["failed"] == [] and c["built_on"] is None
    victim_device = next(d for d in devices if d.name == victim[0])
    built_nothing_and_matches(victim_device, killed.bundle_digest, feeds, want)


def test_a_builder_that_dies_mid_build_is_replaced_by_another_device_of_its_class(
        agent_factory, agent_envs, tmp_path, model):
    inventory, handles = start_fleet(agent_factory, agent_envs, tmp_path, per_class=3, envs=1)
    lost: list[str] = []

    def kill_builder(event: WarmEvent) -> None:
        if event.kind == "build_started" and not lost:
            lost.append(event.device)
            handles[event.device].kill()

    result = Warmer(load(inventory).select(), model_plans(model), on_event=kill_builder).run()

    [c] = result.classes
    assert lost and c.built_on not in (None, lost[0])
    assert [f.device for f in c.failed] == lost and c.failed[0].reason.startswith("builder lost")
    assert set(c.copied_to) == set(c.devices) - {lost[0], c.built_on}
    assert result.builds >= 1


def test_a_device_without_room_for_the_bundle_fails_alone_and_its_class_is_still_warmed(agent_factory, tmp_path,
                                                                                           model):
    small = agent_factory(max_upload_bytes=1000)  # refuses the bundle, whether it is picked to build or not
    others = [agent_factory(), agent_factory()]
    devices = [Device(name="small", address=small.address, profile="x86-cpu")]
    devices += [Device(name=f"d{i}", address=h.address, profile="x86-cpu") for i, h in enumerate(others)]

    result = Warmer(devices, model_plans(model)).run()

    [c] = result.classes
    assert [f.device for f in c.failed] == ["small"] and "RESOURCE_EXHAUSTED" in c.failed[0].reason
    assert set(c.warm) == {"d0", "d1"} and result.builds == 1


def test_warm_of_a_missing_model_is_one_line_naming_the_path(agent_factory, tmp_path, deploy):
    agent = agent_factory()
    inventory = tmp_path / "deploy.toml"
    inventory.write_text(tomli_w.dumps({"devices": {"one": {"address": agent.address}}}))
    proc = deploy("fleet", "warm", str(tmp_path / "nope.onnx"), env=dict(os.environ, DEPLOY_INVENTORY=str(inventory)))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.onnx" in lines[0] and lines[0].startswith("error:")


def test_warm_of_a_file_that_is_not_onnx_is_one_line_and_builds_nothing(agent_factory, tmp_path, deploy):
    agent = agent_factory()
    inventory = tmp_path / "deploy.toml"
    inventory.write_text(tomli_w.dumps({"devices": {"one": {"address": agent.address, "profile": "x86-cpu"}}}))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    proc = deploy("fleet", "warm", str(bad), env=dict(os.environ, DEPLOY_INVENTORY=str(inventory)))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "bad.onnx" in lines[0], proc.stderr
    with AgentClient(Device(name="one", address=agent.address)) as client:
        assert not client.list_engines().engines


def test_warm_with_no_device_matching_the_tags_says_so(tmp_path, model, deploy):
    inventory = tmp_path / "deploy.toml"
    inventory.write_text(tomli_w.dumps({"devices": {"one": {"address": "127.0.0.1:1", "tags": ["a"]}}}))
    proc = deploy("fleet", "warm", str(model), "--tag", "b", env=dict(os.environ, DEPLOY_INVENTORY=str(inventory)))
    assert proc.returncode == 2 and "no devices with tag(s) b" in proc.stderr
