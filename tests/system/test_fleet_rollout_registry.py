"""`deploy fleet rollout --registry`: the devices the host reaches go first; an agent it never calls (polling the
registry, not in the inventory) activates the version only once the rollout went forward, never after a stop."""
from __future__ import annotations

import json
import os
import time

import pytest
import tomli_w

from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from tests.device_agent.test_metrics import HealthScript
from tests.host.cli.helpers import tiny_conv_net

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(300)]


def _det(agent) -> tuple:
    """(active version, its bundle digest) of det on `agent`; (None, None) while det is not there."""
    try:
        with AgentClient(Device(name="a", address=agent.address)) as c:
            models = c.list_models("det").models
    except AgentError:
        return None, None
    if not models or not models[0].HasField("active"):
        return None, None
    m = models[0]
    return m.active, {v.version: v.bundle_digest for v in m.versions}[m.active]


def test_pollers_follow_a_rollout_that_went_forward_and_never_one_that_stopped(agent_factory, registry, tmp_path,
                                                                               deploy):
    ref = f"{registry.address}/fleet/rollout"
    health = HealthScript(tmp_path / "health")
    direct = [agent_factory(health_cmd=health.cmd, health_timeout_s=30) for _ in range(2)]
    poller = agent_factory(registry=ref, registry_poll_s=1)  # not in the inventory: the host never calls it
    inventory = tmp_path / "deploy.toml"
    inventory.write_text(tomli_w.dumps({"devices": {f"d{i}": {"address": a.address, "profile": "x86-cpu"}
                                                    for i, a in enumerate(direct)}}))
    env = dict(os.environ, DEPLOY_INVENTORY=str(inventory))

    def rollout(seed: int) -> tuple[int, dict]:
        model = tiny_conv_net(tmp_path / f"m{seed}.onnx", seed=seed)
        proc = deploy("fleet", "rollout", str(model), "--name", "det", "--registry", ref, "--waves", "1,100%",
                      "--health-timeout", "30", "--json", "--events", env=env, timeout=240)
        return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {"stderr": proc.stderr}

    rc, first = rollout(1)
    assert rc == 0 and first["state"] == "done", first
    assert sorted(first["activated"]) == ["d0", "d1"]
    (pub,) = first["published"]
    bundle = first["devices"][0]["bundle_digest"]
    assert pub["error"] is None and pub["bundle_digest"] == bundle and pub["reference"].startswith("class-")
    assert all(_det(a) == (1, bundle) for a in direct)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _det(poller) != (1, bundle):
        time.sleep(0.2)
    assert _det(poller) == (1, bundle), poller.log()[-3000:]

    health.set("fail")  # the new version's health check fails on the devices the host reaches: stop, take back
    rc, second = rollout(2)
    assert rc == 1 and second["state"] == "rolled_back" and second["published"] == [], second
    assert all(_det(a) == (1, bundle) for a in direct)
    time.sleep(3)  # several polls: warming published the new class artifact, but it names no model
    assert _det(poller) == (1, bundle), poller.log()[-3000:]
    log = poller.log()
    assert "DeviceAgent/Activate" not in log and "DeviceAgent/RegisterVersion" not in log
