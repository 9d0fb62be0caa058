"""Signed bundles by parts: the signed target is the manifest blob (the bundle's identity by parts).

A real agent with the fleet's trust root and real keys, over real gRPC; bundles go as `deploy push` sends them
(host/client/parts.py `send_bundle`: the parts the agent lacks, the manifest last with the metadata). A refused
manifest leaves its parts in the store as inert data, but no bundle: it is not stored, nothing is linked together
from the parts, and `Build` of its digest says NOT_FOUND. Parts corrupted in transit (DATA_LOSS, sent again alone)
are tests/host/pipeline/test_parts.py's.
"""
from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from device_agent.bundle import Bundle
from device_agent.manifest import MANIFEST_NAME
from device_agent.parts import manifest_parts
from host.client.errors import AgentError
from host.client.parts import send_bundle
from host.security import keys, signing
from protos import agent_pb2
from tests.conftest import AgentHandle
from tests.security.test_signed_bundles import (client, fleet, garbage_onnx_bundle, make_bundle,  # noqa: F401
                                                refusals, trusting_agent)


def bundle_dir(archive: Path) -> Path:
    """The directory single_segment_bundle wrote the archive from: what `deploy push` sends by parts."""
    return archive.parent / archive.name.split(".")[0]


def stored(agent: AgentHandle, digest: str) -> bool:
    return (agent.store_dir / "blobs" / digest.split(":", 1)[1]).is_file()


def assert_no_bundle(agent: AgentHandle, bundle: Bundle) -> None:
    """The manifest is not stored and nothing was assembled; Build cannot find the bundle. Its parts may stay."""
    digest = bundle.manifest_digest
    assert not stored(agent, digest)
    assert not (agent.store_dir.parent / "bundles" / digest.split(":", 1)[1]).exists()
    with pytest.raises(AgentError) as build:
        list(client(agent).build(digest, agent_pb2.BuildOptions(backend="onnxruntime")))
    assert build.value.code == grpc.StatusCode.NOT_FOUND


def test_a_signed_bundle_by_parts_is_verified_assembled_built_and_run(trusting_agent, fleet, tmp_path):
    d = bundle_dir(make_bundle(tmp_path, "byparts", seed=31))
    sent = send_bundle(client(trusting_agent), d, trust=signing.metadata_for(d, fleet))
    bundle = Bundle.open(d)
    assert sent.digest == bundle.manifest_digest  # the signed target is the manifest blob itself
    assert sent.parts_sent == sent.parts_total == len(manifest_parts(bundle.manifest)) + 1
    events = list(client(trusting_agent).build(sent.digest, agent_pb2.BuildOptions(backend="onnxruntime")))
    assert events[-1].summary.failed == 0
    reply = client(trusting_agent).run(agent_pb2.RunRequest(bundle_digest=sent.digest, verify=True))
    assert reply.max_rel_err < 1e-3


def test_an_unsigned_bundle_by_parts_is_refused_before_any_part_is_assembled(trusting_agent, tmp_path):
    d = bundle_dir(garbage_onnx_bundle(tmp_path, "unsigned_parts"))
    bundle = Bundle.open(d)
    before = refusals(trusting_agent, "unsigned")
    with pytest.raises(AgentError) as err:
        send_bundle(client(trusting_agent), d, trust=None)
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED and "unsigned" in str(err.value)
    assert refusals(trusting_agent, "unsigned") == before + 1
    assert all(stored(trusting_agent, p) for p in manifest_parts(bundle.manifest))  # inert data, never parsed
    assert_no_bundle(trusting_agent, bundle)


def test_a_manifest_signed_by_another_fleets_key_is_refused_on_the_signature_not_the_garbage_onnx(
        trusting_agent, tmp_path):
    stranger = keys.init(tmp_path / "stranger").path
    d = bundle_dir(garbage_onnx_bundle(tmp_path, "stranger_parts"))
    before = refusals(trusting_agent, "bad_signature")
    with pytest.raises(AgentError) as err:
        send_bundle(client(trusting_agent), d, trust=signing.metadata_for(d, stranger))
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "not signed by the keys this device trusts" in str(err.value) and "onnx" not in str(err.value).lower()
    assert refusals(trusting_agent, "bad_signature") == before + 1
    assert_no_bundle(trusting_agent, Bundle.open(d))


