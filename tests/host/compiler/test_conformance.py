"""Op-table conformance over the ONNX backend node test cases (onnx.backend.test.case.node).

Per op of the table: offloaded at 8.2 / 8.5 / 10.3 where the table says so and refused just below
its minimum version; the emitted segment run in onnxruntime gives the expected outputs; the same
model with the op kept in TVM gives them too, except the TVM 0.27 frontend limits listed here.
"""
from __future__ import annotations

import functools
from typing import Dict, List

import pytest

from host.compiler.conformance import VERSIONS, CaseResult, check_case, load_cases, tvm_sample
from host.compiler.patterns import OP_TABLE
from host.compiler.profiles import parse_version

TVM_PER_OP = 3  # cases per op also compiled by TVM (all of them: python -m host.compiler.conformance)

# Cases TVM 0.27's ONNX frontend imports wrongly or refuses, seen here; kept exact so a fix shows up.
KNOWN_TVM_FAILURES: Dict[str, str] = {
    **{n: "LayerNormalization: the frontend returns scalars for the Mean/InvStdDev outputs" for n in [
        "test_layer_normalization_4d_axis0", "test_layer_normalization_4d_axis_negative_4",
        "test_layer_normalization_4d_axis1", "test_layer_normalization_4d_axis_negative_3",
        "test_layer_normalization_4d_axis2", "test_layer_normalization_4d_axis_negative_2",
        "test_layer_normalization_4d_axis3", "test_layer_normalization_4d_axis_negative_1",
        "test_layer_normalization_default_axis", "test_layer_normalization_2d_axis0",
        "test_layer_normalization_2d_axis_negative_2", "test_layer_normalization_2d_axis1",
        "test_layer_normalization_2d_axis_negative_1", "test_layer_normalization_3d_axis0_epsilon",
        "test_layer_normalization_3d_axis_negative_3_epsilon", "test_layer_normalization_3d_axis1_epsilon",
        "test_layer_normalization_3d_axis_negative_2_epsilon", "test_layer_normalization_3d_axis2_epsilon",
        "test_layer_normalization_3d_axis_negative_1_epsilon"]},
    "test_batchnorm_example_training_mode": "BatchNormalization training mode not imported",
    "test_batchnorm_epsilon_training_mode": "BatchNormalization training mode not imported",
    "test_convtranspose_output_shape": "ConvTranspose output_shape attribute ignored",
    "test_maxpool_with_argmax_2d_precomputed_pads": "MaxPool indices output not imported",
    "test_maxpool_with_argmax_2d_precomputed_strides": "MaxPool indices output not imported",
    **{f"test_pow_types_{t}": "Pow with mixed or integer types refused" for t in [
        "float32_int64", "int64_float32", "float32_int32", "int32_float32", "float32_uint64", "float32_uint32",
        "int64_int64", "int32_int32"]},
    "test_reduce_max_bool_inputs": "ReduceMax on bool refused",
    "test_reduce_min_bool_inputs": "ReduceMin on bool refused",
    **{f"test_resize_{t}": "Resize variant imported wrongly or refused" for t in [
        "downsample_scales_linear", "downsample_scales_linear_align_corners", "downsample_scales_cubic",
        "downsample_scales_cubic_align_corners", "downsample_scales_cubic_A_n0p5_exclude_outside",
        "downsample_scales_linear_antialias", "downsample_sizes_linear_antialias",
        "downsample_scales_cubic_antialias", "downsample_sizes_cubic_antialias", "upsample_scales_nearest_axes_2_3",
        "upsample_scales_nearest_axes_3_2", "upsample_sizes_nearest_axes_2_3", "upsample_sizes_nearest_axes_3_2",
        "tf_crop_and_resize_axes_2_3", "tf_crop_and_resize_axes_3_2", "upsample_sizes_nearest_not_larger",
        "upsample_sizes_nearest_not_smaller", "downsample_sizes_nearest_not_larger",
        "downsample_sizes_nearest_not_smaller", "downsample_scales_linear_half_pixel_symmetric",
        "upsample_scales_linear_half_pixel_symmetric"]},
}
# onnxruntime itself (on the unmodified model) misses ONNX's expected output here
KNOWN_ORT_DIFFERS = {"test_resize_downsample_scales_linear_align_corners"}


# ops whose every ONNX case uses an attribute this TensorRT version lacks (the reason is recorded per case)
ATTRIBUTE_GATED = {("Pad", "8.2.1")}  # the single-node cases pad with edge/reflect/wrap: TensorRT >= 8.5


@functools.lru_cache(maxsize=1)
def _results() -> Dict[str, List[CaseResult]]:
    cases = load_cases()
    sample = tvm_sample(cases, TVM_PER_OP) | (set(KNOWN_TVM_FAILURES) & {c.name for c in cases})
    out: Dict[str, List[CaseResult]] = {}
    for c in cases:
        out.setdefault(c.op, []).append(check_case(c, run_tvm=c.name in sample))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("op", sorted(OP_TABLE))
def test_op_conformance(op):
    results = [r for r in _results().get(op, []) if not r.skipped]
    assert results, f"no usable ONNX node test case for {op}"
    rule = OP_TABLE[op]
    for r in results:
        assert r.trt_pass is not False, f"{r.name}: emitted segment differs: {r.detail}"
        assert r.ort_differs == (r.name in KNOWN_ORT_DIFFERS), r.name
        assert r.gate_ok is not False, f"{r.name}: offloaded below TensorRT {rule.min_trt}"
        if r.tvm_pass is not None:
            known = r.name in KNOWN_TVM_FAILURES
            assert r.tvm_pass != known, (f"{r.name}: TVM result {'now passes; drop it from KNOWN_TVM_FAILURES' if known else 'differs: ' + r.detail}")
        # a newer TensorRT never offloads less
        flags = [r.offloaded.get(v, False) for v in VERSIONS]
        assert flags == sorted(flags), f"{r.name}: offloaded at {dict(zip(VERSIONS, flags))}"
        for v in VERSIONS:
            if parse_version(v) < rule.min_trt:
                assert not r.offloaded[v] and "needs TensorRT >=" in r.reasons[v], (r.name, v, r.reasons.get(v))
    # the table offloads the op in practice at every version from its minimum on
    for v in VERSIONS:
        if (op, v) in ATTRIBUTE_GATED:
            assert not any(r.offloaded.get(v) for r in results)
        elif parse_version(v) >= rule.min_trt and op != "LayerNormalization":
            assert any(r.offloaded.get(v) for r in results), f"{op}: no case offloaded at {v}: " \
                f"{sorted({r.reasons.get(v, '') for r in results})[:3]}"
    if op == "LayerNormalization":  # every ONNX case asks for the Mean/InvStdDev outputs TensorRT lacks
        assert all("more than one output" in r.reasons["10.3.0"] for r in results)
