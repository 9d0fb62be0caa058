"""Signed bundles through a registry: a real `docker-registry`, real keys, a real agent that pulls by itself.

The signing metadata is an OCI 1.1 artifact whose `subject` is the bundle's artifact (device_agent/registry_trust.py);
whoever can write to the registry can add bundles and artifacts, but not sign them.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import grpc
import pytest

from device_agent.fileio import sha256_file
from device_agent.registry import RegistryClient, RegistryRef
from device_agent.registry_trust import publish_signature, referrers
from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from host.registry.publish import publish_bundle
from host.security import keys, signing
from protos import agent_pb2
from tests.conftest import REPO
from tests.security.test_signed_bundles import garbage_onnx_bundle, make_bundle


def signing_host(tmp_path, registry, repo: str, monkeypatch):
    """The fleet's keys on the operator's host ($DEPLOY_KEYS_DIR), the device's trust root, a registry repository."""
    fleet = keys.init(tmp_path / "keys").path
    trust_root = shutil.copy(fleet / keys.TRUST_ROOT, tmp_path / "trust_root.json")
    ref = f"{registry.address}/fleet/{repo}"
    monkeypatch.setenv("DEPLOY_KEYS_DIR", str(fleet))
    return trust_root, ref, RegistryClient(RegistryRef.parse(ref))


def test_a_pulled_bundle_is_verified_and_what_an_attacker_put_in_the_registry_is_refused(
        agent_factory, registry, tmp_path, monkeypatch):
    trust_root, ref, rc = signing_host(tmp_path, registry, "signed", monkeypatch)
    good = make_bundle(tmp_path, "good", seed=41)
    published = publish_bundle(rc, good)
    signatures = referrers(rc, published.manifest_digest)
    assert [d["artifactType"] for d in signatures] == ["application/vnd.jetson-deploy.tuf.v1+json"]

    agent = agent_factory(registry=ref, trust_root=trust_root, backend="onnxruntime")
    c = AgentClient(Device(name="t", address=agent.address), retry_for=0)
    good_digest = c.pull(sha256_file(good)).bundle_digest
    events = list(c.build(good_digest, agent_pb2.BuildOptions(backend="onnxruntime")))
    assert events[-1].summary.failed == 0

    # an attacker who can write to the registry, but holds no key of the fleet
    monkeypatch.setenv("DEPLOY_KEYS_DIR", str(tmp_path / "no-keys"))
    evil = garbage_onnx_bundle(tmp_path, "evil")
    evil_artifact = publish_bundle(rc, evil)
    evil_digest = sha256_file(evil)
    with pytest.raises(AgentError) as unsigned:
        c.pull(evil_digest)
    assert unsigned.value.code == grpc.StatusCode.PERMISSION_DENIED and "unsigned" in str(unsigned.value)
    # ... nor by signing it with keys of their own, as an artifact referring to it
    stranger = keys.init(tmp_path / "stranger").path
    publish_signature(rc, evil_artifact.manifest_digest, 0,
                      signing.sign_manifest(signing.manifest_of_archive(evil), stranger))
    with pytest.raises(AgentError) as forged:
        c.pull(evil_digest)
    assert forged.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "not signed by the keys this device trusts" in str(forged.value)
    assert not c.query_upload(evil_digest).complete and c.query_upload(evil_digest).committed_offset == 0


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None, reason="needs unshare and ip")
def test_verification_needs_no_network(tmp_path):
    """An agent in a network namespace with no route (only loopback) verifies a signed bundle and refuses an
    unsigned one: everything it needs came with the upload."""
    fleet = keys.init(tmp_path / "keys").path
    good = make_bundle(tmp_path, "offline", seed=42)
    wire = signing.metadata_for(good, fleet)
    (tmp_path / "wire.json").write_bytes(wire)
    script = f"""
import sys, grpc
from pathlib import Path
from device_agent.config import AgentSettings
from device_agent.server import AgentServer
from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
server = AgentServer(AgentSettings(listen="127.0.0.1:0", store=Path({str(tmp_path / 'store')!r}),
                                   trust_root=Path({str(fleet / keys.TRUST_ROOT)!r})))
server.start()
c = AgentClient(Device(name="t", address=server.address), retry_for=0)
c.upload(Path({str(good)!r}), kind="bundle", trust=Path({str(tmp_path / 'wire.json')!r}).read_bytes())
try:
    c.upload(Path({str(garbage_onnx_bundle(tmp_path, 'offline-evil'))!r}), kind="bundle")
except AgentError as exc:
    print("refused", exc.code.name)
server.stop(0.1)
"""
    proc = subprocess.run(["unshare", "-n", "sh", "-c", f"ip link set lo up && ! ip route get 1.1.1.1 2>/dev/null "
                           f"&& exec {sys.executable} -c \"$0\"", script], capture_output=True, text=True,
                          cwd=str(REPO), timeout=120)
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
        pytest.skip("no permission to make a network namespace here")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "refused PERMISSION_DENIED"


def test_a_bundle_by_parts_pulled_from_the_registry_is_verified_on_its_manifest_and_an_unsigned_one_fetches_nothing(
        agent_factory, registry, tmp_path, monkeypatch):
    from device_agent.bundle import Bundle
    from host.registry.publish import publish_bundle_parts

    trust_root, ref, rc = signing_host(tmp_path, registry, "parts", monkeypatch)
    make_bundle(tmp_path, "good", seed=43)
    good = Bundle.open(tmp_path / "good")
    published = publish_bundle_parts(rc, good.root)  # one layer per part, the manifest last, and its signature
    assert [d["artifactType"] for d in referrers(rc, published.manifest_digest)] == \
        ["application/vnd.jetson-deploy.tuf.v1+json"]
    agent = agent_factory(registry=ref, trust_root=trust_root, backend="onnxruntime")
    c = AgentClient(Device(name="t", address=agent.address), retry_for=0)
    assert c.pull(good.manifest_digest).bundle_digest == good.manifest_digest
    events = list(c.build(good.manifest_digest, agent_pb2.BuildOptions(backend="onnxruntime")))
    assert events[-1].summary.failed == 0

    monkeypatch.setenv("DEPLOY_KEYS_DIR", str(tmp_path / "no-keys"))  # an attacker who can write to the registry
    garbage_onnx_bundle(tmp_path, "evil")
    evil = Bundle.open(tmp_path / "evil")
    publish_bundle_parts(rc, evil.root)
    with pytest.raises(AgentError) as unsigned:
        c.pull(evil.manifest_digest)
    assert unsigned.value.code == grpc.StatusCode.PERMISSION_DENIED and "unsigned" in str(unsigned.value)
    for digest in [evil.manifest_digest] + [part for _rel, part in evil.manifest.files()]:  # not a byte fetched
        assert not c.query_upload(digest).complete and c.query_upload(digest).committed_offset == 0