def test_metadata_signing_another_manifest_does_not_vouch_for_this_one(trusting_agent, fleet, tmp_path):
    good = bundle_dir(make_bundle(tmp_path, "signed_one", seed=32))
    other = bundle_dir(make_bundle(tmp_path, "other_one", seed=33))
    before = refusals(trusting_agent, "tampered")
    with pytest.raises(AgentError) as err:  # valid metadata, but its target is the other manifest's sha256
        send_bundle(client(trusting_agent), other, trust=signing.metadata_for(good, fleet))
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED and "not one the fleet's keys signed" in str(err.value)
    assert refusals(trusting_agent, "tampered") == before + 1
    assert_no_bundle(trusting_agent, Bundle.open(other))


def test_a_manifest_sent_as_a_part_is_never_a_bundle_until_it_comes_signed(trusting_agent, fleet, tmp_path):
    d = bundle_dir(make_bundle(tmp_path, "disguised", seed=34))
    bundle = Bundle.open(d)
    c = client(trusting_agent)
    for rel, part in bundle.manifest.files():
        c.upload(bundle.path_of(rel), digest=part, kind="part")
    c.upload(d / MANIFEST_NAME, kind="part")  # the label is the client's: it buys no verification
    assert stored(trusting_agent, bundle.manifest_digest)
    with pytest.raises(AgentError) as build:
        list(c.build(bundle.manifest_digest, agent_pb2.BuildOptions(backend="onnxruntime")))
    assert build.value.code == grpc.StatusCode.PERMISSION_DENIED and "never verified" in str(build.value)
    sent = send_bundle(c, d, trust=signing.metadata_for(d, fleet))  # held already: the header-only call verifies
    assert sent.bytes_sent == 0 and sent.parts_sent == 0
    events = list(c.build(bundle.manifest_digest, agent_pb2.BuildOptions(backend="onnxruntime")))
    assert events[-1].summary.failed == 0


def test_a_signed_manifest_whose_parts_are_not_on_the_agent_is_not_found_and_not_recorded(trusting_agent, fleet,
                                                                                          tmp_path):
    d = bundle_dir(make_bundle(tmp_path, "partless", seed=35))
    bundle = Bundle.open(d)
    with pytest.raises(AgentError) as err:
        client(trusting_agent).upload(d / MANIFEST_NAME, kind="manifest", trust=signing.metadata_for(d, fleet))
    assert err.value.code == grpc.StatusCode.NOT_FOUND and "of the parts its signed manifest pins" in str(err.value)
    assert not (trusting_agent.store_dir.parent / "trust" / "bundles" /
                bundle.manifest_digest.split(":", 1)[1]).exists()
    assert_no_bundle(trusting_agent, bundle)


def test_fleet_warm_with_keys_has_a_device_verify_the_bundle_it_held_from_before_its_trust_root(agent_factory, deploy,
                                                                                                tmp_path):
    """A device that got the bundle and its engines unsigned, then its trust root, holds every byte but may not use
    them; a signed warm must not call it warm on its bytes alone: it sends the manifest again with the metadata."""
    import json
    import os

    import tomli_w

    from tests.device_agent.onnx_models import conv_net

    store = tmp_path / "device" / "store"
    model = tmp_path / "convnet.onnx"
    model.write_bytes(conv_net(seed=35))
    inventory = tmp_path / "deploy.toml"

    def warm(agent: AgentHandle, keys_dir: Path) -> dict:
        inventory.write_text(tomli_w.dumps({"devices": {"dev": {"address": agent.address, "profile": "x86-cpu"}}}))
        proc = deploy("fleet", "warm", str(model), "--json", timeout=240,
                      env={**os.environ, "DEPLOY_INVENTORY": str(inventory), "DEPLOY_KEYS_DIR": str(keys_dir)})
        assert proc.returncode == 0, proc.stderr
        (cls,) = json.loads(proc.stdout)["classes"]
        return cls

    before = agent_factory(store=store, backend="onnxruntime")
    digest = warm(before, tmp_path / "no-keys")["bundle_digest"]  # no key directory: signing off
    before.stop()
    fleet = keys.init(tmp_path / "keys").path
    after = agent_factory(store=store, backend="onnxruntime", trust_root=fleet / keys.TRUST_ROOT, require_signed=True)
    warm(after, fleet)
    reply = client(after).run(agent_pb2.RunRequest(bundle_digest=digest, verify=True))  # refused if never verified
    assert reply.max_rel_err < 1e-3
