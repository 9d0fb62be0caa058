"""An emulated Jetson: the device agent as a real aarch64 process on an x86 host, under qemu user-mode emulation.

`sysroot.prepare()` makes, once, an aarch64 Debian 12 userland with Python 3.11 (arm64 .debs unpacked with
`dpkg -x`, installed nowhere) and a directory of aarch64 wheels (grpcio, protobuf, numpy, onnxruntime, TVM),
cached in the user cache dir. `runner` builds the command line and environment that run `python -m device_agent`
there. No binfmt_misc, no root: qemu-aarch64-static is called directly. No GPU, no TensorRT: see docs/hardware.md.
"""
from __future__ import annotations

from .runner import agent_command, agent_environment, cpu_for
from .sysroot import Emulation, EmulationError, prepare

__all__ = ["Emulation", "EmulationError", "prepare", "agent_command", "agent_environment", "cpu_for"]
