"""How the pipeline reports progress: one observer object, so the CLI decides how (or whether) to show it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class SegmentState:
    """What is known of one segment while its build streams in."""

    id: str
    index: int = 0
    total: int = 0
    stage: str = "waiting"  # waiting | started | hit | miss | parsed | built | failed
    cache: str = ""         # "hit" | "miss"
    parse_s: float = 0.0
    build_s: float = 0.0
    engine_bytes: int = 0
    backend: str = ""
    error: str = ""
    progress: str = ""      # while building: "12 s" (heartbeat) or "phase NAME step 3/10, 12 s" (TensorRT >= 10)
    messages: list[str] = field(default_factory=list)


class Observer:
    """Receives every progress event of a push; the base class ignores them all (the `--json` mode)."""

    def phase(self, name: str, detail: str = "") -> None:
        """A phase starts: target, compile, upload, build, verify, bench."""

    def phase_done(self, name: str, seconds: float, detail: str = "") -> None:
        """A phase ended after `seconds`."""

    def upload_progress(self, done: int, total: int) -> None:
        """Bytes of the bundle archive committed on the agent so far."""

    def segment(self, state: SegmentState) -> None:
        """A segment's build changed state."""

    def bench_progress(self, done: int, total: int, elapsed_s: float, last_ms: Optional[float]) -> None:
        """Benchmark iterations done so far (`total` is 0 for a duration-bound run)."""

    def log(self, message: str) -> None:
        """A line from the agent (builder messages)."""
