"""System-test fixtures: agent interpreters that genuinely differ (see envs.py)."""
from __future__ import annotations

import pytest

from tests.system import envs


@pytest.fixture(scope="session")
def agent_envs() -> list[envs.AgentEnv]:
    """The main venv and two virtualenvs with older onnxruntime releases, built once and cached."""
    try:
        return envs.agent_envs()
    except envs.EnvError as exc:
        pytest.fail(str(exc))
