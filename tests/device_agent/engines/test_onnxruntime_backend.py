"""The onnxruntime backend through the shared interface: build a plan, load it, run it, refuse bad input."""
from __future__ import annotations

import numpy as np
import pytest

import device_agent.engines as engines
from device_agent.engines.base import BuildFailedWithMessages, BuildSpec
from device_agent.engines.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeCudaBackend
from device_agent.errors import InvalidInput, ResourceExhausted, Unavailable
from tests.device_agent.onnx_models import max_rel_err, reference_run


def test_plan_runs_with_the_original_models_result(small_model):
    backend = OnnxRuntimeBackend()
    out = backend.build(small_model, BuildSpec())
    assert out.plan and out.plan != small_model  # the optimised model, not a copy
    engine = backend.load(out.plan, BuildSpec())
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    got = engine.run({"x": x})["y"]
    want = reference_run(small_model, {"x": x})["y"]
    assert max_rel_err(got, want) < 1e-5


def test_dynamic_batch_plan_runs_every_batch(dynamic_model):
    backend = OnnxRuntimeBackend()
    engine = backend.load(backend.build(dynamic_model, BuildSpec()).plan, BuildSpec())
    assert engine.inputs[0].shape[0] is None or isinstance(engine.inputs[0].shape[0], str)
    for batch in (1, 3):
        x = np.ones((batch, 3, 16, 16), np.float32)
        assert engine.run({"x": x})["y"].shape == (batch, 10)


@pytest.mark.parametrize("feeds, words", [
    ({"x": np.ones((1, 3, 16, 16), np.float64)}, "dtype float64"),
    ({"x": np.ones((1, 3, 8, 16), np.float32)}, "shape [1, 3, 8, 16]"),
    ({"x": np.ones((3, 16, 16), np.float32)}, "rank 4"),
    ({"input": np.ones((1, 3, 16, 16), np.float32)}, "missing ['x']"),
])
def test_bad_inputs_are_refused_with_what_was_wrong(small_model, feeds, words):
    backend = OnnxRuntimeBackend()
    engine = backend.load(backend.build(small_model, BuildSpec()).plan, BuildSpec())
    with pytest.raises(InvalidInput, match=words.replace("[", r"\[").replace("]", r"\]")):
        engine.run(feeds)


def test_feeds_the_fast_path_does_not_take_are_made_arrays_and_give_the_same_outputs(small_model):
    """A run whose feeds are C-contiguous arrays of the right dtype and shape skips the full check
    (engines/base.py); a strided view, a Fortran-ordered copy and a float32 nested list take the checked path, a
    read-only array passes as it is, and every one answers as the plain array does."""
    backend = OnnxRuntimeBackend()
    engine = backend.load(backend.build(small_model, BuildSpec()).plan, BuildSpec())
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    want = engine.run({"x": x})["y"]
    wide = np.zeros((1, 3, 16, 32), np.float32)
    wide[..., ::2] = x
    frozen = x.copy()
    frozen.flags.writeable = False
    for given in (wide[..., ::2], np.asfortranarray(x), [[[list(map(np.float32, r)) for r in c] for c in x[0]]],
                  frozen):
        assert np.array_equal(engine.run({"x": given})["y"], want)


def test_inputs_above_the_size_bound_are_refused(small_model):
    backend = OnnxRuntimeBackend()
    engine = backend.load(backend.build(small_model, BuildSpec()).plan, BuildSpec())
    engine.max_run_bytes = 1000
    with pytest.raises(ResourceExhausted, match="limit of 1000"):
        engine.run({"x": np.ones((1, 3, 16, 16), np.float32)})


def test_a_model_onnxruntime_cannot_load_fails_with_its_messages():
    with pytest.raises(BuildFailedWithMessages) as err:
        OnnxRuntimeBackend().build(b"this is not an onnx model", BuildSpec())
    assert err.value.messages


def test_auto_picks_an_available_backend_and_unknown_names_are_refused():
    chosen = engines.select("auto")
    assert chosen.probe().available
    with pytest.raises(InvalidInput, match="unknown backend 'tensorrtx'"):
        engines.select("tensorrtx")
    with pytest.raises(InvalidInput, match="remainder"):
        engines.select("tvm")


def test_unavailable_backend_is_refused_with_its_probe_detail():
    trt = engines.get("tensorrt")
    if trt.probe().available:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(Unavailable, match="not available on this device"):
        engines.select("tensorrt")


def test_onnxruntime_cuda_without_a_cuda_provider_is_unavailable_and_says_what_to_install():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    probe = OnnxRuntimeCudaBackend().probe()
    assert not probe.available and "install onnxruntime-gpu" in probe.detail
    with pytest.raises(Unavailable, match="'onnxruntime-cuda' is not available"):
        engines.select("onnxruntime-cuda")
    assert engines.select("auto").name != "onnxruntime-cuda"


def test_onnxruntime_cuda_fp16_keeps_fp32_io_and_stays_close(small_model):
    """The fp16 segment the CUDA provider builds, run here on the CPU: same I/O types, fp16 error level."""
    messages: list = []
    fp16 = OnnxRuntimeCudaBackend().prepare_model(small_model, BuildSpec(fp16=True), messages)
    assert fp16 != small_model and "fp16" in messages[0]
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    got = reference_run(fp16, {"x": x})["y"]
    want = reference_run(small_model, {"x": x})["y"]
    assert got.dtype == np.float32 and 0 < max_rel_err(got, want) < 2e-2


def test_probe_all_reports_each_backend_with_a_reason():
    results = {p.name: p for p in engines.probe_all()}
    assert set(results) == {"tensorrt", "trtexec", "onnxruntime-cuda", "onnxruntime", "tvm"}
    for p in results.values():
        assert p.available or p.detail
    import onnxruntime

    assert results["onnxruntime"].version == onnxruntime.__version__


def test_importing_the_engines_imports_no_optional_library():
    import subprocess
    import sys

    code = ("import sys, device_agent.engines, device_agent.cache, device_agent.bench;"
            "bad=[m for m in ('onnxruntime','tvm','tensorrt','tensorrt_rtx','onnx','pycuda','cuda.bindings.runtime') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_onnxruntime_cuda_plans_hold_no_cpu_only_fusions():
    """Seen on the H200: the CPU provider's extended fusions (FusedConv with HardSigmoid) do not load under the
    CUDA provider, so the onnxruntime-cuda plan keeps provider-independent folding only."""
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.random.default_rng(0).standard_normal(108).tolist())
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node("HardSigmoid", ["c"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()
    ops = lambda plan: {n.op_type for n in onnx.load_from_string(plan).graph.node}  # noqa: E731
    assert "FusedConv" in ops(OnnxRuntimeBackend().build_impl(model, BuildSpec()).plan)
    assert ops(OnnxRuntimeCudaBackend().build_impl(model, BuildSpec()).plan) == {"Conv", "HardSigmoid"}
