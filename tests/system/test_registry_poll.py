"""An agent the host never calls (as behind NAT) gets its class's bundle, engines and timing cache by polling the
registry (--registry-poll-s): real registry process, real agents, `deploy fleet warm --via-registry` publishing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import tomli_w

from device_agent.cache import device_class
from device_agent.registry import RegistryClient, RegistryRef, class_tag
from host.client.agent import AgentClient
from host.inventory import Device
from protos import agent_pb2
from tests.conftest import REPO
from tests.device_agent.onnx_models import conv_net
from tests.device_agent.test_timing_cache import chunks, class_facts
from tests.host.fleet.test_warm_timing import sha


def test_an_agent_polling_its_class_tag_pulls_what_fleet_warm_published_without_any_host_call(
        agent_factory, registry, tmp_path, deploy):
    model = tmp_path / "convnet.onnx"
    model.write_bytes(conv_net(seed=8, channels=8))
    ref = f"{registry.address}/fleet/poll"
    builder = agent_factory(registry=ref)
    behind_nat = agent_factory(registry=ref, registry_poll_s=0.2)  # not in the inventory: the host cannot reach it
    timing = b"the builder's timing cache " * 300
    with AgentClient(Device(name="b", address=builder.address)) as c:
        c.put_timing_cache(chunks(class_facts(c), timing))
    inventory = tmp_path / "deploy.toml"
    inventory.write_text(tomli_w.dumps({"devices": {"b": {"address": builder.address, "profile": "x86-cpu"}}}))
    proc = deploy("fleet", "warm", str(model), "--via-registry", "--registry", ref, "--json",
                  env=dict(os.environ, DEPLOY_INVENTORY=str(inventory)), timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    (cls,) = json.loads(proc.stdout)["classes"]
    digest, (key,) = cls["bundle_digest"], cls["engines"]
    with AgentClient(Device(name="nat", address=behind_nat.address)) as c:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (c.query_upload(digest).complete and
                                                   [e.key for e in c.list_engines().engines] == [key]):
            time.sleep(0.1)
        assert c.query_upload(digest).complete, behind_nat.log()[-2000:]
        assert [e.key for e in c.list_engines().engines] == [key]
        assert [t.digest for t in c.list_engines().timing_caches] == [sha(timing)]
        summary = [e.summary for e in c.build(digest, agent_pb2.BuildOptions()) if e.WhichOneof("event") == "summary"]
        assert summary[0].built == 0 and summary[0].cache_hits == summary[0].segments
        (entry,) = c.list_engines().engines
    # the tag it polled is its own class's, which it computes itself; the host named it nowhere but the registry
    doc, _ = RegistryClient(RegistryRef.parse(ref)).manifest(class_tag(entry.device_class))
    assert doc["annotations"]["org.jetson-deploy.bundle.digest"] == digest
    log = behind_nat.log()  # every RPC it served is logged (method=...): only this test's own checks above
    assert "registry poll: holds bundle" in log
    assert "DeviceAgent/Pull" not in log and "DeviceAgent/GetInfo" not in log and "DeviceAgent/Upload" not in log
    assert device_class(json.loads(entry.attributes["parts"])) == entry.device_class



@pytest.mark.parametrize("args, says", [(["--registry-poll-s", "1"], "needs --registry"),
                                        (["--registry-poll-s", "-1", "--registry", "127.0.0.1:5000/a"], "seconds > 0"),
                                        (["--registry-poll-s", "1", "--registry", "no-repo"], "HOST[:PORT]/REPO")])
def test_an_agent_told_to_poll_without_a_usable_registry_refuses_to_start_in_one_line(tmp_path, args, says):
    proc = subprocess.run([sys.executable, "-m", "device_agent", "--listen", "127.0.0.1:0", "--store",
                           str(tmp_path / "store"), *args], capture_output=True, text=True, timeout=60, cwd=str(REPO))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and says in lines[0], proc.stderr
