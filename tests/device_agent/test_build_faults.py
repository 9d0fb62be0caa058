"""A full disk while the agent unpacks a bundle for a build: a real agent, a real small tmpfs (test_faults.py's).

RESOURCE_EXHAUSTED naming the bytes needed and free and the directory, no partial files, what was unpacked or built
before intact, the agent keeps serving, and the same build succeeds once space is freed.
"""
from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from device_agent import archive as archive_mod
from device_agent.archive import extract_archive
from device_agent.bundle import Bundle
from device_agent.errors import ResourceExhausted
from host.client.errors import AgentError
from tests.device_agent.onnx_models import conv_net, single_segment_bundle, wide_mlp
from tests.device_agent.test_faults import client_for, fill, small_disk  # noqa: F401 - small_disk is a fixture

pytestmark = pytest.mark.timeout(120)


def leftovers(bundles: Path) -> list:
    return [p.name for p in bundles.iterdir() if ".tmp-" in p.name] if bundles.exists() else []


def test_disk_full_while_a_bundle_is_unpacked_for_a_build_is_resource_exhausted_and_builds_once_freed(
        agent_factory, small_disk, tmp_path):
    agent = agent_factory(store=small_disk / "store")
    small, _, _ = single_segment_bundle(tmp_path, conv_net(seed=51), "small")
    big, _, _ = single_segment_bundle(tmp_path, wide_mlp(512, 3, seed=52), "big")  # about 3 MB unpacked
    bundles = small_disk / "bundles"
    with client_for(agent) as client:
        small_digest = client.upload(small).digest
        list(client.build(small_digest))
        before = {e.key: e.digest for e in client.list_engines().engines}
        unpacked_before = sorted(p.name for p in bundles.iterdir())
        big_digest = client.upload(big).digest
        fill(small_disk / "filler")
        with pytest.raises(AgentError) as info:
            list(client.build(big_digest))
        err = info.value
        assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.answered, err
        text = err.message
        assert "disk full unpacking bundle" in text and str(bundles) in text, text
        assert "bytes free" in text and "it needs" in text and "deploy cache prune" in text, text
        assert leftovers(bundles) == [] and sorted(p.name for p in bundles.iterdir()) == unpacked_before
        assert {e.key: e.digest for e in client.list_engines().engines} == before
        reply = client.run(client_run_request(small_digest))  # still serving what it had
        assert reply.max_rel_err < 1e-4

        os.unlink(small_disk / "filler")
        events = list(client.build(big_digest))
    summary = events[-1].summary
    assert summary.failed == 0 and summary.built == 1


def client_run_request(digest: str):
    from protos import agent_pb2

    return agent_pb2.RunRequest(bundle_digest=digest, verify=True)


def test_disk_full_part_way_through_unpacking_leaves_nothing_and_keeps_what_was_there(
        small_disk, tmp_path, monkeypatch):
    """The space goes to someone else after the free-space check: ENOSPC mid-write is RESOURCE_EXHAUSTED too."""
    small, _, _ = single_segment_bundle(tmp_path, conv_net(seed=53), "small")
    big, _, _ = single_segment_bundle(tmp_path, wide_mlp(512, 3, seed=54), "big")
    dest = small_disk / "bundles"
    kept = extract_archive(small, dest / "small")
    filler = small_disk / "filler"
    fill(filler)
    with open(filler, "r+b") as f:  # leave 1 MiB: the manifest and the first megabyte fit, the segment does not
        f.truncate(os.path.getsize(filler) - 1024 * 1024)
    monkeypatch.setattr(archive_mod, "_free_bytes", lambda path: 1 << 40)  # the check saw plenty
    with pytest.raises(ResourceExhausted) as info:
        extract_archive(big, dest / "big")
    text = str(info.value)
    assert "disk full unpacking bundle" in text and "disk full after" in text and "bytes free" in text, text
    assert not (dest / "big").exists() and leftovers(dest) == []
    Bundle.open(kept).verify()  # the bundle unpacked before is intact

    monkeypatch.undo()
    os.unlink(filler)
    Bundle.open(extract_archive(big, dest / "big")).verify()
