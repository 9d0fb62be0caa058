"""Fleet warm moves the builder's timing cache to the rest of its class, and never to another class."""
from __future__ import annotations

import hashlib

import pytest

from device_agent.timing_cache import MAX_TIMING_CACHE_BYTES
from host.client.agent import AgentClient
from host.fleet.warm import WarmEvent, model_plans, warm
from host.inventory import Device
from tests.device_agent.onnx_models import conv_net
from tests.device_agent.test_timing_cache import chunks, class_facts, grow_timing_cache

pytestmark = pytest.mark.timeout(300)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def timing_digests(device: Device) -> list[str]:
    with AgentClient(device) as client:
        return [t.digest for t in client.list_engines().timing_caches]


def test_fleet_warm_copies_the_builders_timing_cache_within_its_class_only(agent_factory, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(conv_net(seed=21))
    devices = [Device(name="a", address=agent_factory().address, profile="x86-cpu"),
               Device(name="b", address=agent_factory().address, profile="x86-cpu"),
               Device(name="c", address=agent_factory().address, profile="jetson-nano")]
    blobs = {d.name: f"timing cache of {d.name} ".encode() * 500 for d in devices}
    for d in devices:  # onnxruntime builds write none: each builder-to-be gets its own, told apart by digest
        with AgentClient(d) as client:
            client.put_timing_cache(chunks(class_facts(client), blobs[d.name]))

    result = warm(devices, model_plans(model))
    assert result.ok, result.to_dict()
    by_label = {tuple(c.devices): c for c in result.classes}
    x86, nano = by_label[("a", "b")], by_label[("c",)]
    other = "b" if x86.built_on == "a" else "a"
    assert x86.timing_cache == sha(blobs[x86.built_on]) and x86.timing_copied_to == [other]
    assert timing_digests(devices[0]) == timing_digests(devices[1]) == [sha(blobs[x86.built_on])]
    # the other class built alone: it kept its own cache and never received the x86 one
    assert nano.timing_cache == sha(blobs["c"]) and nano.timing_copied_to == []
    assert timing_digests(devices[2]) == [sha(blobs["c"])]
    assert result.to_dict()["classes"][0]["timing_cache"]["digest"]


def test_a_timing_cache_above_what_agents_take_is_not_fetched_whole_and_the_engines_still_move(agent_factory,
                                                                                                 tmp_path):
    """A builder whose TensorRT timing cache grew past MAX_TIMING_CACHE_BYTES (every agent refuses a larger put):
    the host stops reading it at that bound and warms without it. Before, it held the whole cache and every other
    device of the class failed its copy on the refused put."""
    model = tmp_path / "m.onnx"
    model.write_bytes(conv_net(seed=23))
    handles = [agent_factory(), agent_factory()]
    devices = [Device(name=n, address=h.address, profile="x86-cpu") for n, h in zip("ab", handles)]
    for d, h in zip(devices, handles):
        grow_timing_cache(h, d, MAX_TIMING_CACHE_BYTES + 1)
    events: list[WarmEvent] = []

    result = warm(devices, model_plans(model), on_event=events.append)

    assert result.ok, result.to_dict()
    [c] = result.classes
    assert c.builds == 1 and c.copied_to == ["b" if c.built_on == "a" else "a"], c.to_dict()
    assert c.timing_cache is None and c.timing_copied_to == [], c.to_dict()
    [refused] = [e for e in events if e.kind == "timing_cache_failed"]
    assert refused.device == c.built_on and f"more than {MAX_TIMING_CACHE_BYTES} bytes" in refused.detail, refused
