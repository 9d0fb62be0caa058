"""`deploy fleet warm` under faults: a bound on failures, a device that comes back, a device whose warm failed.

Real agents on loopback (one class: the main venv); bundles made directly (no compile), so each test is quick.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from host.client.agent import AgentClient
from host.inventory import Device
from host.fleet.warm import ClassPlan, WarmEvent, Warmer, failure_bound
from device_agent.errors import InvalidInput
from protos import agent_pb2
from tests.device_agent.onnx_models import conv_net, single_segment_bundle, wide_mlp

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]


def plan(archive: Path):
    return lambda cls, info, device: ClassPlan(Path(archive))


def devices_of(handles: dict) -> list[Device]:
    return [Device(name=name, address=h.address, profile="x86-cpu") for name, h in handles.items()]


def holds(handle, digest: str) -> tuple[bool, int]:
    """(has the bundle, number of engines) on one agent."""
    with AgentClient(Device(name="x", address=handle.address)) as client:
        return client.query_upload(digest).complete, len(client.list_engines().engines)


def test_max_failures_parses_counts_and_percentages():
    assert failure_bound(None, 10) is None and failure_bound("0", 10) == 0 and failure_bound("3", 10) == 3
    assert failure_bound("25%", 10) == 2 and failure_bound("100%", 7) == 7
    for bad in ("-1", "x", "150%", "1.5"):
        with pytest.raises(InvalidInput, match="--max-failures"):
            failure_bound(bad, 10)


GiB = 1024 ** 3


@pytest.mark.parametrize("builder", ["good", "small0"])
def test_warm_starts_no_new_device_once_failures_pass_max_failures(agent_factory, tmp_path, builder):
    """One slot, a bound of 1: exactly two devices fail, whichever device is picked to build first.

    The builder is the device with the most memory a build may count on (GetInfo reports the agent's
    --memory-limit-bytes cap), so each case picks it: "good", or a device that refuses the bundle, whose
    replacement must then not start while the background uploads' failures are counted.
    """
    archive, _, _ = single_segment_bundle(tmp_path, conv_net(seed=51), "m")
    caps = {"good": 2 * GiB, "small0": 1 * GiB, "small1": 1 * GiB, "small2": 1 * GiB}
    caps[builder] = 3 * GiB
    handles = {"good": agent_factory(memory_limit_bytes=caps["good"])}
    handles.update({f"small{i}": agent_factory(max_upload_bytes=1000, memory_limit_bytes=caps[f"small{i}"])
                    for i in range(3)})  # refuse the bundle

    result = Warmer(devices_of(handles), plan(archive), concurrency=1, max_failures="1").run()

    [c] = result.classes
    failed = [f.device for f in c.failed]
    assert len(failed) == 2 and "good" not in failed, c.to_dict()  # one past the bound, then nothing new started
    assert c.not_started and not set(failed) & set(c.not_started), c.to_dict()  # a failed device is not "not started"
    assert set(failed) | set(c.not_started) | set(c.warm) == set(handles), c.to_dict()
    assert not result.ok and "--max-failures 1" in result.stopped and result.to_dict()["stopped"]
    digest = c.bundle_digest
    for name in c.not_started:  # really not started: no build, no engine (good may hold the bundle sent ahead)
        assert holds(handles[name], digest)[1] == 0, name
        if name != "good":
            assert holds(handles[name], digest) == (False, 0), name


def test_warm_completes_by_itself_when_a_device_is_killed_and_back_2s_later(agent_factory, tmp_path):
    archive, _, _ = single_segment_bundle(tmp_path, conv_net(seed=52), "m")
    handles = {f"d{i}": agent_factory() for i in range(2)}
    victim: list[str] = []
    events: list[WarmEvent] = []

    def on_event(event: WarmEvent) -> None:
        events.append(event)
        if event.kind == "fetched" and not victim:  # the engines are about to be copied: kill a receiver
            victim.append(next(n for n in handles if n != event.device))
            handles[victim[0]].kill()
            threading.Timer(2.0, handles[victim[0]].start).start()

    result = Warmer(devices_of(handles), plan(archive), on_event=on_event, retry_for=30).run()

    [c] = result.classes
    assert result.ok and victim and victim[0] in c.copied_to, c.to_dict()
    assert any(e.kind == "retrying" and e.device == victim[0] for e in events), [e.kind for e in events]
    assert holds(handles[victim[0]], c.bundle_digest) == (True, 1)


def test_a_device_whose_warm_failed_keeps_serving_the_engines_it_had(agent_factory, tmp_path):
    first, _, _ = single_segment_bundle(tmp_path, conv_net(seed=53), "first")
    second, _, _ = single_segment_bundle(tmp_path, wide_mlp(256, 2, seed=54), "second")
    assert second.stat().st_size > first.stat().st_size + 100_000
    handles = {"roomy": agent_factory(), "tight": agent_factory(max_upload_bytes=first.stat().st_size + 50_000)}

    warm = Warmer(devices_of(handles), plan(first)).run()
    assert warm.ok, warm.to_dict()
    [c1] = warm.classes
    again = Warmer(devices_of(handles), plan(second)).run()
    [c2] = again.classes
    assert [f.device for f in c2.failed] == ["tight"] and "RESOURCE_EXHAUSTED" in c2.failed[0].reason

    with AgentClient(Device(name="tight", address=handles["tight"].address)) as client:
        assert {e.key for e in client.list_engines().engines} == set(c1.engines)
        summary = list(client.build(c1.bundle_digest))[-1].summary
        assert summary.cache_hits == summary.segments == 1 and summary.built == 0
        reply = client.run(agent_pb2.RunRequest(bundle_digest=c1.bundle_digest, verify=True))
    assert reply.max_rel_err < 1e-4


def test_warm_sends_the_bundle_again_when_the_builders_stored_copy_rotted(agent_factory, tmp_path):
    from tests.device_agent.test_unpacked import flip

    archive, _, _ = single_segment_bundle(tmp_path, conv_net(seed=54), "m")
    handles = {"d0": agent_factory()}
    with AgentClient(Device(name="x", address=handles["d0"].address)) as client:
        digest = client.upload(archive).digest  # on the device already, never unpacked
    handles["d0"].stop()
    flip(handles["d0"].store_dir / "blobs" / digest.split(":", 1)[1])
    handles["d0"].start()
    events: list[WarmEvent] = []

    result = Warmer(devices_of(handles), plan(archive), on_event=events.append).run()

    [c] = result.classes
    assert result.ok and c.built_on == "d0", c.to_dict()
    assert any(e.kind == "retrying" and "sending the bundle again" in e.detail for e in events), events
    assert holds(handles["d0"], digest) == (True, 1)
