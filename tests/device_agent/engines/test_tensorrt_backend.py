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


def _qdq_conv_net() -> bytes:
    """x -> Q/DQ (per-tensor) -> Conv with weights behind Q/DQ (per-channel, axis 0): explicit INT8, opset 13."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.float32(0.05), "xs"), numpy_helper.from_array(np.int8(0), "xz"),
             numpy_helper.from_array((np.abs(w).reshape(8, -1).max(1) / 127).astype(np.float32), "ws"),
             numpy_helper.from_array(np.zeros(8, np.int8), "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="qx"),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dqx"),
             helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], name="qw", axis=0),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="dqw", axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m.SerializeToString()


@pytest.mark.skipif(not _has_trt(), reason="needs TensorRT (not run in this workplace: docs/int8.md)")
def test_builds_an_int8_plan_from_a_qdq_segment_where_tensorrt_is_installed():
    out = TensorRTBackend().build(_qdq_conv_net(), BuildSpec(int8=True, calibration="sha256:" + "0" * 64))
    assert len(out.plan) > 1000 and out.parse_s > 0
