"""`deploy fleet warm --via-registry` with a real registry process and 8 real agents on loopback.

Proves: one build for the class; every other agent pulls bundle, engines and the builder's timing cache itself
(the host sends one bundle and one set of engines, not one per device); every agent then builds with cache hits only and runs the model;
a registry restart in the middle of a pull is resumed; a tampered blob in the registry's storage is refused by
its digest and the agent keeps serving.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tomli_w

from device_agent.registry import TIMING_CACHE_LAYER, RegistryClient, RegistryRef
from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from host.registry.publish import publish_bundle
from protos import agent_pb2
from tests.device_agent.onnx_models import conv_net, reference_run
from tests.device_agent.test_timing_cache import chunks, class_facts
from tests.host.fleet.test_warm_timing import sha
from tests.system.test_fleet_warm import built_nothing_and_matches

N = 8


def test_a_class_of_8_warmed_through_the_registry_builds_once_and_each_agent_pulls_for_itself(
        agent_factory, registry, tmp_path, deploy):
    model = tmp_path / "convnet.onnx"
    model.write_bytes(conv_net(seed=3, channels=16))
    ref = f"{registry.address}/fleet/convnet"
    handles = {f"a{i}": agent_factory(registry=ref) for i in range(N)}
    inventory = tmp_path / "deploy.toml"
    inventory.write_text(tomli_w.dumps({"devices": {n: {"address": h.address, "profile": "x86-cpu",
                                                        "tags": ["lab"]} for n, h in handles.items()}}))
    env = dict(os.environ, DEPLOY_INVENTORY=str(inventory))
    blobs = {n: f"timing cache of {n} ".encode() * 400 for n in handles}
    for n, h in handles.items():  # onnxruntime builds write none: each agent gets its own, told apart by digest
        with AgentClient(Device(name=n, address=h.address)) as c:
            c.put_timing_cache(chunks(class_facts(c), blobs[n]))
    proc = deploy("fleet", "warm", str(model), "--via-registry", "--registry", ref, "--concurrency", "4",
                  "--json", env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    data = json.loads(proc.stdout)
    (cls,) = data["classes"]
    assert data["builds"] == 1 and cls["builds"] == 1
    assert sorted(cls["copied_to"] + [cls["built_on"]]) == sorted(handles)
    digest = cls["bundle_digest"]
    # each agent fetched from the registry itself: the registry served the engine blob once per pulling agent
    log = registry.log_path.read_text(errors="replace")
    rc = RegistryClient(RegistryRef.parse(ref))
    engine_layer, timing_layer = rc.manifest(_engines_tag(rc, digest, cls))[0]["layers"]
    engine_gets = log.count(f"GET /v2/fleet/convnet/blobs/{engine_layer['digest']}")
    assert engine_gets == N - 1, (engine_gets, log[-3000:])
    # the builder's timing cache went the same way, as a layer of the class's artifact, not over gRPC
    builder_cache = sha(blobs[cls["built_on"]])
    assert timing_layer["mediaType"] == TIMING_CACHE_LAYER and timing_layer["digest"] == builder_cache
    assert log.count(f"GET /v2/fleet/convnet/blobs/{builder_cache}") == N - 1
    assert cls["timing_cache"]["digest"] == builder_cache and not cls["timing_cache"]["refused"]
    assert sorted(cls["timing_cache"]["copied_to"]) == sorted(cls["copied_to"])
    for n, h in handles.items():  # the same cache state the gRPC path leaves (tests/host/fleet/test_warm_timing.py)
        with AgentClient(Device(name=n, address=h.address)) as c:
            assert [t.digest for t in c.list_engines().timing_caches] == [builder_cache], n
    bundle_gets = log.count(f"GET /v2/fleet/convnet/blobs/{digest}")
    assert bundle_gets == N, bundle_gets  # the builder pulled its bundle too
    feeds = {"x": np.random.default_rng(7).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    want = reference_run(model.read_bytes(), feeds)
    for name, h in handles.items():
        built_nothing_and_matches(Device(name=name, address=h.address), digest, feeds, want)
    # a second run over the warm fleet builds nothing and pulls nothing
    again = json.loads(deploy("fleet", "warm", str(model), "--via-registry", "--registry", ref, "--json",
                              env=env, timeout=240).stdout)
    assert again["builds"] == 0 and sorted(again["classes"][0]["skipped"]) == sorted(handles)

    # a tampered engine blob in the registry's storage is refused by digest; the agent keeps serving
    path = registry.blob_path(engine_layer["digest"])
    data_bytes = bytearray(path.read_bytes())
    data_bytes[len(data_bytes) // 2] ^= 0xFF
    path.write_bytes(bytes(data_bytes))
    with AgentClient(Device(name="a1", address=handles["a1"].address)) as c:
        c.prune(agent_pb2.PruneRequest(all=True))
        with pytest.raises(AgentError) as err:
            c.pull(digest, _engines_tag(rc, digest, cls))
        assert err.value.code == grpc.StatusCode.DATA_LOSS and engine_layer["digest"] in err.value.message
        assert not c.list_engines().engines and c.info().agent_version


def test_fleet_warm_with_a_registry_but_grpc_copies_publishes_the_class_for_a_device_that_comes_later(
        agent_factory, registry, tmp_path, deploy):
    model = tmp_path / "convnet.onnx"
    model.write_bytes(conv_net(seed=4, channels=8))
    ref = f"{registry.address}/fleet/later"
    handles = {n: agent_factory() for n in ("g0", "g1")}  # no --registry: they only get gRPC copies
    for n, h in handles.items():
        with AgentClient(Device(name=n, address=h.address)) as c:
            c.put_timing_cache(chunks(class_facts(c), f"timing cache of {n} ".encode() * 400))
    inventory = tmp_path / "deploy.toml"
    inventory.write_text(tomli_w.dumps({"devices": {n: {"address": h.address, "profile": "x86-cpu"}
                                                    for n, h in handles.items()}}))
    proc = deploy("fleet", "warm", str(model), "--registry", ref, "--json",
                  env=dict(os.environ, DEPLOY_INVENTORY=str(inventory)), timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    (cls,) = json.loads(proc.stdout)["classes"]
    assert cls["builds"] == 1 and len(cls["copied_to"]) == 1 and cls["timing_cache"]["copied_to"] == cls["copied_to"]
    tag, digest = cls["published"], cls["bundle_digest"]
    assert tag == _find_tag(RegistryClient(RegistryRef.parse(ref)), digest, cls["engines"][0])
    late = agent_factory(registry=ref)  # a device that was not in the run pulls what the class built
    with AgentClient(Device(name="late", address=late.address)) as c:
        reply = c.pull(digest, tag)
        assert not reply.bundle_present and reply.engines_pulled == 1 and reply.timing_cache_pulled
        assert reply.timing_cache_digest == cls["timing_cache"]["digest"]
        summary = [e.summary for e in c.build(digest, agent_pb2.BuildOptions()) if e.WhichOneof("event") == "summary"]
        assert summary[0].built == 0 and summary[0].cache_hits == summary[0].segments


def _engines_tag(rc: RegistryClient, digest: str, cls: dict) -> str:
    """The tag of the engines artifact the host published for this class (found by the engine's cache key)."""
    return _find_tag(rc, digest, cls["engines"][0])


def _find_tag(rc: RegistryClient, digest: str, key: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{rc.ref.host}/v2/{rc.ref.repo}/tags/list", timeout=10) as r:
        tags = json.loads(r.read())["tags"]
    for tag in tags:
        if tag.startswith("engines-"):
            doc, _ = rc.manifest(tag)
            if any(l.get("annotations", {}).get("org.jetson-deploy.engine.key") == key for l in doc["layers"]):
                return tag
    raise AssertionError(f"no engines artifact holds {key}: {tags}")


def test_a_registry_restart_in_the_middle_of_a_pull_is_resumed_and_the_blob_verified(agent_factory, registry,
                                                                                      tmp_path):
    blob = tmp_path / "big.tar"
    with open(blob, "wb") as f:
        for _ in range(192):
            f.write(os.urandom(1 << 20))
    ref = f"{registry.address}/fleet/big"
    rc = RegistryClient(RegistryRef.parse(ref))
    digest = _file_digest(blob)
    publish_bundle(rc, blob, digest)
    agent = agent_factory(registry=ref)
    part = agent.store_dir / "partial" / digest.split(":", 1)[1]
    done = agent.store_dir / "blobs" / digest.split(":", 1)[1]
    result: dict = {}

    def pull() -> None:
        try:
            with AgentClient(Device(name="p", address=agent.address)) as c:
                result["reply"] = c.pull(digest)
        except Exception as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    t = threading.Thread(target=pull)
    t.start()
    deadline = time.monotonic() + 30
    while not (part.is_file() and part.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.002)
    assert part.is_file() and not done.exists(), "the pull finished before the registry could be restarted"
    registry.proc.kill()
    registry.proc.wait(10)
    cut_at = part.stat().st_size
    time.sleep(0.3)
    registry.start()
    t.join(120)
    assert "error" not in result, result.get("error")
    reply = result["reply"]
    assert reply.retries >= 1 and 0 < cut_at < blob.stat().st_size
    assert reply.bytes_pulled < blob.stat().st_size  # resumed, not started again
    assert _file_digest(done) == digest


def _file_digest(path: Path) -> str:
    from device_agent.fileio import sha256_file

    return sha256_file(path)

