"""Bytes a device's disk changed at rest are never built or run: the agent re-verifies its unpacked bundles, unpacks
them again from the stored archive, and drops a stored archive that no longer matches its digest.

Real agents on loopback; the corruption is one flipped byte in a real file, as bit rot on an SD card would do.
"""
from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from device_agent.fileio import sha256_file
from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from protos import agent_pb2
from tests.device_agent.onnx_models import conv_net, single_segment_bundle

ORT = agent_pb2.BuildOptions(backend="onnxruntime", force_rebuild=True)


def flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def unpacked_segment(handle, digest: str) -> Path:
    root = handle.store_dir.parent / "bundles" / digest.split(":", 1)[1]
    [seg] = json.loads((root / "manifest.json").read_text())["segments"]
    return root / seg["path"]


def segment_digest(handle, digest: str) -> str:
    root = handle.store_dir.parent / "bundles" / digest.split(":", 1)[1]
    return json.loads((root / "manifest.json").read_text())["segments"][0]["digest"]


def build(handle, digest: str) -> agent_pb2.BuildSummary:
    with AgentClient(Device(name="t", address=handle.address)) as client:
        events = list(client.build(digest, ORT))
    return events[-1].summary


def upload(handle, archive: Path) -> str:
    with AgentClient(Device(name="t", address=handle.address)) as client:
        return client.upload(archive).digest


def test_an_unpacked_segment_changed_while_the_agent_was_down_is_unpacked_again_before_the_build(agent_factory,
                                                                                                tmp_path):
    archive, _, _ = single_segment_bundle(tmp_path, conv_net(seed=61), "rot")
    agent = agent_factory()
    digest = upload(agent, archive)
    assert build(agent, digest).built == 1
    agent.stop()
    seg = unpacked_segment(agent, digest)
    flip(seg)
    assert sha256_file(seg) != segment_digest(agent, digest)
    agent.start()

    summary = build(agent, digest)

    assert summary.built == 1 and summary.failed == 0
    assert sha256_file(unpacked_segment(agent, digest)) == segment_digest(agent, digest)  # built from sound bytes


def test_a_segment_changed_under_a_running_agent_is_refused_with_data_loss_then_rebuilt_from_the_archive(
        agent_factory, tmp_path):
    archive, _, _ = single_segment_bundle(tmp_path, conv_net(seed=62), "rot")
    agent = agent_factory()
    digest = upload(agent, archive)
    assert build(agent, digest).built == 1  # the bundle is open in the agent now
    flip(unpacked_segment(agent, digest))

    with pytest.raises(AgentError) as refused:
        build(agent, digest)
    assert refused.value.code == grpc.StatusCode.DATA_LOSS
    assert "changed on this device's disk" in refused.value.message and "build again" in refused.value.message

    assert build(agent, digest).built == 1  # unpacked again from the stored archive
    assert sha256_file(unpacked_segment(agent, digest)) == segment_digest(agent, digest)


def test_a_stored_archive_changed_on_disk_is_dropped_so_the_next_upload_sends_it_again(agent_factory, tmp_path):
    archive, _, _ = single_segment_bundle(tmp_path, conv_net(seed=63), "rot")
    agent = agent_factory()
    digest = upload(agent, archive)
    assert build(agent, digest).built == 1
    agent.stop()
    flip(unpacked_segment(agent, digest))
    flip(agent.store_dir / "blobs" / digest.split(":", 1)[1], at=0.6)
    agent.start()

    with pytest.raises(AgentError) as refused:
        build(agent, digest)
    assert refused.value.code == grpc.StatusCode.DATA_LOSS
    assert "removed from the store" in refused.value.message and "upload it again" in refused.value.message
    with AgentClient(Device(name="t", address=agent.address)) as client:
        assert not client.query_upload(digest).complete  # gone, not served as if complete
        assert client.upload(archive).bytes_sent > 0
    assert build(agent, digest).built == 1
