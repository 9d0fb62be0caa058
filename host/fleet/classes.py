"""Device classes: devices whose engines are interchangeable, so one build serves them all.

A class is what the agent reports about the things a built plan depends on (the backend that builds
segments and its exact version, GPU name and compute capability, L4T release, CPU architecture) plus the
device profile the bundle is compiled for. These are the same facts the agent's engine cache checks when
it imports an engine (`device_agent/cache.py` DEVICE_CLASS_FIELDS), so two devices of one class accept
each other's engines and devices of different classes never do.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional

from host.inventory import Device
from protos import agent_pb2

#: Segment backends in the order an agent's `auto` picks them (device_agent/engines BACKENDS).
AUTO_ORDER = ("tensorrt", "trtexec", "onnxruntime-cuda", "onnxruntime")


@dataclass(frozen=True, order=True)
class DeviceClass:
    """The facts a built engine depends on; equal classes can share engines."""

    profile: str
    backend: str
    backend_version: str
    gpu: str
    compute_capability: str
    l4t: str
    arch: str

    @property
    def label(self) -> str:
        parts = [self.profile or "no profile",
                 f"{self.backend} {self.backend_version}" if self.backend else "no backend",
                 f"{self.gpu} sm{self.compute_capability}" if self.gpu else "no GPU"]
        if self.l4t:
            parts.append(f"L4T {self.l4t}")
        parts.append(self.arch)
        return " / ".join(parts)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def effective_backend(info: agent_pb2.DeviceInfo) -> tuple[str, str]:
    """(name, exact version) of the backend the agent builds segments with when asked for `auto`."""
    available = {b.name: b.version for b in info.backends if b.available}
    default = (info.default_backend or "auto").strip().lower()
    if default not in ("", "auto") and default in available:
        return default, available[default]
    for name in AUTO_ORDER:
        if name in available:
            return name, available[name]
    return "", ""


def profile_of(info: agent_pb2.DeviceInfo, device: Optional[Device] = None) -> str:
    """The profile the agent was started with, else the inventory's (the order `deploy push` uses)."""
    if info.profile:
        return info.profile
    return device.profile if device is not None else ""


def classify(info: agent_pb2.DeviceInfo, device: Optional[Device] = None) -> DeviceClass:
    backend, version = effective_backend(info)
    gpu = info.gpus[0] if info.gpus else None
    return DeviceClass(
        profile=profile_of(info, device),
        backend=backend,
        backend_version=version,
        gpu=gpu.name if gpu else "",
        compute_capability=gpu.compute_capability if gpu else "",
        l4t=info.l4t_release if info.HasField("l4t_release") else "",
        arch=info.arch,
    )


def group(pairs: Iterable[tuple[Any, DeviceClass]]) -> dict[DeviceClass, list[Any]]:
    """Items grouped by class, classes in a stable order (sorted), items in the order given."""
    out: dict[DeviceClass, list[Any]] = {}
    for item, cls in pairs:
        out.setdefault(cls, []).append(item)
    return {cls: out[cls] for cls in sorted(out)}
