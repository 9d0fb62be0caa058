"""`Pull` on real agents from a real registry process on loopback: bundles and engines as OCI artifacts."""
from __future__ import annotations

import hashlib
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
                                                                                             registry_factory,
                                                                                             tmp_path):
    import bcrypt

    from device_agent.registry import Credentials

    password = "s3cret-registry-pass"
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("fleet:" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode() + "\n")
    locked = registry_factory(htpasswd=htpasswd)
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


def test_a_timing_cache_layer_of_the_agents_class_is_stored_once_another_class_refused_a_tampered_one_not_kept(
        agent_factory, registry, published, tmp_path):
    from host.fleet.timing import TimingCopy
    from tests.device_agent.test_timing_cache import class_facts

    _archive, digest, _tag, entry, ref = published
    plan = tmp_path / "plan"
    rc = RegistryClient(RegistryRef.parse(ref))
    puller = agent_factory(registry=ref)

    def artifact(facts: dict, data: bytes) -> str:
        info = agent_pb2.TimingCacheInfo(size=len(data), digest="sha256:" + hashlib.sha256(data).hexdigest(),
                                         device_class="|".join(f"{k}={v}" for k, v in sorted(facts.items())))
        info.facts.update(facts)
        bundle = "sha256:" + hashlib.sha256(data).hexdigest()  # a tag of its own per case
        return publish_engines(rc, bundle, class_of([entry]), [(entry, plan)], TimingCopy(info, data)).reference

    with client_for(puller) as c:
        mine = class_facts(c)
        ours = b"our class's timing cache " * 300
        reply = c.pull(digest, artifact(mine, ours))
        want = "sha256:" + hashlib.sha256(ours).hexdigest()
        assert reply.timing_cache_pulled and reply.timing_cache_digest == want and not reply.timing_cache_refused
        assert [(t.digest, dict(t.facts)) for t in c.list_engines().timing_caches] == [(want, mine)]
        again = c.pull("", artifact(mine, ours))
        assert not again.timing_cache_pulled and again.timing_cache_digest == want  # held: not fetched again

        other = dict(mine, cc="7.2")
        theirs = b"another class's timing cache " * 300
        refused = c.pull("", artifact(other, theirs))
        assert not refused.timing_cache_pulled and "class" in refused.timing_cache_refused
        assert refused.engine_keys == [entry.key]  # the engines are checked on their own
        assert [t.digest for t in c.list_engines().timing_caches] == [want]
        bad = b"a timing cache edited in the registry " * 300
        tag = artifact(mine, bad)
        path = registry.blob_path("sha256:" + hashlib.sha256(bad).hexdigest())
        path.write_bytes(path.read_bytes()[:-1] + b"!")
        with pytest.raises(AgentError) as err:
            c.pull("", tag)
        assert err.value.code == grpc.StatusCode.DATA_LOSS and "timing cache" in err.value.message
        assert [t.digest for t in c.list_engines().timing_caches] == [want]  # the old one, nothing partial
        assert not [p for p in (puller.store_dir.parent / "engines" / "timing").iterdir() if p.name.endswith(".tmp")]
