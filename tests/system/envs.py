"""Agent environments that genuinely differ: their own virtualenvs with their own onnxruntime.

Each is made once with `uv` from PyPI and kept under ~/.cache/deploy-test-envs (or $DEPLOY_TEST_ENVS),
keyed by Python, onnxruntime, grpcio and protobuf versions, so later runs start at once. Agents in one run
this checkout through PYTHONPATH: the code is the same, the libraries are not. Used by the system tests and
by scripts/bench/fleet.py.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from filelock import FileLock


class EnvError(RuntimeError):
    """An environment could not be built (no uv, no network to PyPI, a version that does not install)."""


#: onnxruntime versions of the extra environments; the main venv's own version is the third class.
EXTRA_ORT_VERSIONS = ("1.20.1", "1.18.1")
_PINNED = ("grpcio", "grpcio-health-checking", "grpcio-reflection", "protobuf")


def env_root() -> Path:
    # not XDG_CACHE_HOME: the session fixture in tests/conftest.py points that at a temporary directory
    return Path(os.environ.get("DEPLOY_TEST_ENVS") or Path.home() / ".cache" / "deploy-test-envs")


def _uv() -> str:
    for candidate in (Path(sys.executable).parent / "uv", shutil.which("uv")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise EnvError("uv is needed to build the agents' test environments: pip install uv (scripts/setup.sh does)")


def _ort_requirement(version: str) -> list[str]:
    major, minor = (int(p) for p in version.split(".")[:2])
    numpy = "numpy<2" if (major, minor) < (1, 19) else "numpy"  # onnxruntime < 1.19 was built against numpy 1
    return [f"onnxruntime=={version}", numpy]


def agent_env(ort_version: str) -> str:
    """The interpreter of a virtualenv with onnxruntime `ort_version` and the agent's other dependencies."""
    pins = [f"{name}=={metadata.version(name)}" for name in _PINNED]
    key = (f"py{sys.version_info.major}{sys.version_info.minor}-ort{ort_version}-"
           f"grpc{metadata.version('grpcio')}-pb{metadata.version('protobuf')}")
    root = env_root()
    root.mkdir(parents=True, exist_ok=True)
    path = root / key
    python = path / "bin" / "python"
    with FileLock(str(root / f"{key}.lock")):
        if (path / "ready").is_file() and python.exists():
            return str(python)
        shutil.rmtree(path, ignore_errors=True)
        uv = _uv()
        steps = [[uv, "venv", "-q", "--python", sys.executable, str(path)],
                 [uv, "pip", "install", "-q", "--python", str(python), *pins, *_ort_requirement(ort_version)]]
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                raise EnvError(f"building test environment {key} failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
        got = subprocess.run([str(python), "-c", "import onnxruntime; print(onnxruntime.__version__)"],
                             capture_output=True, text=True, timeout=120).stdout.strip()
        if got != ort_version:
            raise EnvError(f"test environment {key} has onnxruntime {got!r}, expected {ort_version}")
        (path / "ready").write_text(ort_version + "\n")
    return str(python)


@dataclass(frozen=True)
class AgentEnv:
    """One kind of agent environment: its interpreter and the onnxruntime version it really has."""

    python: str
    ort_version: str


def agent_envs() -> list[AgentEnv]:
    """Three genuinely different agent environments: the main venv and two older onnxruntime releases."""
    envs = [AgentEnv(sys.executable, metadata.version("onnxruntime"))]
    envs += [AgentEnv(agent_env(v), v) for v in EXTRA_ORT_VERSIONS]
    return envs
