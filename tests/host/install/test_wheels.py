"""The wheels `deploy agent install` ships: a reproducible agent wheel, and only the dependencies a device lacks."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from device_agent.errors import InvalidInput
from host.install import wheels

REPO = Path(__file__).resolve().parents[3]


def test_agent_wheel_built_twice_from_the_same_source_has_the_same_content_digest(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a snapshot, so edits to the checkout during the test do not matter
    src.mkdir()
    for part in ("pyproject.toml", "README.md", "device_agent", "protos", "host"):
        p = REPO / part
        if p.is_dir():
            shutil.copytree(p, src / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif p.exists():
            shutil.copy2(p, src / part)
    first = wheels.build_agent_wheel(tmp_path / "a", root=src)
    second = wheels.build_agent_wheel(tmp_path / "b", root=src)
    assert wheels.wheel_content_digest(first) == wheels.wheel_content_digest(second)
    requirements = wheels.wheel_requirements(first)
    assert {wheels.normalise(r.split(">")[0].split("=")[0]) for r in requirements} >= {"grpcio", "protobuf", "numpy"}
    (src / "device_agent" / "auth.py").write_text((src / "device_agent" / "auth.py").read_text() + "\n# changed\n")
    third = wheels.build_agent_wheel(tmp_path / "c", root=src)
    assert wheels.wheel_content_digest(third) != wheels.wheel_content_digest(first)


def test_only_requirements_the_device_does_not_satisfy_are_fetched() -> None:
    jetson = wheels.RemotePython((3, 8), "aarch64", (2, 31), {"numpy": "1.17.4", "protobuf": "3.6.1"})
    assert wheels.missing_requirements(["grpcio>=1.85", "numpy>=1.21", "protobuf>=3.0"], jetson) == \
        ["grpcio>=1.85", "numpy>=1.21"]


def test_wheel_directory_without_pip_or_without_wheels_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no wheels"):
        wheels.select_wheels(tmp_path, ["numpy"])
    (tmp_path / "numpy-2.0-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"")
    with pytest.raises(InvalidInput, match="no pip wheel"):
        wheels.select_wheels(tmp_path, ["numpy"])
