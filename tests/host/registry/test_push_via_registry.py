"""`deploy push --registry`: the agent pulls the bundle from a real registry, its engines are published after the
build, and another agent of the class pulls them and runs with a cache hit."""
from __future__ import annotations

import json
import urllib.request

from device_agent.registry import (BUNDLE_MANIFEST_LAYER, BUNDLE_PART_LAYER, RegistryClient, RegistryRef,
                                   bundle_tag)
from host.client.agent import AgentClient
from host.inventory import Device
from protos import agent_pb2
from tests.device_agent.onnx_models import conv_net


def test_push_through_a_registry_publishes_bundle_and_engines_that_another_agent_of_the_class_pulls(
        agent_factory, registry, tmp_path, deploy):
    model = tmp_path / "convnet.onnx"
    model.write_bytes(conv_net(seed=11))
    ref = f"{registry.address}/lab/convnet"
    first, second = agent_factory(registry=ref), agent_factory(registry=ref)
    proc = deploy("push", str(model), "--device", first.address, "--registry", ref, "--json", timeout=240)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    digest = data["bundle_digest"]
    rc = RegistryClient(RegistryRef.parse(ref))
    layers = rc.manifest(bundle_tag(digest))[0]["layers"]
    # one layer per part, the manifest (whose digest is the bundle's) last
    assert layers[-1]["digest"] == digest and layers[-1]["mediaType"] == BUNDLE_MANIFEST_LAYER
    assert len(layers) > 2 and {la["mediaType"] for la in layers[:-1]} == {BUNDLE_PART_LAYER}
    with urllib.request.urlopen(f"http://{registry.address}/v2/lab/convnet/tags/list", timeout=10) as r:
        (engines,) = [t for t in json.loads(r.read())["tags"] if t.startswith("engines-")]
    with AgentClient(Device(name="b", address=second.address)) as c:
        reply = c.pull(digest, engines)
        assert reply.engines_pulled >= 1 and not reply.bundle_present
        events = list(c.build(digest, agent_pb2.BuildOptions()))
        summary = [e.summary for e in events if e.WhichOneof("event") == "summary"][0]
        assert summary.built == 0 and summary.cache_hits == summary.segments >= 1


def test_push_with_a_malformed_registry_address_is_one_line(agent, tmp_path, deploy):
    model = tmp_path / "convnet.onnx"
    model.write_bytes(conv_net(seed=11))
    proc = deploy("push", str(model), "--device", agent.address, "--registry", "no-repository-here", timeout=240)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "HOST[:PORT]/REPO" in lines[0], proc.stderr
