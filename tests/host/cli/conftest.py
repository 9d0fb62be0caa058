"""Fixtures of the push/bench/run/devices CLI tests: small real ONNX models, written once per session.

The host compile cache lives in the session's isolated XDG cache dir, so each model is compiled once per run.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.host.cli.helpers import tiny_conv_net

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_conv_net(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(scope="session")
def resnet18(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("resnet")
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_models.py"), str(out), "--only", "resnet18"],
                   check=True, capture_output=True, timeout=300)
    return out / "resnet18.onnx"


@pytest.fixture(scope="session")
def transformer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("transformer")
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_models.py"), str(out), "--only", "transformer"],
                   check=True, capture_output=True, timeout=300)
    return out / "transformer.onnx"
