"""Fixtures of the compiler tests: real models built once per session, a small graph builder."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def real_models(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """ResNet-18/50, MobileNetV2, a transformer encoder block, from scripts/make_models.py."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import make_models
    finally:
        sys.path.pop(0)
    return make_models.write_models(tmp_path_factory.mktemp("models"))


def tiny_model(nodes: List[onnx.NodeProto], inputs: Sequence[tuple], outputs: Sequence[tuple],
               inits: Optional[Dict[str, np.ndarray]] = None, opset: int = 13) -> onnx.ModelProto:
    """inputs/outputs: (name, shape) float32 tensors."""
    g = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        initializer=[numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny():
    """Build a small float32 ONNX model: tiny(nodes, inputs, outputs, inits=None, opset=13)."""
    return tiny_model


@pytest.fixture
def save_model(tmp_path: Path):
    """Write a model under tmp_path: save_model(model, "name.onnx") -> path."""
    return lambda model, name="model.onnx": save(model, tmp_path / name)
