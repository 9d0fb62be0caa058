"""ListStore / PruneStore: a device's store shrinks least recently used first, with each bundle's unpacked copy;
partial uploads are listed and pruned, one receiving bytes right now is left alone; engines stay cached.

Real agents over gRPC on loopback.
"""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from protos import agent_pb2, agent_pb2_grpc
from tests.device_agent.onnx_models import conv_net, single_segment_bundle

ORT = agent_pb2.BuildOptions(backend="onnxruntime")


def client_for(agent) -> AgentClient:
    return AgentClient(Device(name="t", address=agent.address))


def unpacked_dir(agent, digest: str):
    return agent.store_dir.parent / "bundles" / digest.split(":", 1)[1]


def test_prune_to_a_size_removes_the_least_recently_used_bundle_and_its_unpacked_copy_first(agent, tmp_path):
    a, _, _ = single_segment_bundle(tmp_path / "a", conv_net(seed=71), "a")
    b, _, _ = single_segment_bundle(tmp_path / "b", conv_net(seed=72), "b")
    with client_for(agent) as client:
        db = client.upload(b).digest
        time.sleep(0.05)  # mtimes apart on any file system
        da = client.upload(a).digest  # a is the newer upload
        time.sleep(0.05)
        list(client.build(da, ORT))
        time.sleep(0.05)
        list(client.build(db, ORT))  # b, the older upload, is used last: a is now the least recently used
        listing = client.list_store()
        assert [e.digest for e in listing.entries] == [da, db]
        assert all(e.complete and e.unpacked_bytes > 0 for e in listing.entries)
        assert listing.total_bytes == sum(e.size + e.unpacked_bytes for e in listing.entries)
        keep = listing.entries[1].size + listing.entries[1].unpacked_bytes

        reply = client.prune_store(agent_pb2.PruneStoreRequest(max_bytes=keep))

        assert list(reply.removed) == [da] and reply.total_bytes == keep
        assert reply.freed_bytes == listing.entries[0].size + listing.entries[0].unpacked_bytes
        assert not client.query_upload(da).complete and not unpacked_dir(agent, da).exists()
        assert client.query_upload(db).complete
        assert len(client.list_engines().engines) == 2  # engines stay cached
        with pytest.raises(AgentError) as gone:
            list(client.build(da, ORT))
        assert gone.value.code == grpc.StatusCode.NOT_FOUND and "upload it first" in gone.value.message
        client.upload(a)
        assert list(client.build(da, ORT))[-1].summary.cache_hits == 1  # back, and its engine was kept


def test_a_partial_upload_is_listed_and_pruned_but_one_receiving_bytes_now_is_left_alone(agent):
    digest = "sha256:" + "ab" * 32
    release = threading.Event()

    def stalled():
        yield agent_pb2.UploadRequest(header=agent_pb2.UploadHeader(digest=digest, size=4 << 20, kind="blob"))
        for _ in range(2):  # past the agent's write buffer, so bytes are committed while the stream stays open
            yield agent_pb2.UploadRequest(chunk=b"x" * (1 << 20))
        release.wait(30)

    channel = grpc.insecure_channel(agent.address)
    call = agent_pb2_grpc.DeviceAgentStub(channel).Upload.future(stalled(), timeout=60)
    try:
        with client_for(agent) as client:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and client.query_upload(digest).committed_offset == 0:
                time.sleep(0.02)
            [entry] = client.list_store().entries
            assert entry.digest == digest and not entry.complete and entry.size > 0

            busy = client.prune_store(agent_pb2.PruneStoreRequest(all=True))
            assert list(busy.busy) == [digest] and not busy.removed  # receiving now: left alone

            release.set()
            try:
                call.result(timeout=30)
            except grpc.RpcError:
                pass  # the stream ended short of its size; what arrived stays committed
            done = client.prune_store(agent_pb2.PruneStoreRequest(all=True))
            assert list(done.removed) == [digest] and done.freed_bytes >= entry.size
            assert client.list_store().entries == [] and client.query_upload(digest).committed_offset == 0
    finally:
        release.set()
        channel.close()


def test_prune_store_refuses_an_unknown_digest_and_an_empty_request_with_one_line(agent, tmp_path):
    a, _, _ = single_segment_bundle(tmp_path, conv_net(seed=73), "a")
    with client_for(agent) as client:
        digest = client.upload(a).digest
        for request, words in ((agent_pb2.PruneStoreRequest(digests=["sha256:" + "0" * 64]), "not in this agent"),
                               (agent_pb2.PruneStoreRequest(), "exactly one of")):
            with pytest.raises(AgentError) as refused:
                client.prune_store(request)
            assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and words in refused.value.message
            assert "\n" not in refused.value.message
        assert client.query_upload(digest).complete  # nothing removed


def test_store_max_bytes_removes_the_least_recently_used_other_bundle_after_an_upload(agent_factory, tmp_path):
    a, _, _ = single_segment_bundle(tmp_path / "a", conv_net(seed=74), "a")
    b, _, _ = single_segment_bundle(tmp_path / "b", conv_net(seed=75), "b")
    limit = a.stat().st_size + b.stat().st_size  # both archives fit, not with a's unpacked copy besides
    agent = agent_factory(store_max_bytes=limit)
    with client_for(agent) as client:
        da = client.upload(a).digest
        list(client.build(da, ORT))
        db = client.upload(b).digest  # over the bound now: a goes, b (what just arrived) stays

        assert not client.query_upload(da).complete and not unpacked_dir(agent, da).exists()
        assert client.query_upload(db).complete
        assert list(client.build(db, ORT))[-1].summary.built == 1
        assert client.list_store().total_bytes <= limit
