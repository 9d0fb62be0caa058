"""The builder workspace of a build: the request's, else the agent's where its operator set it, else the bundle
manifest's (the compile profile's default), else the agent's default; seen in the engine key's `workspace`."""
from __future__ import annotations

from host import api
from host.client.agent import AgentClient
from host.inventory import Device
from protos import agent_pb2
from tests.device_agent.onnx_models import conv_net, single_segment_bundle

MiB = 1024 * 1024


def _workspaces(client: AgentClient, digest: str, **options) -> list:
    """Build the bundle; the `workspace` of every engine now cached."""
    events = list(client.build(digest, agent_pb2.BuildOptions(backend="onnxruntime", **options)))
    assert events[-1].summary.built == 1 and events[-1].summary.failed == 0
    return sorted(int(e.attributes["workspace"]) for e in client.list_engines().engines)


def test_a_jetson_nano_bundle_builds_with_the_profiles_256_mib_workspace_unless_the_request_says(agent_factory,
                                                                                                tmp_path):
    agent = agent_factory()  # its workspace setting is the default, 1 GiB
    model = tmp_path / "convnet.onnx"
    model.write_bytes(conv_net(seed=21))
    nano = api.compile(model, tmp_path / "nano", profile="jetson-nano")
    bare, _, _ = single_segment_bundle(tmp_path / "bare", conv_net(seed=22), "ws")  # no max_workspace_size
    with AgentClient(Device(name="t", address=agent.address)) as client:
        digest = client.upload(nano["archive"]).digest
        assert _workspaces(client, digest) == [256 * MiB]
        assert _workspaces(client, digest, max_workspace_bytes=64 * MiB) == [64 * MiB, 256 * MiB]
        client.prune(agent_pb2.PruneRequest(all=True))
        assert _workspaces(client, client.upload(bare).digest) == [1024 * MiB]  # the agent's default

    configured = agent_factory(max_workspace_bytes=512 * MiB)  # an operator's setting is kept over the profile's
    with AgentClient(Device(name="t", address=configured.address)) as client:
        assert _workspaces(client, client.upload(nano["archive"]).digest) == [512 * MiB]
