"""Timing loops and latency statistics, shared by the agent's Benchmark RPC and the bench scripts."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np

from device_agent.errors import InvalidInput

MAX_ITERATIONS = 1_000_000
MAX_DURATION_S = 3600.0
MAX_WARMUP = 10_000
PROGRESS_EVERY_S = 0.5


@dataclass
class LatencyStats:
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    throughput: float  # inferences per second, batch included
    iterations: int
    samples_ms: List[float] = field(default_factory=list, repr=False)


def summarize(samples_s: Sequence[float], batch: int = 1) -> LatencyStats:
    """Percentiles by linear interpolation (numpy's default); throughput from the summed latencies."""
    if not samples_s:
        raise InvalidInput("no timed iterations to summarize; ask for at least one iteration")
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    total_s = float(ms.sum()) / 1e3
    return LatencyStats(
        min_ms=float(ms.min()), mean_ms=float(ms.mean()), p50_ms=float(p50), p90_ms=float(p90),
        p95_ms=float(p95), p99_ms=float(p99), max_ms=float(ms.max()),
        throughput=(len(ms) * batch / total_s) if total_s > 0 else math.inf,
        iterations=len(ms), samples_ms=[float(x) for x in ms])


@dataclass
class Progress:
    done: int
    total: int  # 0 when running for a duration
    elapsed_s: float
    last_ms: float


def check_plan(warmup: int, iterations: int, duration_s: float) -> None:
    if warmup < 0 or warmup > MAX_WARMUP:
        raise InvalidInput(f"warmup {warmup} is outside 0..{MAX_WARMUP}")
    if iterations < 0 or iterations > MAX_ITERATIONS:
        raise InvalidInput(f"iterations {iterations} is outside 0..{MAX_ITERATIONS}")
    if iterations == 0 and not (0 < duration_s <= MAX_DURATION_S):
        raise InvalidInput(f"give iterations > 0 or a duration in (0, {MAX_DURATION_S:.0f}] s, "
                           f"not iterations=0 and duration {duration_s}")


def run_loop(fn: Callable[[], object], *, warmup: int = 10, iterations: int = 100, duration_s: float = 0.0,
             batch: int = 1, on_progress: Optional[Callable[[Progress], None]] = None,
             progress_every_s: float = PROGRESS_EVERY_S,
             should_stop: Optional[Callable[[], bool]] = None) -> LatencyStats:
    """Warm up, then time ``fn`` for a number of iterations or, when iterations is 0, for a duration."""
    check_plan(warmup, iterations, duration_s)
    for _ in range(warmup):
        fn()
    samples: List[float] = []
    start = last_report = time.perf_counter()
    clock = time.perf_counter
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        samples.append(t1 - t0)
        n = len(samples)
        if iterations and n >= iterations:
            break
        if not iterations and (t1 - start >= duration_s or n >= MAX_ITERATIONS):
            break
        if on_progress is not None and t1 - last_report >= progress_every_s:
            last_report = t1
            on_progress(Progress(n, iterations, t1 - start, samples[-1] * 1e3))
        if should_stop is not None and should_stop():
            break
    if on_progress is not None:
        on_progress(Progress(len(samples), iterations, clock() - start, samples[-1] * 1e3))
    return summarize(samples, batch)
