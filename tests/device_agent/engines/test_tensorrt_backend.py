"""The tensorrt backend where TensorRT is missing (this workplace's CPU machine) and, where present, for real."""
from __future__ import annotations

import pytest

from device_agent.engines.base import BuildSpec, ProfileShape
from device_agent.engines.tensorrt import TensorRTBackend, import_trt
from device_agent.errors import Unavailable
from tests.device_agent.onnx_models import conv_net


def _has_trt() -> bool:
    try:
        import_trt()
        return True
    except ImportError:
        return False


@pytest.mark.skipif(_has_trt(), reason="TensorRT is installed here")
def test_without_tensorrt_probe_says_which_modules_were_tried_and_build_is_refused():
    backend = TensorRTBackend()
    probe = backend.probe()
    assert not probe.available
    for module in ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings"):
        assert module in probe.detail
    with pytest.raises(Unavailable, match="choose another backend"):
        backend.build(conv_net(), BuildSpec())


@pytest.mark.skipif(not _has_trt(), reason="needs TensorRT or TensorRT-RTX (ran on the H100: docs/hardware.md)")
def test_builds_a_plan_with_a_profile_where_tensorrt_is_installed():
    backend = TensorRTBackend()
    spec = BuildSpec(profiles=[[ProfileShape("x", (1, 3, 16, 16), (2, 3, 16, 16), (4, 3, 16, 16))]])
    out = backend.build(conv_net(batch="N"), spec)
    assert len(out.plan) > 1000 and out.parse_s > 0
