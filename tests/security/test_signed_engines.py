"""Engines signed by the agent that built them: two real agents (mutual TLS, certificates of one fleet CA, the
fleet's trust root), real builds with onnxruntime, engines moved with FetchEngine/PutEngine as `fleet warm` does.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from device_agent.config import AgentSettings
from device_agent.engine_seal import RECORD, EngineSeal
from device_agent.fileio import sha256_bytes
from device_agent.server import AgentServer
from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.security import certs, keys, signing
from protos import agent_pb2
from tests.device_agent.onnx_models import conv_net, single_segment_bundle

OPTIONS = agent_pb2.BuildOptions(backend="onnxruntime")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, pki) -> Iterator[dict]:
    """Two agents of one fleet (agent-one, agent-two), each with its own fleet-CA certificate and the trust root."""
    root = tmp_path_factory.mktemp("engine-fleet")
    trust = keys.init(root / "keys").path
    two = certs.issue_agent(pki.root, "agent-two", ["127.0.0.1"])
    servers = []
    for name, pair in (("one", pki.agent), ("two", two)):
        server = AgentServer(AgentSettings(listen="127.0.0.1:0", store=root / name / "store", backend="onnxruntime",
                                           tls_cert=pair.cert, tls_key=pair.key, tls_ca=pki.ca,
                                           trust_root=trust / keys.TRUST_ROOT))
        server.start()
        servers.append(server)
    yield {"keys": trust, "one": servers[0], "two": servers[1], "root": root}
    for server in servers:
        server.stop(grace=0.1)


def client(pki, server: AgentServer, name: str) -> AgentClient:
    return AgentClient(pki.device(server.address, pki.client, name=name), retry_for=0)


def pushed(c: AgentClient, fleet: dict, tmp: Path, seed: int) -> str:
    archive = tmp / f"b{seed}.bundle.tar"
    if not archive.is_file():
        archive, _, _ = single_segment_bundle(tmp, conv_net(seed=seed), name=f"b{seed}", seed=seed)
    up = c.upload(archive, kind="bundle", trust=signing.metadata_for(archive, fleet["keys"]))
    return up.digest


def fetched(c: AgentClient) -> tuple[agent_pb2.EngineEntry, bytes]:
    head, data = None, b""
    for msg in c.fetch_engine(c.list_engines().engines[-1].key):
        if msg.WhichOneof("msg") == "entry":
            head = msg.entry
        else:
            data += msg.chunk
    return head, data


def put(c: AgentClient, entry: agent_pb2.EngineEntry, data: bytes) -> agent_pb2.PutEngineReply:
    return c.put_engine(iter([agent_pb2.EngineChunk(entry=entry), agent_pb2.EngineChunk(chunk=data)]))


def build_events(c: AgentClient, digest: str) -> list[str]:
    names = {v: k for k, v in agent_pb2.SegmentEvent.Stage.items()}
    return [names[ev.segment.stage] for ev in c.build(digest, OPTIONS) if ev.WhichOneof("event") == "segment"]


def test_an_engine_carries_its_builders_signature_and_another_fleet_agent_takes_it(fleet, pki, tmp_path):
    one, two = client(pki, fleet["one"], "agent-one"), client(pki, fleet["two"], "agent-two")
    digest = pushed(one, fleet, tmp_path, seed=31)
    assert "BUILT" in build_events(one, digest)
    entry, data = fetched(one)
    record = json.loads(entry.builder_record)
    assert "BEGIN CERTIFICATE" in record["builder"] and record["signature"]
    assert put(two, entry, data).key == entry.key
    assert pushed(two, fleet, tmp_path, seed=31) == digest
    assert "CACHE_HIT" in build_events(two, digest)  # the copied engine serves: no build on agent-two


@pytest.mark.parametrize("forgery", ["no signature", "changed plan", "builder of another CA"])
def test_an_engine_whose_builder_signature_fails_is_refused_before_its_bytes_are_read(fleet, pki, tmp_path,
                                                                                      forgery):
    one, two = client(pki, fleet["one"], "agent-one"), client(pki, fleet["two"], "agent-two")
    digest = pushed(one, fleet, tmp_path, seed=32)
    build_events(one, digest)
    entry, data = fetched(one)
    if forgery == "no signature":
        entry.builder_record = b""
    elif forgery == "changed plan":
        data = data[:-1] + bytes([data[-1] ^ 1])
        entry.digest, entry.size = sha256_bytes(data), len(data)
    else:  # a plan signed by an agent certificate of another CA
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        stranger = EngineSeal(load_pem_private_key(pki.foreign_agent.key.read_bytes(), None),
                              pki.foreign_agent.cert.read_bytes(), None, Counter())
        entry.builder_record = stranger.record(entry.key, entry.digest, entry.size)
    fleet["two"].service.engines.cache.remove(entry.key)
    with pytest.raises(AgentError) as caught:
        put(two, entry, data)
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert {"no signature": "carries no builder signature", "changed plan": "does not verify",
            "builder of another CA": "fleet CA did not issue"}[forgery] in str(caught.value)
    assert fleet["two"].service.engines.cache.get(entry.key) is None  # nothing stored


def test_an_engine_placed_in_the_cache_by_hand_is_never_loaded(fleet, pki, tmp_path):
    one, two = client(pki, fleet["one"], "agent-one"), client(pki, fleet["two"], "agent-two")
    digest = pushed(one, fleet, tmp_path, seed=33)
    build_events(one, digest)
    key = one.list_engines().engines[-1].key
    src = fleet["one"].service.engines.cache.entries_dir / key
    dst = fleet["two"].service.engines.cache.entries_dir / key
    shutil.copytree(src, dst)  # a plan copied in by hand, with a record of another agent: its meta is sound
    garbage = b"not a plan at all" * 64  # onnxruntime would fail to load this, if anything loaded it
    (dst / "plan").write_bytes(garbage)
    meta = json.loads((dst / "meta.json").read_text())
    meta.update(size=len(garbage), digest=sha256_bytes(garbage))
    (dst / "meta.json").write_text(json.dumps(meta))
    assert pushed(two, fleet, tmp_path, seed=33) == digest
    assert build_events(two, digest)[-1] == "BUILT"  # not a cache hit: built anew, over the hand-placed file
    reply = two.run(agent_pb2.RunRequest(bundle_digest=digest, verify=True, options=OPTIONS))
    assert reply.max_rel_err < 1e-3
    assert (dst / RECORD).is_file() and json.loads((dst / RECORD).read_text())["signature"]
    refused = fleet["two"].service.trust.refusals[("engine", "unsealed_in_cache")]
    assert refused >= 1


@pytest.mark.slow
def test_fleet_warm_signs_the_bundle_and_copies_a_signed_engine_between_trusting_agents(agent_factory, pki, deploy,
                                                                                        tmp_path):
    """`deploy fleet warm` end to end: two agents with mutual TLS and the trust root, the host with the keys."""
    import os

    import tomli_w

    from host.inventory import Device, TlsFiles

    fleet = keys.init(tmp_path / "keys").path
    agents, entries = {}, {}
    for name in ("w-one", "w-two"):
        pair = certs.issue_agent(pki.root, name, ["127.0.0.1"])
        agents[name] = agent_factory(tls_cert=pair.cert, tls_key=pair.key, tls_ca=pki.ca,
                                     trust_root=fleet / keys.TRUST_ROOT, require_signed=True, backend="onnxruntime")
        entries[name] = {"address": agents[name].address, "profile": "x86-cpu",
                         "tls": {"ca": str(pki.ca), "cert": str(pki.client.cert), "key": str(pki.client.key)}}
    inventory = tmp_path / "deploy.toml"
    inventory.write_text(tomli_w.dumps({"devices": entries}))
    model = tmp_path / "convnet.onnx"
    model.write_bytes(conv_net(seed=34))
    proc = deploy("fleet", "warm", str(model), "--json", env={**os.environ, "DEPLOY_INVENTORY": str(inventory),
                                                              "DEPLOY_KEYS_DIR": str(fleet)}, timeout=240)
    assert proc.returncode == 0, proc.stderr
    (cls,) = json.loads(proc.stdout)["classes"]
    assert cls["built_on"] in entries and cls["copied_to"] == [n for n in entries if n != cls["built_on"]]
    copied = cls["copied_to"][0]
    device = Device(name=copied, address=agents[copied].address,
                    tls=TlsFiles(ca=pki.ca, cert=pki.client.cert, key=pki.client.key))
    with AgentClient(device) as c:
        (entry,) = c.list_engines().engines
        builder = json.loads(entry.builder_record)["builder"]
    from cryptography import x509

    assert cls["built_on"] in x509.load_pem_x509_certificate(builder.encode()).subject.rfc4514_string()
