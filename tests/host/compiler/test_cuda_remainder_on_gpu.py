"""A CUDA remainder (cubin embedded on the host) loads and runs on a real GPU; skipped without one.

Runs on a machine with an NVIDIA GPU and the TVM CUDA runtime (not on the CPU-only CI machine).
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from device_agent.bundle import Bundle
from device_agent.bundle_runtime import onnxruntime_runners, run_bundle
from host.compiler.api import compile_model


def _gpu_sm():
    try:
        import tvm

        dev = tvm.cuda(0)
        if not dev.exist:
            return None
        return dev.compute_version  # "9.0"
    except Exception:  # noqa: BLE001 - no CUDA runtime in this TVM build or no driver
        return None


@pytest.mark.skipif(_gpu_sm() is None, reason="needs an NVIDIA GPU and TVM's CUDA runtime")
def test_cuda_remainder_compiled_for_this_gpu_runs_on_it_and_matches(tiny, save_model, tmp_path):
    cc = _gpu_sm()
    m = tiny([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Erf", ["a"], ["b"]),
              helper.make_node("Sigmoid", ["b"], ["y"])], [("x", [4, 32])], [("y", [4, 32])])
    r = compile_model(save_model(m), tmp_path / "out", profile="generic-cuda", trt_version="6.0.1",
                      compute_capability=cc)
    assert r.manifest.target.compute_capability == cc
    b = Bundle.open(r.bundle_dir)
    ins, want = b.read_reference()
    got = run_bundle(b, onnxruntime_runners(b), ins, device="cuda")
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-4, atol=1e-5)
