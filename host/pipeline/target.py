"""What to compile for: the TensorRT version, compute capability and profile of the device, as its agent reports.

The agent's own report wins over the inventory, which wins over a guess from the hardware; a device without
TensorRT still gets a bundle partitioned with the TensorRT table of its profile, built there by onnxruntime.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

from device_agent.errors import InvalidInput
from host.inventory import Device
from protos import agent_pb2

TRT_BACKENDS = ("tensorrt", "trtexec")


@dataclass(frozen=True)
class TargetChoice:
    """The compile target of one device and the segment backend that will build it there."""

    profile: str
    trt_version: str
    compute_capability: Optional[str]
    backend: str  # "auto" (the agent's TensorRT), else "onnxruntime-cuda" or "onnxruntime" (no TensorRT there)
    why: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _guess_profile(info: agent_pb2.DeviceInfo) -> tuple[str, str]:
    model = (info.jetson_model if info.HasField("jetson_model") else "").lower()
    if "nano" in model and "orin" not in model:
        return "jetson-nano", f"the device reports {info.jetson_model!r}"
    if "xavier" in model:
        return "jetson-xavier-nx", f"the device reports {info.jetson_model!r}"
    if "orin" in model:
        return "jetson-orin", f"the device reports {info.jetson_model!r}"
    if info.gpus:
        return "generic-cuda", f"the device has a GPU ({info.gpus[0].name}) and no Jetson model"
    return "x86-cpu", "the device reports no GPU"


def _trt_available(info: agent_pb2.DeviceInfo) -> Optional[str]:
    """The device's TensorRT version when a TensorRT-family backend is available there, else None."""
    for backend in info.backends:
        if backend.name in TRT_BACKENDS and backend.available:
            reported = info.trt_version if info.HasField("trt_version") else ""
            return reported or backend.version or None
    return None


def _ort_cuda(info: agent_pb2.DeviceInfo) -> bool:
    return any(b.name == "onnxruntime-cuda" and b.available for b in info.backends)


def choose_target(info: agent_pb2.DeviceInfo, device: Device, profile: Optional[str] = None,
                  trt_version: Optional[str] = None, backend: Optional[str] = None) -> TargetChoice:
    """Decide the target from the live GetInfo reply, the inventory entry and the user's overrides."""
    from host.compiler.profiles import PROFILES, format_version, parse_version

    reasons = []
    if profile:
        name, why = profile, "--profile"
    elif info.profile:
        name, why = info.profile, "the agent's --profile"
    elif device.profile:
        name, why = device.profile, "the inventory entry"
    else:
        name, why = _guess_profile(info)
    if name not in PROFILES:
        raise InvalidInput(f"unknown profile {name!r} (from {why}); choose one of: {', '.join(PROFILES)}")
    reasons.append(f"profile {name} ({why})")
    base = PROFILES[name]

    device_trt = _trt_available(info)
    if trt_version:
        version, vwhy = trt_version, "--trt-version"
    elif device_trt:
        version, vwhy = device_trt, "the device's TensorRT"
    else:
        version, vwhy = base.trt_version, f"profile {name}; the device has no TensorRT"
    if vwhy == "the device's TensorRT" and info.HasField("trt_module") and info.trt_module == "tensorrt_rtx":
        from device_agent.compat import RTX_PARTITION_MAJOR

        rtx = version
        version = base.trt_version if base.trt_version.split(".")[0] == RTX_PARTITION_MAJOR else f"{RTX_PARTITION_MAJOR}.0"
        vwhy = f"TensorRT-RTX {rtx} reads the TensorRT {RTX_PARTITION_MAJOR} ONNX line"
    version = format_version(parse_version(version))
    reasons.append(f"TensorRT {version} ({vwhy})")

    cc = info.gpus[0].compute_capability if info.gpus else base.compute_capability
    chosen = (backend or "").strip().lower()
    if chosen in ("", "auto"):
        chosen = "auto" if device_trt else ("onnxruntime-cuda" if _ort_cuda(info) else "onnxruntime")
    reasons.append(f"segments built by {chosen if chosen != 'auto' else 'the device TensorRT'}")
    return TargetChoice(profile=name, trt_version=version, compute_capability=cc or None, backend=chosen,
                        why="; ".join(reasons))
