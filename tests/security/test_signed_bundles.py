"""Signed bundles: real keys (host/security/keys.py), a real agent started with the fleet's trust root, real gRPC.

Every refusal is shown to happen before anything parses the bundle: the refused archive is not in the store (so no
Build could ever read it), a Build of its digest answers NOT_FOUND, and where the bundle's ONNX is garbage the
error is the signature's, never a parser's.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from device_agent.archive import write_archive
from device_agent.fileio import sha256_bytes, sha256_file
from device_agent.manifest import MANIFEST_NAME, Manifest, write_manifest
from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from host.security import keys, signing
from protos import agent_pb2
from tests.conftest import REPO, AgentHandle, agent_flags
from tests.device_agent.onnx_models import conv_net, single_segment_bundle
from tests.device_agent.test_metrics import metrics_url, scrape, value


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return keys.init(tmp_path_factory.mktemp("fleet") / "keys").path


@pytest.fixture(scope="module")
def trusting_agent(tmp_path_factory: pytest.TempPathFactory, fleet: Path) -> Iterator[AgentHandle]:
    """One agent for the module, given a copy of root version 1 (later rotations reach it only through pushes)."""
    root = tmp_path_factory.mktemp("device")
    trust_root = shutil.copy(fleet / keys.TRUST_ROOT, root / "trust_root.json")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    handle = AgentHandle(store_dir=root / "store", log_path=root / "agent.log", env=env,
                         args=agent_flags(trust_root=trust_root, backend="onnxruntime", require_signed=True,
                                          metrics_listen="127.0.0.1:0"))
    handle.start()
    yield handle
    handle.stop()


def client(agent: AgentHandle) -> AgentClient:
    return AgentClient(Device(name="t", address=agent.address), retry_for=0)


def make_bundle(tmp: Path, name: str, seed: int) -> Path:
    archive, _, _ = single_segment_bundle(tmp, conv_net(seed=seed), name=name, seed=seed)
    return archive


def garbage_onnx_bundle(tmp: Path, name: str) -> Path:
    """A consistent bundle (the manifest pins the segment's digest) whose segment is not ONNX at all."""
    archive = make_bundle(tmp, name, seed=7)
    d = tmp / name
    junk = b"\x00this is not an ONNX model\xff" * 10
    (d / "segments" / "seg0.onnx").write_bytes(junk)
    m = Manifest.from_json((d / MANIFEST_NAME).read_bytes())
    m.segments[0].digest = sha256_bytes(junk)
    write_manifest(d, m)
    write_archive(d, archive)
    return archive


def refused(agent: AgentHandle, archive: Path, wire: bytes | None) -> AgentError:
    """Upload `archive` with `wire` and return the refusal, after showing nothing of it reached the store."""
    digest = sha256_file(archive)
    with pytest.raises(AgentError) as caught:
        client(agent).upload(archive, kind="bundle", trust=wire)
    assert not (agent.store_dir / "blobs" / digest.split(":")[1]).exists()
    assert not (agent.store_dir / "partial" / digest.split(":")[1]).exists()
    with pytest.raises(AgentError) as build:  # nothing that could parse it ever gets it
        list(client(agent).build(digest, agent_pb2.BuildOptions(backend="onnxruntime")))
    assert build.value.code == grpc.StatusCode.NOT_FOUND
    assert len(str(caught.value).splitlines()) == 1
    return caught.value


def refusals(agent: AgentHandle, reason: str) -> float:
    return value(scrape(metrics_url(agent)), "deploy_agent_trust_refusals_total", what="bundle", reason=reason)


def test_a_bundle_signed_by_the_fleet_is_taken_built_and_run(trusting_agent, fleet, tmp_path):
    archive = make_bundle(tmp_path, "good", seed=1)
    wire = signing.sign_manifest(signing.manifest_of_archive(archive), fleet)
    up = client(trusting_agent).upload(archive, kind="bundle", trust=wire)
    events = list(client(trusting_agent).build(up.digest, agent_pb2.BuildOptions(backend="onnxruntime")))
    assert events[-1].summary.built + events[-1].summary.cache_hits == 1
    reply = client(trusting_agent).run(agent_pb2.RunRequest(bundle_digest=up.digest, verify=True))
    assert reply.max_rel_err < 1e-3
    info = client(trusting_agent).info()
    assert info.signing.enabled and info.signing.root_version >= 1 and info.signing.targets_version >= 2


def test_an_unsigned_bundle_is_refused_before_its_payload_is_read(trusting_agent, tmp_path):
    before = refusals(trusting_agent, "unsigned")
    err = refused(trusting_agent, garbage_onnx_bundle(tmp_path, "unsigned"), None)
    assert err.code == grpc.StatusCode.PERMISSION_DENIED and "unsigned" in str(err)
    assert refusals(trusting_agent, "unsigned") == before + 1


def test_a_bundle_signed_by_another_fleets_key_is_refused_on_the_signature_not_the_garbage_onnx(
        trusting_agent, tmp_path):
    stranger = keys.init(tmp_path / "stranger").path
    archive = garbage_onnx_bundle(tmp_path, "stranger")
    before = refusals(trusting_agent, "bad_signature")
    err = refused(trusting_agent, archive, signing.sign_manifest(signing.manifest_of_archive(archive), stranger))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED
    assert "not signed by the keys this device trusts" in str(err) and "onnx" not in str(err).lower()
    assert refusals(trusting_agent, "bad_signature") == before + 1


def test_a_file_that_differs_from_the_signed_manifest_is_refused(trusting_agent, fleet, tmp_path):
    archive = make_bundle(tmp_path, "tampered", seed=2)
    wire = signing.sign_manifest(signing.manifest_of_archive(archive), fleet)
    d = tmp_path / "tampered"
    (d / "segments" / "seg0.onnx").write_bytes(conv_net(seed=99))  # another model, same manifest
    write_archive(d, archive)
    err = refused(trusting_agent, archive, wire)
    assert err.code == grpc.StatusCode.PERMISSION_DENIED
    assert "segments/seg0.onnx differs from what the signed manifest pins" in str(err)


def test_expired_metadata_is_refused(trusting_agent, fleet, tmp_path):
    archive = make_bundle(tmp_path, "stale", seed=3)
    long_ago = keys.now_utc() - dt.timedelta(days=400)
    wire = signing.sign_manifest(signing.manifest_of_archive(archive), fleet, now=long_ago)
    err = refused(trusting_agent, archive, wire)
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION and "expired" in str(err)
    signing.sign_manifest(signing.manifest_of_archive(archive), fleet, force=True)  # fresh metadata for the next tests


def test_metadata_older_than_seen_is_refused_also_after_a_restart(trusting_agent, fleet, tmp_path):
    old_bundle, new_bundle = make_bundle(tmp_path, "old", seed=4), make_bundle(tmp_path, "new", seed=5)
    old_wire = signing.sign_manifest(signing.manifest_of_archive(old_bundle), fleet, force=True)
    new_wire = signing.sign_manifest(signing.manifest_of_archive(new_bundle), fleet, force=True)
    client(trusting_agent).upload(new_bundle, kind="bundle", trust=new_wire)
    trusting_agent.restart()  # the versions seen are kept on disk
    err = refused(trusting_agent, old_bundle, old_wire)
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION and "older than what this device has seen" in str(err)
    # the bundle itself is fine: signed anew, it is taken
    client(trusting_agent).upload(old_bundle, kind="bundle", trust=signing.metadata_for(old_bundle, fleet))


def test_a_rotated_key_reaches_the_device_with_a_push_and_the_revoked_key_is_refused(trusting_agent, fleet,
                                                                                    tmp_path):
    stolen = shutil.copytree(fleet, tmp_path / "stolen-copy")  # the old keys, as a thief would hold them
    rotated = keys.rotate(fleet, "targets")
    archive = make_bundle(tmp_path, "after-rotation", seed=6)
    client(trusting_agent).upload(archive, kind="bundle", trust=signing.metadata_for(archive, fleet))
    info = client(trusting_agent).info()
    assert info.signing.root_version == rotated["root_version"]  # no reinstall: the root came with the push
    forged = make_bundle(tmp_path, "forged", seed=8)
    for _ in range(5):  # versions ahead of the fleet's, so only the revoked key can be the reason
        wire = signing.sign_manifest(signing.manifest_of_archive(forged), stolen, force=True)
    err = refused(trusting_agent, forged, wire)
    assert err.code == grpc.StatusCode.PERMISSION_DENIED and "not signed by the keys this device trusts" in str(err)
    assert "targets" in str(err)


def test_rollback_to_an_already_trusted_version_works_after_the_metadata_moved_on(trusting_agent, fleet, tmp_path):
    c = client(trusting_agent)
    options = agent_pb2.BuildOptions(backend="onnxruntime")
    for seed, name in ((11, "v-one"), (12, "v-two")):
        archive = make_bundle(tmp_path, name, seed=seed)
        up = c.upload(archive, kind="bundle", trust=signing.metadata_for(archive, fleet))
        list(c.build(up.digest, options))
        version = c.register_version(agent_pb2.RegisterVersionRequest(name="m", bundle_digest=up.digest,
                                                                      options=options, tolerance=1e-3)).version
        c.activate("m", version.version)
    newer = make_bundle(tmp_path, "unrelated", seed=13)
    signing.sign_manifest(signing.manifest_of_archive(newer), fleet, force=True)  # the fleet's metadata moves on
    trusting_agent.restart()  # nothing of the old bundle is open: it is unpacked again, under the trust check
    reply = client(trusting_agent).rollback("m")
    assert reply.active.version == version.version - 1 and reply.previous == version.version


def test_start_up_refuses_require_signed_without_a_root_and_a_root_without_the_library(tmp_path, fleet):
    def start(*flags: str, env: dict | None = None):
        import subprocess

        return subprocess.run([sys.executable, "-m", "device_agent", "--listen", "127.0.0.1:0", "--store",
                               str(tmp_path / "store"), *flags], capture_output=True, text=True, timeout=60,
                              cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})

    no_root = start("--require-signed")
    assert no_root.returncode == 2 and no_root.stderr.count("\n") == 1
    assert "--require-signed needs --trust-root" in no_root.stderr
    # a device without tuf: a module of that name that cannot be imported, first on the path
    (tmp_path / "hide" / "tuf").mkdir(parents=True)
    (tmp_path / "hide" / "tuf" / "__init__.py").write_text("raise ImportError('no tuf on this device', name='tuf')\n")
    missing = start("--trust-root", str(fleet / keys.TRUST_ROOT),
                    env={"PYTHONPATH": f"{tmp_path / 'hide'}{os.pathsep}{REPO}"})
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "needs the tuf library" in missing.stderr and "[trust]" in missing.stderr


