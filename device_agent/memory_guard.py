"""Refuse a build that cannot fit in memory before any backend work, instead of being OOM-killed mid-build.

On a Jetson the GPU shares RAM with the CPU, so Linux's MemAvailable is the memory a TensorRT build can
use. A build needs about its workspace plus the segment's weights (≈ its ONNX size) several times over
(parser copy, builder copy, tactic scratch, the serialized plan): BUILD_MEMORY_FACTOR is that estimate.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from device_agent.errors import ResourceExhausted

#: Peak build memory ≈ workspace + FACTOR × weights; 3: the ONNX parse, the builder's copy and the plan.
BUILD_MEMORY_FACTOR = 3
MiB = 1024 * 1024


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> Optional[int]:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room(root: Path = Path("/sys/fs/cgroup")) -> Optional[int]:
    """cgroup v2 memory.max minus memory.current, when this process is limited."""
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((root / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class MemoryBudget:
    available: int
    source: str  # which bound gave the number, for the refusal message


def free_memory(limit_bytes: int = 0) -> Optional[MemoryBudget]:
    """The smallest of MemAvailable, the cgroup's room and the agent's --memory-limit-bytes (0: none)."""
    candidates = []
    mem = _meminfo_available()
    if mem is not None:
        candidates.append(MemoryBudget(mem, "MemAvailable"))
    cg = _cgroup_room()
    if cg is not None:
        candidates.append(MemoryBudget(cg, "cgroup memory.max"))
    if limit_bytes > 0:
        candidates.append(MemoryBudget(int(limit_bytes), "--memory-limit-bytes"))
    return min(candidates, key=lambda b: b.available) if candidates else None


def build_need(workspace_bytes: int, weights_bytes: int) -> int:
    return int(workspace_bytes) + BUILD_MEMORY_FACTOR * int(weights_bytes)


def _size(n: int) -> str:
    return f"{n / MiB:.1f} MiB ({n} bytes)"


def check_build_fits(segment: str, workspace_bytes: int, weights_bytes: int, limit_bytes: int = 0) -> None:
    """Raise ResourceExhausted naming the numbers when the build's estimated need exceeds free memory."""
    budget = free_memory(limit_bytes)
    need = build_need(workspace_bytes, weights_bytes)
    if budget is None or need <= budget.available:
        return
    raise ResourceExhausted(
        f"segment {segment} needs about {_size(need)} to build (workspace {_size(workspace_bytes)} + "
        f"{BUILD_MEMORY_FACTOR} x {_size(weights_bytes)} of weights) but only {_size(budget.available)} "
        f"is free ({budget.source}); build with a smaller --max-workspace-size or with --fp16, or close other "
        f"processes on the device")
