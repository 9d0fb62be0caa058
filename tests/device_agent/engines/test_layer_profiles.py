"""Per-layer profiles of the engine backends: trtexec's exported profile, the ONNX node reader, onnxruntime's
profiler on a session of its own, and the naming of fused kernels by their ONNX nodes."""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import onnx
import pytest

from device_agent.engines.base import BuildSpec
from device_agent.engines.layers import OnnxNode, map_kernels, onnx_nodes
from device_agent.engines.onnxruntime import OnnxRuntimeBackend
from device_agent.engines.trtexec import parse_profile
from device_agent.errors import BuildFailed
from tests.device_agent.onnx_models import conv_net

# trtexec --dumpProfile --separateProfileRun --exportProfile=FILE writes this layout (TensorRT 8.6 / 10.x)
EXPORTED = """[
  { "count" : 50 }
, { "name" : "conv1 + relu1", "timeMs" : 41.5, "averageMs" : 0.83, "medianMs" : 0.82, "percentage" : 61.03 }
, { "name" : "Reformatting CopyNode for Input Tensor 0 to fc", "timeMs" : 2.5, "averageMs" : 0.05, "medianMs" : 0.05, "percentage" : 3.68 }
, { "name" : "gap", "timeMs" : 24.0, "averageMs" : 0.48, "medianMs" : 0.47, "percentage" : 35.29 }
]
"""


def test_trtexec_exported_profile_parses_into_rows_per_run(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text(EXPORTED)
    rows, runs = parse_profile(json.loads(path.read_text()), "trt_0")
    assert runs == 50
    assert [(r.name, r.mean_ms, r.calls, r.segment) for r in rows] == [
        ("conv1 + relu1", 0.83, 50, "trt_0"),
        ("Reformatting CopyNode for Input Tensor 0 to fc", 0.05, 50, "trt_0"),
        ("gap", 0.48, 50, "trt_0")]
    with pytest.raises(BuildFailed, match="count"):
        parse_profile([{"name": "x", "averageMs": 1.0}])
    with pytest.raises(BuildFailed, match="averageMs"):
        parse_profile([{"count": 1}, {"name": "x", "timeMs": 1.0}])


def test_onnx_node_reader_agrees_with_the_onnx_package():
    data = conv_net()
    want = [(n.name, n.op_type, tuple(n.input), tuple(n.output)) for n in onnx.load_from_string(data).graph.node]
    got = [(n.name, n.op_type, n.inputs, n.outputs) for n in onnx_nodes(data)]
    assert got == want and len(got) >= 3


def test_fused_kernels_own_their_nodes_and_nodes_outside_the_kernels_stay_out():
    src = [OnnxNode("conv", "Conv", ("x", "w"), ("c",)), OnnxNode("bn", "BatchNormalization", ("c",), ("b",)),
           OnnxNode("add", "Add", ("b", "skip"), ("a",)), OnnxNode("relu", "Relu", ("a",), ("r",)),
           OnnxNode("after", "Relu", ("r",), ("y",))]
    # one kernel does conv+bn+add+relu, named by bn's output (onnxruntime's NCHWc naming); "after" runs elsewhere
    kernels = [OnnxNode("b_nchwc", "Conv", ("x", "w", "skip"), ("tok",)), OnnxNode("out", "ReorderOutput",
                                                                                    ("tok",), ("r",))]
    got = {k: [n.name for n in v] for k, v in map_kernels(src, kernels).items()}
    assert got == {"b_nchwc": ["conv", "bn", "add"], "out": ["relu"]}


def test_onnxruntime_profile_names_every_node_on_a_session_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the profiler's files go here, to be checked
    data = conv_net()
    backend = OnnxRuntimeBackend()
    engine = backend.load(backend.build(data, BuildSpec()).plan, BuildSpec())
    feeds = {engine.inputs[0].name: np.random.default_rng(0).standard_normal(
        [d or 1 for d in engine.inputs[0].shape]).astype(np.float32)}
    prof = engine.profile_layers(feeds, 5, "trt_0", data)
    listed = {part for r in prof.rows for part in r.name.split(" + ")}
    assert {n.name for n in onnx_nodes(data)} <= listed
    assert prof.runs == 5 and all(r.calls in (0, 5) and r.segment == "trt_0" for r in prof.rows)
    assert abs(sum(r.share for r in prof.rows) - 1) < 1e-9 and 0 < sum(r.mean_ms for r in prof.rows) <= prof.wall_ms
    assert not engine.session.get_session_options().enable_profiling, "the timed session is never profiled"
    assert not os.listdir(tmp_path), "the profile file and the saved graph are deleted"
