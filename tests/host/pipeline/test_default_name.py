"""`deploy push` without --name records the version under the model file's stem (issue 23)."""
from __future__ import annotations

from pathlib import Path

import pytest

from device_agent.models import check_name
from host.pipeline.version import default_name


@pytest.mark.parametrize("file, name", [
    ("detector.onnx", "detector"),
    ("det.v2.onnx", "det.v2"),            # only the last suffix goes: det.v1 and det.v2 are two models
    ("yolov8n.int8.onnx", "yolov8n.int8"),
    ("bundle.tar", "bundle"),
    ("my model (final).onnx", "my-model-final"),  # made a valid name
    ("...onnx", "model"),
])
def test_the_default_name_is_the_files_stem_made_a_valid_name(tmp_path: Path, file: str, name: str) -> None:
    path = tmp_path / file
    path.write_bytes(b"")
    assert default_name(path) == name
    assert check_name(name) == name


def test_a_bundle_directory_is_named_by_itself(tmp_path: Path) -> None:
    (tmp_path / "resnet18.out").mkdir()
    assert default_name(tmp_path / "resnet18.out") == "resnet18.out"
