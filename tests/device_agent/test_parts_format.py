"""The bundle as parts, without agents: the manifest's `files` (schema 2) and weights kept by tensor beside a graph.

`host/compiler/weights.py` writes a segment as a graph plus one file per large tensor named by its sha256;
`device_agent/onnx_weights.py` puts them back inline (checking each against its name) for the backends."""
from __future__ import annotations

import json

import numpy as np
import pytest

from device_agent.bundle import Bundle
from device_agent.errors import DataLoss, InvalidInput
from device_agent.fileio import sha256_file
from device_agent.manifest import Manifest, write_manifest
from device_agent.onnx_weights import inline_weights
from device_agent.parts import file_entries
from tests.device_agent.test_bundle import _make_bundle


def test_a_manifest_with_files_pins_every_file_and_its_digest_is_the_bundle_identity(tmp_path):
    root = tmp_path / "b"
    m = _make_bundle(root)
    m.file_list = file_entries(root)
    write_manifest(root, m)
    bundle = Bundle.open(root)
    assert [e.path for e in bundle.manifest.file_list] == sorted(e.path for e in m.file_list)
    assert all(e.size == (root / e.path).stat().st_size for e in bundle.manifest.file_list)
    bundle.verify()
    first = bundle.manifest_digest
    np.save(root / "reference" / "outputs" / "0.npy", np.ones((1, 3, 4, 4), np.float32))  # other reference data
    m.reference["outputs"][0]["digest"] = sha256_file(root / "reference" / "outputs" / "0.npy")
    m.file_list = file_entries(root)
    write_manifest(root, m)
    assert Bundle.open(root).manifest_digest != first


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["files"].reverse(), "paths must be unique and sorted"),
    (lambda d: d["files"][-1].update(digest="sha256:" + "0" * 64), "is not listed with that digest"),
    (lambda d: d["files"].pop(), "is not listed with that digest"),
    (lambda d: d["files"][0].update(size=-1), "outside"),
    (lambda d: d.update(schema_version=1), "needs schema_version 2"),
])
def test_a_files_list_that_does_not_pin_the_bundle_is_refused(tmp_path, mutate, message):
    root = tmp_path / "b"
    m = _make_bundle(root)
    m.file_list = file_entries(root)
    d = json.loads(m.to_json())
    mutate(d)
    with pytest.raises(InvalidInput, match=message):
        Manifest.from_json(json.dumps(d))


def _model():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32), "w")  # 32 KiB: its own file
    b = numpy_helper.from_array(rng.standard_normal(128).astype(np.float32), "b")  # 512 B: stays inline
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


def test_weights_by_tensor_are_named_by_content_and_come_back_inline_checked(tmp_path):
    import onnx
    import onnxruntime as ort

    from host.compiler.weights import write_segment

    model = _model()
    path = tmp_path / "segments" / "trt_0.onnx"
    path.parent.mkdir()
    [weight] = write_segment(model, path)
    assert weight.parent.name == "weights" and path.stat().st_size < 2048  # the graph without its 32 KiB tensor
    again = tmp_path / "again" / "trt_0.onnx"
    again.parent.mkdir()
    assert [p.name for p in write_segment(model, again)] == [weight.name]  # same tensor, same file name
    inline = inline_weights(path.read_bytes(), path.parent)
    x = {"x": np.ones((1, 64), np.float32)}
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    got = ort.InferenceSession(inline, providers=["CPUExecutionProvider"]).run(None, x)[0]
    np.testing.assert_array_equal(got, want)
    assert onnx.load_from_string(inline).graph.initializer[0].raw_data == model.graph.initializer[0].raw_data
    data = bytearray(weight.read_bytes())
    data[100] ^= 0xFF
    weight.write_bytes(bytes(data))
    with pytest.raises(DataLoss, match="changed on this device's disk"):
        inline_weights(path.read_bytes(), path.parent)
