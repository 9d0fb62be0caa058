"""Per-class timing caches over real gRPC: put, list, fetch, digest check, cross-class refusal, build note."""
from __future__ import annotations

import hashlib
from typing import Iterator

import grpc
import pytest

from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from protos import agent_pb2
from tests.device_agent.onnx_models import conv_net, single_segment_bundle

BLOB = b"opaque tensorrt timing cache bytes " * 4000  # ~140 KB, sent as three chunks; the agent never parses it


def client_for(agent) -> AgentClient:
    return AgentClient(Device(name="t", address=agent.address))


def class_facts(client: AgentClient) -> dict:
    """This agent's tensorrt class facts, as a fetch of an empty cache names them (NOT_FOUND)."""
    with pytest.raises(AgentError) as info:
        list(client.fetch_timing_cache())
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    text = info.value.message.split("class ", 1)[1].split(";", 1)[0]
    return dict(kv.split("=", 1) for kv in text.split("|"))


def chunks(facts: dict, data: bytes, digest: str = "") -> Iterator[agent_pb2.TimingCacheChunk]:
    info = agent_pb2.TimingCacheInfo(size=len(data),
                                     digest=digest or "sha256:" + hashlib.sha256(data).hexdigest())
    info.facts.update(facts)
    yield agent_pb2.TimingCacheChunk(info=info)
    for off in range(0, len(data), 50_000):
        yield agent_pb2.TimingCacheChunk(chunk=data[off:off + 50_000])


def grow_timing_cache(handle, device, size: int) -> None:  # noqa: ANN001 - AgentHandle, Device
    """A timing cache put on the agent properly, then grown to `size` bytes on its own disk (as TensorRT builds grow
    one), past what a put would take."""
    with AgentClient(device) as client:
        client.put_timing_cache(chunks(class_facts(client), b"small"))
    [cache] = (handle.store_dir.parent / "engines" / "timing").glob("*.cache")
    with open(cache, "r+b") as f:
        f.truncate(size)


def test_put_timing_cache_is_listed_fetched_byte_exact_and_reported_by_the_next_build(agent, tmp_path):
    archive, _, _ = single_segment_bundle(tmp_path, conv_net(seed=11), "tc")
    with client_for(agent) as client:
        facts = class_facts(client)
        reply = client.put_timing_cache(chunks(facts, BLOB))
        assert not reply.already_present and reply.bytes_received == len(BLOB)
        digest = "sha256:" + hashlib.sha256(BLOB).hexdigest()
        assert reply.digest == digest
        assert client.put_timing_cache(chunks(facts, BLOB)).already_present

        listed = client.list_engines().timing_caches
        assert [(t.digest, t.size, dict(t.facts)) for t in listed] == [(digest, len(BLOB), facts)]
        files = list((agent.store_dir.parent / "engines" / "timing").glob("*.cache"))
        assert [f.name for f in files] == [listed[0].class_digest + ".cache"]

        got = list(client.fetch_timing_cache())
        assert got[0].info.digest == digest
        assert b"".join(c.chunk for c in got[1:]) == BLOB

        digest_bundle = client.upload(archive).digest
        events = list(client.build(digest_bundle, agent_pb2.BuildOptions(backend="onnxruntime")))
        miss = [e.segment for e in events if e.WhichOneof("event") == "segment"
                and e.segment.stage == agent_pb2.SegmentEvent.CACHE_MISS]
        # onnxruntime has no timing cache: the build says the tensorrt one is there, and that it does not use it
        assert miss and miss[0].timing_cache == f"present ({digest}); used by tensorrt builds, onnxruntime has none"


def test_timing_cache_of_another_class_is_refused_naming_both_classes(agent):
    with client_for(agent) as client:
        facts = class_facts(client)
        other = dict(facts, gpu="Orin", cc="8.7")
        with pytest.raises(AgentError) as refused:
            client.put_timing_cache(chunks(other, BLOB))
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "gpu=Orin" in refused.value.message and f"gpu={facts['gpu']}" in refused.value.message
        assert not client.list_engines().timing_caches
        assert client.info().agent_version  # still serving


def test_timing_cache_with_a_wrong_digest_is_refused_and_nothing_is_stored(agent):
    with client_for(agent) as client:
        facts = class_facts(client)
        with pytest.raises(AgentError) as refused:
            client.put_timing_cache(chunks(facts, BLOB, digest="sha256:" + "0" * 64))
        assert refused.value.code == grpc.StatusCode.DATA_LOSS
        assert not client.list_engines().timing_caches
        timing = agent.store_dir.parent / "engines" / "timing"
        assert not list(timing.glob("*.cache")) and not list(timing.glob(".*.tmp"))
