"""Real architectures compile; ResNet-50 is one TensorRT segment; bundles reproduce onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

from device_agent.bundle import Bundle
from device_agent.bundle_runtime import onnxruntime_runners, run_bundle
from host.compiler.api import compile_model


def _max_rel_err(bundle: Bundle) -> float:
    ins, want = bundle.read_reference()
    got = run_bundle(bundle, onnxruntime_runners(bundle), ins)
    return max(float(np.abs(got[k] - want[k]).max() / max(np.abs(want[k]).max(), 1e-12)) for k in want)


@pytest.mark.parametrize("profile, trt", [("x86-cpu", None), ("jetson-nano", None), ("x86-cpu", "7.0.0")])
def test_resnet50_for_trt_7_and_newer_is_exactly_one_segment_without_remainder(real_models, tmp_path, profile, trt):
    r = compile_model(real_models["resnet50"], tmp_path / "out", profile=profile, trt_version=trt)
    m = r.manifest
    assert [s.id for s in m.segments] == ["trt_0"]
    assert m.remainder is None and m.not_offloaded == []
    assert not (r.bundle_dir / "remainder").exists()
    import onnx

    graph = onnx.load(str(real_models["resnet50"]), load_external_data=False).graph
    prep = m.options["prepare"]  # folding fused every BatchNormalization into its Conv, nothing else changed
    assert prep["nodes_before"] == len(graph.node) and prep["ops_removed"] == {"BatchNormalization": 53}
    assert len(m.segments[0].ops) == prep["nodes_after"]  # every node of the prepared graph, none left out
    assert sorted(set(m.segments[0].ops)) == sorted({n.op_type for n in graph.node} - {"BatchNormalization"})
    assert _max_rel_err(Bundle.open(r.bundle_dir)) < 1e-4


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2", "transformer"])
def test_real_architecture_compiles_fully_offloaded_and_matches_onnxruntime(real_models, tmp_path, name):
    r = compile_model(real_models[name], tmp_path / "out", profile="jetson-orin")
    assert len(r.manifest.segments) == 1 and r.manifest.remainder is None
    assert _max_rel_err(Bundle.open(r.bundle_dir)) < 1e-4


def test_transformer_below_trt_7_keeps_erf_in_tvm_and_still_matches(real_models, tmp_path):
    r = compile_model(real_models["transformer"], tmp_path / "out", profile="x86-cpu", trt_version="6.0.1")
    m = r.manifest
    assert [(p["id"], p["kind"]) for p in r.parts] == [("trt_0", "tensorrt"), ("tvm_0", "tvm"), ("trt_1", "tensorrt")]
    assert [(e["op"], e["reason"]) for e in m.not_offloaded] == [("Erf", "erf needs TensorRT >= 7.0.0, target is 6.0.1")]
    assert m.remainder is not None and (r.bundle_dir / m.remainder.path).is_file()
    assert all(s.opset == 10 for s in m.segments)  # TensorRT 6's parser reads opset <= 10
    assert _max_rel_err(Bundle.open(r.bundle_dir)) < 1e-4


def test_mobilenetv2_below_clip_version_splits_around_every_relu6(real_models, tmp_path):
    r = compile_model(real_models["mobilenetv2"], tmp_path / "out", profile="x86-cpu", trt_version="5.1.0")
    clips = [e for e in r.manifest.not_offloaded if e["op"] == "Clip"]
    assert len(clips) == 35 and all(e["reason"] == "clip needs TensorRT >= 5.1.5, target is 5.1.0" for e in clips)
    assert len(r.manifest.segments) > 30
    assert _max_rel_err(Bundle.open(r.bundle_dir)) < 1e-4


@pytest.mark.parametrize("profile", ["x86-cpu", "jetson-xavier-nx"])
def test_same_model_and_options_give_the_same_digest(real_models, tmp_path, profile):
    import shutil

    if profile.startswith("jetson") and shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("needs g++-aarch64-linux-gnu (CI installs it)")
    a = compile_model(real_models["transformer"], tmp_path / "a", profile=profile, trt_version="6.0.1")
    b = compile_model(real_models["transformer"], tmp_path / "b", profile=profile, trt_version="6.0.1")
    assert a.manifest.remainder is not None
    assert a.digest == b.digest
    assert (tmp_path / "a" / "bundle.tar").read_bytes() == (tmp_path / "b" / "bundle.tar").read_bytes()


def test_resnet18_with_residual_adds_kept_in_tvm_matches(real_models, tmp_path):
    r = compile_model(real_models["resnet18"], tmp_path / "out", profile="x86-cpu", exclude_ops=("Add",))
    m = r.manifest
    assert [e["op"] for e in m.not_offloaded] == ["Add"] * 8
    assert len(m.segments) == 9 and m.remainder is not None
    assert _max_rel_err(Bundle.open(r.bundle_dir)) < 1e-4
