"""Facts about this device from real probes; a fact that cannot be read is left out, never guessed."""
from __future__ import annotations

import ctypes
import os
import platform
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from . import __version__

if TYPE_CHECKING:
    from protos import agent_pb2

    from .config import AgentSettings


@dataclass
class Gpu:
    name: str
    compute_capability: str
    memory_bytes: int = 0


@dataclass
class DeviceFacts:
    hostname: str
    os: str
    arch: str
    cpu_count: int
    memory_total_bytes: int
    memory_available_bytes: int
    python_version: str
    agent_version: str
    jetson_model: Optional[str] = None
    l4t_release: Optional[str] = None
    cuda_version: Optional[str] = None
    gpus: list[Gpu] = field(default_factory=list)


def meminfo() -> tuple[int, int]:
    """(total, available) bytes from /proc/meminfo; zeros where it cannot be read."""
    total = available = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            kib = int(rest.split()[0]) * 1024 if rest.split() else 0
            if key == "MemTotal":
                total = kib
            elif key == "MemAvailable":
                available = kib
    except OSError:
        pass
    return total, available


def jetson_model() -> Optional[str]:
    try:
        return Path("/proc/device-tree/model").read_text().strip("\x00\n ") or None
    except OSError:
        return None


def l4t_release() -> Optional[str]:
    """`# R32 (release), REVISION: 7.1, ...` in /etc/nv_tegra_release becomes "32.7.1"."""
    try:
        text = Path("/etc/nv_tegra_release").read_text()
    except OSError:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def _cuda_driver() -> tuple[Optional[str], list[Gpu]]:
    """Ask libcuda directly (ctypes), so no CUDA Python package is needed for GetInfo."""
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return None, []
    if lib.cuInit(0) != 0:
        return None, []
    version = ctypes.c_int()
    cuda_version = None
    if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
        cuda_version = f"{version.value // 1000}.{(version.value % 1000) // 10}"
    count = ctypes.c_int()
    gpus: list[Gpu] = []
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return cuda_version, gpus
    for ordinal in range(count.value):
        dev = ctypes.c_int()
        if lib.cuDeviceGet(ctypes.byref(dev), ordinal) != 0:
            continue
        buf = ctypes.create_string_buffer(256)
        lib.cuDeviceGetName(buf, 256, dev)
        major, minor = ctypes.c_int(), ctypes.c_int()
        lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # COMPUTE_CAPABILITY_MAJOR
        lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # COMPUTE_CAPABILITY_MINOR
        mem = ctypes.c_size_t()
        total_mem = getattr(lib, "cuDeviceTotalMem_v2", None) or lib.cuDeviceTotalMem
        total_mem(ctypes.byref(mem), dev)
        gpus.append(Gpu(buf.value.decode(errors="replace"), f"{major.value}.{minor.value}", mem.value))
    return cuda_version, gpus


def probe_device() -> DeviceFacts:
    total, available = meminfo()
    cuda_version, gpus = _cuda_driver()
    return DeviceFacts(
        hostname=socket.gethostname(),
        os=f"{platform.system()} {platform.release()}",
        arch=platform.machine(),
        cpu_count=os.cpu_count() or 0,
        memory_total_bytes=total,
        memory_available_bytes=available,
        python_version=platform.python_version(),
        agent_version=__version__,
        jetson_model=jetson_model(),
        l4t_release=l4t_release(),
        cuda_version=cuda_version,
        gpus=gpus,
    )


def disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


def settings_info(settings: AgentSettings) -> agent_pb2.AgentSettingsInfo:
    """GetInfo's `settings`: the build defaults the agent runs with and where each came from (flag, variable)."""
    from protos import agent_pb2

    from .config import REPORTED_SETTINGS

    pb = agent_pb2.AgentSettingsInfo(fp16=bool(settings.fp16), cache_dir=str(settings.cache_dir),
                                     max_workspace_bytes=int(settings.max_workspace_bytes),
                                     multi_engine_mode=int(settings.multi_engine_mode))
    for name in REPORTED_SETTINGS:
        pb.sources[name] = settings.source(name)
    return pb
