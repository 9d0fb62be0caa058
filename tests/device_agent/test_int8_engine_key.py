"""INT8 in the engine cache key: the precision and the calibration digest, and FP32 keys as they were."""
from __future__ import annotations

from device_agent.cache import cache_key
from device_agent.engines.base import BuildSpec
from tests.device_agent.test_cache import parts

CAL_A, CAL_B = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def _key(spec: BuildSpec) -> str:
    return cache_key(parts(**spec.key_parts()))


def test_int8_precision_names_the_fp16_fallback_when_asked():
    assert BuildSpec().precision == "fp32" and BuildSpec(fp16=True).precision == "fp16"
    assert BuildSpec(int8=True, calibration=CAL_A).precision == "int8"
    assert BuildSpec(int8=True, fp16=True, calibration=CAL_A).precision == "int8+fp16"


def test_int8_keys_differ_from_fp32_and_fp16_and_between_calibration_sets():
    keys = {_key(BuildSpec()), _key(BuildSpec(fp16=True)), _key(BuildSpec(int8=True, calibration=CAL_A)),
            _key(BuildSpec(int8=True, calibration=CAL_B)), _key(BuildSpec(int8=True, fp16=True, calibration=CAL_A))}
    assert len(keys) == 5


def test_fp32_key_parts_carry_no_calibration_so_existing_cache_entries_keep_their_keys():
    assert "calibration" not in BuildSpec().key_parts()
    assert _key(BuildSpec()) == cache_key(parts())
