"""Fixtures of the engine tests."""
from __future__ import annotations

import pytest

from tests.device_agent.onnx_models import conv_net


@pytest.fixture
def small_model() -> bytes:
    return conv_net()


@pytest.fixture
def dynamic_model() -> bytes:
    return conv_net(batch="N")
