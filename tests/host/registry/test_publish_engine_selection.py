"""`deploy push --registry` publishes the engines it built, chosen and fetched the way fleet warm does
(host/fleet/engine_fetch.py): of the build's precision, not merely the segment's engine the agent used last.

A real agent and a real registry: between the build and the publish another user builds the same bundle in FP32 on
the same device, so its FP32 engine is the one used last. The push asked for FP16 and must publish FP16 (the old
copy in host/registry/from_agent.py had no precision filter and published the FP32 engine under an FP16 push).

The fetch's size cap on the same path: an engine rebuilt larger between the listing and the fetch (written by the
agent's own cache code into its cache directory) is cut off at the listed size, and nothing is published (the old
copy read every byte the agent sent, then compared digests). And a timing cache larger than any agent takes is
left out of the published artifact, whose Pull it would fail.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

from device_agent.cache import EngineCache
from device_agent.errors import DataLoss
from device_agent.registry import ANN_KEY, ANN_PARTS, ENGINE_LAYER, RegistryClient, RegistryRef
from device_agent.timing_cache import MAX_TIMING_CACHE_BYTES
from host.client.agent import AgentClient
from host.client.digests import digest_of
from host.inventory import Device
from host.pipeline.observer import Observer
from host.pipeline.push import PushOptions, push
from host.registry.from_agent import publish_built_engines
from protos import agent_pb2
from tests.device_agent.onnx_models import conv_net, single_segment_bundle
from tests.device_agent.test_timing_cache import grow_timing_cache


class AnotherUserBuildsFp32(Observer):
    """Notes the bundle's digest and the published tag; just before the publish, builds the bundle in FP32."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.digest = ""
        self.tag: Optional[str] = None
        self.fp32_built = 0
        self.listed: list[agent_pb2.EngineEntry] = []  # as the publish finds them

    def phase(self, name: str, detail: str = "") -> None:
        if name == "build":
            self.digest = detail
        elif name == "publish":
            with AgentClient(self.device) as other:
                events = list(other.build(self.digest, agent_pb2.BuildOptions(fp16=False)))
                self.listed = list(other.list_engines().engines)
            self.fp32_built = events[-1].summary.built

    def phase_done(self, name: str, seconds: float, detail: str = "") -> None:
        if name == "publish":
            self.tag = detail.split()[-1]  # "engines as TAG"


def test_push_fp16_through_a_registry_publishes_its_fp16_engine_though_an_fp32_one_was_used_since(
        agent_factory, registry, tmp_path):
    archive, _, _ = single_segment_bundle(tmp_path, conv_net(seed=91), "prec")
    ref = f"{registry.address}/lab/prec"
    device = Device(name="d", address=agent_factory(registry=ref).address, profile="x86-cpu")
    observer = AnotherUserBuildsFp32(device)

    with AgentClient(device) as client:
        push(client, archive, PushOptions.from_flat(fp16=True, registry=ref, verify=False), observer)

    assert observer.fp32_built == 1 and observer.tag, vars(observer)
    listed = {e.attributes["precision"]: e for e in observer.listed}
    assert list(listed) == ["fp16", "fp32"], list(listed)  # in order of last use: FP32 is the later one
    layers = [layer for layer in RegistryClient(RegistryRef.parse(ref)).manifest(observer.tag)[0]["layers"]
              if layer["mediaType"] == ENGINE_LAYER]
    assert [json.loads(layer["annotations"][ANN_PARTS])["precision"] for layer in layers] == ["fp16"]
    assert layers[0]["annotations"][ANN_KEY] == listed["fp16"].key
    assert layers[0]["digest"] == listed["fp16"].digest


class RebuiltAfterListing(AgentClient):
    """A real client whose ListEngines reply is followed at once by a larger rebuild of each listed engine, written
    with the agent's own `EngineCache` into the agent's cache directory (same key parts, so the same key)."""

    def __init__(self, device: Device, cache_dir: Path, grow_by: int) -> None:
        super().__init__(device)
        self.cache_dir, self.grow_by = cache_dir, grow_by

    def list_engines(self, *args, **kwargs) -> agent_pb2.ListEnginesReply:
        reply = super().list_engines(*args, **kwargs)
        cache = EngineCache(self.cache_dir)
        for e in reply.engines:
            plan = (self.cache_dir / "entries" / e.key / "plan").read_bytes()
            cache.put(json.loads(e.attributes["parts"]), plan + b"\0" * self.grow_by)
        return reply


@dataclass
class Built:
    """A one-segment bundle uploaded to a real agent and built there, with its one engine as ListEngines lists it."""

    handle: Any
    device: Device
    digest: str
    summary: agent_pb2.BuildSummary
    listed: agent_pb2.EngineEntry

    def publish(self, client: AgentClient, ref: RegistryRef):  # noqa: ANN201 - host.registry.publish.Published
        return publish_built_engines(client, RegistryClient(ref), self.digest, [self.listed.segment_digest],
                                     self.summary.backend, self.summary.backend_version)


def built(agent_factory, tmp_path: Path, seed: int) -> Built:
    archive, _, _ = single_segment_bundle(tmp_path, conv_net(seed=seed), f"m{seed}")
    handle = agent_factory()
    device = Device(name="d", address=handle.address, profile="x86-cpu")
    digest = digest_of(archive)
    with AgentClient(device) as client:
        client.upload(archive)
        summary = list(client.build(digest))[-1].summary
        [listed] = client.list_engines().engines
    assert summary.built == 1, summary
    return Built(handle, device, digest, summary, listed)


def test_publish_cuts_off_an_engine_that_grew_after_it_was_listed_and_publishes_nothing(
        agent_factory, registry, tmp_path):
    b = built(agent_factory, tmp_path, seed=92)
    device, listed = b.device, b.listed
    ref = RegistryRef.parse(f"{registry.address}/lab/grown")

    with RebuiltAfterListing(device, b.handle.store_dir.parent / "engines", grow_by=3 << 20) as client, \
            pytest.raises(DataLoss) as caught:
        b.publish(client, ref)

    assert f"sends more than the {listed.size} bytes it was listed with" in str(caught.value), caught.value
    with AgentClient(device) as client:
        [now] = client.list_engines().engines
    assert now.key == listed.key and now.size == listed.size + (3 << 20)  # the agent serves the rebuilt engine
    assert tags(registry.address, "lab/grown") == [], "something was published"


def tags(address: str, repository: str) -> list[str]:
    """The repository's tags as the registry lists them (none: it was never pushed to)."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/{repository}/tags/list", timeout=10) as r:
            return json.loads(r.read()).get("tags") or []
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


def test_publish_leaves_out_a_timing_cache_no_agent_would_take_and_publishes_the_engines(agent_factory, registry,
                                                                                         tmp_path):
    """The builder's timing cache grew past MAX_TIMING_CACHE_BYTES: an artifact carrying it would make every
    agent's Pull fail, so the engines are published without it (before: the whole cache was read and published)."""
    b = built(agent_factory, tmp_path, seed=93)
    grow_timing_cache(b.handle, b.device, MAX_TIMING_CACHE_BYTES + 1)
    ref = RegistryRef.parse(f"{registry.address}/lab/bigtiming")

    with AgentClient(b.device) as client:
        published = b.publish(client, ref)

    layers = RegistryClient(ref).manifest(published.manifest_digest)[0]["layers"]
    assert [layer["mediaType"] for layer in layers] == [ENGINE_LAYER], layers
