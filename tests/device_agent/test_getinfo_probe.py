"""GetInfo reports the backends from a probe in a child process: the idle agent stays small."""
from __future__ import annotations

from pathlib import Path

from host.client.agent import AgentClient
from host.inventory import Device


def test_getinfo_reports_onnxruntime_without_loading_it_into_the_agent(agent):
    import onnxruntime

    with AgentClient(Device(name="t", address=agent.address)) as client:
        info = client.info()
    backends = {b.name: b for b in info.backends}
    assert backends["onnxruntime"].available and backends["onnxruntime"].version == onnxruntime.__version__
    assert not backends["tensorrt"].available and "No module named" in backends["tensorrt"].detail
    assert not info.HasField("trt_version")
    maps = Path(f"/proc/{agent.proc.pid}/maps").read_text()
    assert "onnxruntime" not in maps  # the probe ran in a child; the agent loads it only to build or run
