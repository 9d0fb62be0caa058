"""`deploy cache ls` lists the device's TensorRT timing caches (class, size, digest, updated)."""
from __future__ import annotations

import hashlib
import time

from host.client.agent import AgentClient
from host.inventory import Device
from tests.device_agent.test_timing_cache import chunks, class_facts
from tests.host.cli.helpers import parse_json


def test_cache_ls_json_shows_the_timing_cache_with_class_size_digest_and_time(agent, deploy):
    data = b"timing" * 1000
    with AgentClient(Device(name="t", address=agent.address)) as client:
        facts = class_facts(client)
        client.put_timing_cache(chunks(facts, data))
    listing = parse_json(deploy("cache", "ls", "--device", agent.address, "--json"))
    [t] = listing["timing_caches"]
    assert t["facts"] == facts and t["device_class"].startswith("backend=tensorrt|")
    assert t["size"] == len(data) and t["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert abs(t["updated"] - time.time()) < 120
    human = deploy("cache", "ls", "--device", agent.address).stdout
    assert f"timing cache {t['device_class']}" in human
