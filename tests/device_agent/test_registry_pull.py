"""`Pull` on real agents from a real registry process on loopback: bundles and engines as OCI artifacts."""
from __future__ import annotations

import json

import grpc
import pytest

from device_agent.registry import RegistryClient, RegistryRef
from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from host.registry.publish import class_of, publish_bundle, publish_engines
from protos import agent_pb2
from tests.device_agent.onnx_models import conv_net, single_segment_bundle

Stage = agent_pb2.SegmentEvent


def client_for(agent) -> AgentClient:
    return AgentClient(Device(name="t", address=agent.address))


def build_stages(client, digest):
    events = list(client.build(digest, agent_pb2.BuildOptions()))
    return [e.segment.stage for e in events if e.WhichOneof("event") == "segment"]


@pytest.fixture
def published(agent_factory, registry, tmp_path):
    """One agent builds; its bundle and engine go to the registry. (archive, digest, tag, entry, registry ref)."""
    archive, _feeds, _want = single_segment_bundle(tmp_path, conv_net(seed=5), "convnet")
    builder = agent_factory()
    with client_for(builder) as c:
        digest = c.upload(archive).digest
        build_stages(c, digest)
        (entry,) = c.list_engines().engines
        plan = tmp_path / "plan"
        plan.write_bytes(b"".join(m.chunk for m in c.fetch_engine(entry.key) if m.WhichOneof("msg") == "chunk"))
    ref = f"{registry.address}/fleet/convnet"
    rc = RegistryClient(RegistryRef.parse(ref))
    publish_bundle(rc, archive, digest)
    tag = publish_engines(rc, digest, class_of([entry]), [(entry, plan)]).reference
    return archive, digest, tag, entry, ref


def test_pulled_bundle_and_engines_run_with_a_cache_hit_and_a_second_pull_fetches_nothing(agent_factory,
                                                                                            published):
    _archive, digest, tag, entry, ref = published
    puller = agent_factory(registry=ref)
    with client_for(puller) as c:
        reply = c.pull(digest, tag)
        assert not reply.bundle_present and reply.engines_pulled == 1 and list(reply.engine_keys) == [entry.key]
        assert reply.bytes_pulled > entry.size
        assert c.query_upload(digest).complete
        assert build_stages(c, digest)[-1] == Stage.CACHE_HIT  # never built here
        again = c.pull(digest, tag)
        assert again.bundle_present and again.engines_present == 1 and again.bytes_pulled == 0


def test_a_tampered_blob_in_registry_storage_is_refused_by_digest_and_nothing_is_stored(agent_factory, registry,
                                                                                       published):
    _archive, digest, tag, entry, ref = published
    for blob in (digest, entry.digest):
        path = registry.blob_path(blob)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    puller = agent_factory(registry=ref)
    with client_for(puller) as c:
        with pytest.raises(AgentError) as err:
            c.pull(digest)
        assert err.value.code == grpc.StatusCode.DATA_LOSS and digest in err.value.message
        assert not c.query_upload(digest).complete and c.query_upload(digest).committed_offset == 0
        with pytest.raises(AgentError) as err:
            c.pull("", tag)
        assert err.value.code == grpc.StatusCode.DATA_LOSS
        assert list(c.list_engines().engines) == []
        assert c.info().agent_version  # and it keeps serving


def test_engines_of_another_device_class_are_refused_before_any_byte_is_fetched(agent_factory, registry,
                                                                                 published, tmp_path):
    _archive, digest, _tag, entry, ref = published
    foreign = agent_pb2.EngineEntry()
    foreign.CopyFrom(entry)
    parts = json.loads(foreign.attributes["parts"])
    parts["cc"] = "7.2"
    foreign.attributes["parts"] = json.dumps(parts)
    plan = tmp_path / "foreign-plan"
    plan.write_bytes(b"x" * 100)
    foreign.digest = "sha256:" + __import__("hashlib").sha256(plan.read_bytes()).hexdigest()
    tag = publish_engines(RegistryClient(RegistryRef.parse(ref)), digest, "other", [(foreign, plan)]).reference
    puller = agent_factory(registry=ref)
    with client_for(puller) as c:
        with pytest.raises(AgentError) as err:
            c.pull("", tag)
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "cc: entry '7.2'" in err.value.message


def test_pull_on_an_agent_without_a_registry_says_how_to_give_it_one(agent):
    with client_for(agent) as c:
        with pytest.raises(AgentError) as err:
            c.pull("sha256:" + "0" * 64)
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "--registry" in err.value.message


def test_registry_address_without_scheme_is_plain_http_on_loopback_only():
    assert RegistryRef.parse("127.0.0.1:5000/a/b").scheme == "http"
    assert RegistryRef.parse("registry.fleet:443/a").scheme == "https"
    with pytest.raises(Exception, match="HOST"):
        RegistryRef.parse("no-repo")


def test_an_agent_with_a_registry_builds_nothing_when_its_class_engines_are_there(agent_factory, published):
    archive, digest, _tag, entry, ref = published
    other = agent_factory(registry=ref)
    with client_for(other) as c:
        c.upload(archive)  # the bundle over gRPC; the engine only in the registry
        assert build_stages(c, digest) == [Stage.STARTED, Stage.CACHE_HIT]
        assert [e.key for e in c.list_engines().engines] == [entry.key]


def test_a_build_with_an_unreachable_registry_builds_here(agent_factory, published):
    archive, digest, _tag, _entry, _ref = published
    other = agent_factory(registry="127.0.0.1:9/nothing/here")
    with client_for(other) as c:
        c.upload(archive)
        assert Stage.BUILT in build_stages(c, digest)


def test_a_registry_with_basic_auth_serves_an_agent_with_credentials_and_refuses_one_without(agent_factory,
                                                                                             registry, tmp_path):
    import bcrypt

    from device_agent.registry import Credentials
    from tests.conftest import RegistryHandle

    password = "s3cret-registry-pass"
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("fleet:" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode() + "\n")
    (tmp_path / "auth").mkdir()
    locked = RegistryHandle(tmp_path / "auth" / "data", registry.port, tmp_path / "auth" / "registry.log")
    registry.stop()  # reuse its free port
    locked.htpasswd = htpasswd
    locked.start()
    try:
        archive, _feeds, _want = single_segment_bundle(tmp_path, conv_net(seed=6), "convnet")
        ref = f"{locked.address}/fleet/locked"
        rc = RegistryClient(RegistryRef.parse(ref), Credentials(username="fleet", password=password))
        from device_agent.fileio import sha256_file

        digest = sha256_file(archive)
        publish_bundle(rc, archive, digest)
        pw = tmp_path / "registry-password"
        pw.write_text(password + "\n")
        good = agent_factory(registry=ref, registry_user="fleet", registry_password_file=pw)
        anonymous = agent_factory(registry=ref)
        with client_for(good) as c:
            assert not c.pull(digest).bundle_present and c.query_upload(digest).complete
        with client_for(anonymous) as c:
            with pytest.raises(AgentError) as err:
                c.pull(digest)
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED and "credentials" in err.value.message
        assert password not in good.log() and password not in anonymous.log()
    finally:
        locked.stop()
