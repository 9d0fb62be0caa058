"""Bundles for another TensorRT or another GPU are refused with FAILED_PRECONDITION naming both sides."""
from __future__ import annotations

import grpc
import pytest

from device_agent.compat import check_target_facts
from device_agent.errors import PreconditionFailed
from device_agent.manifest import Target


def target(profile="jetson-orin", trt="10.3.0", cc="8.7", device="cuda"):
    return Target(profile=profile, trt_version=trt, compute_capability=cc, device=device, arch="aarch64")


def test_other_tensorrt_version_is_refused_naming_both():
    with pytest.raises(PreconditionFailed) as err:
        check_target_facts(target(trt="8.5.2", cc="7.2", profile="jetson-xavier-nx"), False, "tensorrt",
                           "tensorrt", "10.3.0", "7.2")
    assert "TensorRT 8.5.2" in str(err.value) and "tensorrt 10.3.0" in str(err.value)
    with pytest.raises(PreconditionFailed, match=r"TensorRT 8.2.1 .* trtexec 8.5.2"):
        check_target_facts(target(trt="8.2.1", cc="5.3", profile="jetson-nano"), False, "trtexec", "trtexec",
                           "8.5.2", "5.3")


def test_same_major_minor_tensorrt_is_accepted_and_onnxruntime_ignores_the_version():
    check_target_facts(target(trt="10.3.0"), False, "tensorrt", "tensorrt", "10.3.1", "8.7")
    check_target_facts(target(trt="8.2.1", cc="5.3"), False, "onnxruntime", "", "1.32.0", None)


def test_tensorrt_rtx_takes_bundles_of_the_tensorrt_10_line():
    check_target_facts(target(profile="generic-cuda", cc="8.0"), False, "tensorrt", "tensorrt_rtx",
                       "1.7.1.116", "9.0")
    with pytest.raises(PreconditionFailed, match=r"TensorRT 8.5.2 .*tensorrt_rtx 1.7.1.116"):
        check_target_facts(target(trt="8.5.2", profile="generic-cuda", cc="8.0"), False, "tensorrt",
                           "tensorrt_rtx", "1.7.1.116", "9.0")


def test_other_compute_capability_is_refused_naming_both():
    with pytest.raises(PreconditionFailed) as err:
        check_target_facts(target(cc="8.7"), False, "tensorrt", "tensorrt", "10.3.0", "7.2")
    assert "compute capability 8.7" in str(err.value) and "compute capability 7.2" in str(err.value)


def test_generic_cuda_remainder_follows_cubin_compatibility():
    t = target(profile="generic-cuda", cc="8.0")
    check_target_facts(t, True, "onnxruntime", "", "1.32.0", "8.6")  # same major, higher minor: loads
    with pytest.raises(PreconditionFailed, match=r"compute capability 8.0 .* compute capability 9.0"):
        check_target_facts(t, True, "onnxruntime", "", "1.32.0", "9.0")
    check_target_facts(t, False, "tensorrt", "tensorrt", "10.3.0", "9.0")  # segments only: built for this GPU
    # compiled for the GPU the agent reports (push asks it; deploy compile --compute-capability 9.0): accepted
    check_target_facts(target(profile="generic-cuda", cc="9.0"), True, "onnxruntime-cuda", "", "1.31.1", "9.0")


def test_cuda_remainder_on_an_agent_without_gpu_is_refused_over_grpc(agent, tmp_path):
    import sys
    from pathlib import Path

    from host.client.agent import AgentClient
    from host.client.errors import AgentError
    from host.compiler.api import CompileOptions, compile_model
    from host.inventory import Device
    from protos import agent_pb2

    repo = Path(__file__).resolve().parents[3]
    sys.path.insert(0, str(repo / "scripts"))
    try:
        import make_models
    finally:
        sys.path.pop(0)
    import onnx

    model = tmp_path / "transformer.onnx"
    onnx.save(make_models.transformer_encoder(), str(model))
    result = compile_model(model, tmp_path / "out", CompileOptions(profile="generic-cuda", exclude_ops=["Softmax"]))
    assert result.manifest.remainder is not None and result.manifest.target.device == "cuda"
    with AgentClient(Device(name="t", address=agent.address)) as client:
        if any(g for g in client.info().gpus):
            pytest.skip("this machine has a GPU")
        digest = client.upload(result.archive).digest
        with pytest.raises(AgentError) as err:
            client.run(agent_pb2.RunRequest(bundle_digest=digest, verify=True))
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "no GPU" in err.value.message and "x86-cpu" in err.value.message
        assert client.info().agent_version  # still serving
