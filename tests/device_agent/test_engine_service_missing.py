"""An agent whose engine service cannot be imported says why: "upgrade the agent" only when its own code is the
cause; a library missing on the device is named instead."""
from __future__ import annotations

import sys

import pytest

from device_agent.config import AgentSettings
from device_agent.errors import Unimplemented
from device_agent.server import DeviceAgentService


def refusal(tmp_path) -> str:
    service = DeviceAgentService(AgentSettings(store=tmp_path / "store", backend="onnxruntime"))
    assert service.engines is None
    with pytest.raises(Unimplemented) as err:
        service._engines()
    return str(err.value)


def test_a_missing_agent_module_asks_to_upgrade_the_agent(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "device_agent.engine_service", None)  # as an agent installed without it
    message = refusal(tmp_path)
    assert "upgrade the agent" in message and "device_agent.engine_service" in message


def test_a_missing_library_is_named_and_not_blamed_on_the_agents_version(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "device_agent.engine_service", raising=False)  # imported again, numpy gone
    monkeypatch.setitem(sys.modules, "numpy", None)
    message = refusal(tmp_path)
    assert "module numpy is missing on this device" in message and "install it" in message
    assert "upgrade" not in message