def test_an_agent_without_a_trust_root_reports_signing_off(agent, deploy):
    data = json.loads(deploy("info", "--device", agent.address, "--json", check=True).stdout)
    assert data["signing"] == {"state": "off"}


def test_deploy_push_signs_with_the_hosts_keys_and_a_host_without_them_is_refused(trusting_agent, fleet, deploy,
                                                                                  tmp_path):
    from tests.host.cli.helpers import parse_json, tiny_conv_net

    model = tiny_conv_net(tmp_path / "tiny.onnx", seed=21)
    signed = deploy("push", str(model), "--device", trusting_agent.address, "--backend", "onnxruntime", "--json",
                    env={**os.environ, "DEPLOY_KEYS_DIR": str(fleet)})
    assert parse_json(signed)["verify"]["max_rel_err"] < 1e-3
    unsigned = deploy("upload", str(make_bundle(tmp_path, "from-elsewhere", seed=22)), "--device",
                      trusting_agent.address, env={**os.environ, "DEPLOY_KEYS_DIR": str(tmp_path / "no-keys")})
    assert unsigned.returncode == 1
    # one line of error; a progress line may precede it when the chunk left before the refusal came back
    errors = [line for line in unsigned.stderr.splitlines() if not line.startswith("upload ")]
    assert len(errors) == 1 and errors[0].startswith("error: PERMISSION_DENIED") and "unsigned" in errors[0]
