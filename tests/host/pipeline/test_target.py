"""The compile target chosen from a device's GetInfo reply, the inventory entry and the user's overrides."""
from __future__ import annotations

import pytest

from device_agent.errors import InvalidInput
from host.inventory import Device
from host.pipeline.target import choose_target
from protos import agent_pb2

DEV = Device(name="d", address="127.0.0.1:1")


def _info(**kw) -> agent_pb2.DeviceInfo:
    backends = kw.pop("backends", [("onnxruntime", True, "1.32.0")])
    gpus = kw.pop("gpus", [])
    info = agent_pb2.DeviceInfo(**kw)
    for name, available, version in backends:
        info.backends.add(name=name, available=available, version=version)
    for name, cc in gpus:
        info.gpus.add(name=name, compute_capability=cc)
    return info


def test_a_cpu_device_without_tensorrt_gets_the_x86_profile_table_and_onnxruntime():
    t = choose_target(_info(), DEV)
    assert (t.profile, t.trt_version, t.compute_capability, t.backend) == ("x86-cpu", "10.3.0", None, "onnxruntime")


def test_a_jetson_nano_with_trtexec_gets_its_own_tensorrt_version_and_compute_capability():
    info = _info(jetson_model="NVIDIA Jetson Nano Developer Kit", trt_version="8.2.1", trt_module="trtexec",
                 gpus=[("NVIDIA Tegra X1", "5.3")],
                 backends=[("tensorrt", False, ""), ("trtexec", True, "8.2.1"), ("onnxruntime", True, "1.16.0")])
    t = choose_target(info, DEV)
    assert (t.profile, t.trt_version, t.compute_capability, t.backend) == ("jetson-nano", "8.2.1", "5.3", "auto")


def test_an_orin_nano_is_an_orin_and_its_reported_tensorrt_wins_over_the_profile():
    info = _info(jetson_model="NVIDIA Jetson Orin Nano Developer Kit", trt_version="8.6.2", trt_module="tensorrt",
                 gpus=[("Orin", "8.7")], backends=[("tensorrt", True, "8.6.2")])
    t = choose_target(info, DEV)
    assert (t.profile, t.trt_version, t.compute_capability) == ("jetson-orin", "8.6.2", "8.7")


def test_agent_profile_beats_inventory_and_user_flags_beat_both():
    info = _info(profile="jetson-xavier-nx")
    assert choose_target(info, Device(name="d", address="h:1", profile="jetson-nano")).profile == "jetson-xavier-nx"
    assert choose_target(_info(), Device(name="d", address="h:1", profile="jetson-nano")).profile == "jetson-nano"
    t = choose_target(info, DEV, profile="jetson-orin", trt_version="10.1", backend="onnxruntime")
    assert (t.profile, t.trt_version, t.backend) == ("jetson-orin", "10.1.0", "onnxruntime")


def test_tensorrt_rtx_is_compiled_for_the_tensorrt_10_line_it_parses():
    info = _info(trt_version="1.2.0", trt_module="tensorrt_rtx", gpus=[("NVIDIA H100", "9.0")],
                 backends=[("tensorrt", True, "1.2.0")])
    t = choose_target(info, DEV)
    assert t.profile == "generic-cuda" and t.trt_version.startswith("10.") and t.compute_capability == "9.0"


def test_a_gpu_without_tensorrt_gets_generic_cuda_for_its_own_gpu_and_the_cuda_provider():
    info = _info(gpus=[("NVIDIA H200", "9.0")],
                 backends=[("tensorrt", False, ""), ("onnxruntime-cuda", True, "1.31.1"), ("onnxruntime", True, "1.31.1")])
    t = choose_target(info, DEV)
    assert (t.profile, t.compute_capability, t.backend) == ("generic-cuda", "9.0", "onnxruntime-cuda")
    no_provider = _info(gpus=[("NVIDIA H200", "9.0")], backends=[("onnxruntime-cuda", False, "1.32.0")])
    assert choose_target(no_provider, DEV).backend == "onnxruntime"


def test_an_unknown_profile_is_refused_naming_the_choices():
    with pytest.raises(InvalidInput, match="unknown profile 'tx9'.*jetson-nano"):
        choose_target(_info(), DEV, profile="tx9")
