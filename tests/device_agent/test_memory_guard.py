"""The memory guard refuses a build that cannot fit, naming the numbers, before any backend work."""
from __future__ import annotations

import grpc
import pytest

from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from protos import agent_pb2
from tests.device_agent.onnx_models import conv_net, single_segment_bundle, wide_mlp


def test_build_above_the_memory_limit_is_refused_with_the_numbers_and_the_agent_keeps_serving(agent_factory,
                                                                                             tmp_path):
    # onnxruntime (the backend that builds here) takes no workspace: its need is 3 x the weights,
    # 3 x 32 MiB for a 2-layer 2048-wide MLP, above a 64 MiB limit
    agent = agent_factory(memory_limit_bytes=64 * 1024 * 1024)
    big, _, _ = single_segment_bundle(tmp_path / "big", wide_mlp(width=2048, layers=2), "mg-big")
    small, _, _ = single_segment_bundle(tmp_path / "small", conv_net(seed=12), "mg")
    with AgentClient(Device(name="t", address=agent.address)) as client:
        digest = client.upload(big).digest
        with pytest.raises(AgentError) as refused:
            list(client.build(digest, agent_pb2.BuildOptions(backend="onnxruntime")))
        msg = refused.value.message
        assert client.info().memory_available_bytes == 64 * 1024 * 1024  # GetInfo reports what the guard allows
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "64.0 MiB" in msg and "--memory-limit-bytes" in msg and "weights" in msg
        assert "--max-workspace-size" in msg and "--fp16" in msg
        assert client.list_engines().engines == []  # refused before the backend built anything

        events = list(client.build(client.upload(small).digest, agent_pb2.BuildOptions(backend="onnxruntime")))
        assert events[-1].summary.built == 1  # a build that fits goes through on the same agent
