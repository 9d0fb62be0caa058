"""Benchmark a loaded model: timed runs in a worker thread, progress streamed, results and layer profile as replies.

The runs happen in a worker so the RPC thread can keep watching the client and the worker: a client that left stops
the runs; a worker that sends nothing for far longer than its first run predicts has hung in the backend, and the
call ends DEADLINE_EXCEEDED while the agent keeps serving (docs/reliability.md).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Dict, Iterator, Optional

import numpy as np

from protos import agent_pb2

from .bench import LatencyStats, Progress, run_loop
from .bundle import Bundle
from .engines.model import ModelRunner
from .errors import DeadlineExceeded

log = logging.getLogger(__name__)
#: A benchmark whose worker sends nothing for this long, beyond what its own first run predicts, has hung: the
#: call ends DEADLINE_EXCEEDED (see bench_stall_s). The worker is also joined for at most this long.
BENCH_STALL_S = 300.0
MAX_SAMPLES = 100_000  # the first this many per-iteration samples travel back: 800 KB, far under the message cap
LAYER_RUNS = 10  # profiled runs of `bench --layers`, after the timed ones (one more warms the profiler up)
MAX_LAYERS = 4000  # rows sent back (the largest); with MAX_LAYER_NAME, at most 8 MB, under the message cap
MAX_LAYER_NAME = 1000
BENCH_POLL_S = 1.0  # how often the benchmark's RPC thread looks at the client and the call's deadline
DEFAULT_ITERATIONS = 100  # when the request names neither iterations nor a duration


def bench_stall_s(first_run_s: float, runs: int) -> float:
    """How long a benchmark may send nothing: `runs` iterations at 4x the first run's time, plus BENCH_STALL_S."""
    return BENCH_STALL_S + 4.0 * first_run_s * runs


def bench_feeds(bundle: Bundle, batch: int) -> Dict[str, np.ndarray]:
    """Inputs when the request sends none: the reference samples, repeated or cut to `batch` (0: theirs); random
    values (seeded) for an input without samples."""
    ref, _ = bundle.read_reference()
    feeds = {}
    rng = np.random.default_rng(0)
    for spec in bundle.manifest.inputs:
        arr = ref.get(spec.name)
        dynamic = bool(spec.shape) and isinstance(spec.shape[0], str)
        if arr is not None and (not batch or not dynamic or arr.shape[0] == batch):
            feeds[spec.name] = arr
            continue
        if arr is not None:
            reps = (batch + arr.shape[0] - 1) // arr.shape[0]
            feeds[spec.name] = np.concatenate([arr] * reps)[:batch]
            continue
        shape = [batch or 1 if isinstance(d, str) and i == 0 else (d if isinstance(d, int) else 1)
                 for i, d in enumerate(spec.shape)]
        feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


def benchmark(bundle: Bundle, runner: ModelRunner, feeds: Dict[str, np.ndarray], backend: str, batch: int,
              request: agent_pb2.BenchmarkRequest,
              is_active: Callable[[], bool]) -> Iterator[agent_pb2.BenchmarkEvent]:
    """Benchmark's events: progress while the runs go, then the result (with the layer profile if asked)."""
    iterations, duration = int(request.iterations), float(request.duration_s)
    if iterations == 0 and duration == 0:
        iterations = DEFAULT_ITERATIONS
    warmup = int(request.warmup)
    native = getattr(runner.engine, "native_benchmark", None)
    if native is not None:  # trtexec times itself, with its H2D / GPU compute / D2H split
        stats, timings = native(feeds, warmup, iterations, duration, batch)
    else:
        runs = TimedRuns(runner, feeds, warmup, iterations, duration, batch, is_active)
        for p in runs:
            yield agent_pb2.BenchmarkEvent(progress=agent_pb2.BenchmarkProgress(
                done=p.done, total=p.total, elapsed_s=p.elapsed_s, last_ms=p.last_ms))
        if runs.stats is None:  # the client left: gRPC has ended the call
            return
        stats, timings = runs.stats, runner.timings()
    result = result_event(stats, timings, backend, batch)
    if request.layers:  # after the timed runs and their timings, so the profiler perturbs neither
        add_layers(result.result, bundle, runner, feeds)
    yield result


class TimedRuns:
    """Iterate for progress while a worker times the runs; `stats` holds the result after a complete iteration
    (None when `is_active` turned false: the runs were stopped)."""

    def __init__(self, runner: ModelRunner, feeds: Dict[str, np.ndarray], warmup: int, iterations: int,
                 duration_s: float, batch: int, is_active: Callable[[], bool]) -> None:
        self.runner, self.feeds, self.batch = runner, feeds, batch
        self.warmup, self.iterations, self.duration_s = warmup, iterations, duration_s
        self.is_active = is_active
        self.stats: Optional[LatencyStats] = None

    def __iter__(self) -> Iterator[Progress]:
        runner, feeds = self.runner, self.feeds
        t_first = time.perf_counter()
        runner.run(feeds)  # first run outside the timing: allocations, lazy initialisation
        first_s = time.perf_counter() - t_first
        call = runner.bench_call(feeds)
        runner.reset_timings()
        events: "queue.Queue[Any]" = queue.Queue()
        stop = threading.Event()
        done: Dict[str, Any] = {}

        def work() -> None:
            try:
                done["stats"] = run_loop(call, warmup=self.warmup, iterations=self.iterations,
                                         duration_s=self.duration_s, batch=self.batch, on_progress=events.put,
                                         should_stop=stop.is_set)
            except BaseException as exc:  # handed to the RPC thread, raised there
                done["error"] = exc
            finally:
                events.put(None)

        worker = threading.Thread(target=work, name="benchmark", daemon=True)
        worker.start()
        first_wait = bench_stall_s(first_s, self.warmup + 1)  # no progress is sent during the warm-up
        later_wait = bench_stall_s(first_s, 1)
        join_s = later_wait
        try:
            waited_for, since = first_wait, time.monotonic()
            while True:
                try:
                    item = events.get(timeout=BENCH_POLL_S)
                except queue.Empty:
                    if not self.is_active():
                        stop.set()  # the client is gone or its deadline passed: gRPC has ended the call
                        return
                    quiet = time.monotonic() - since
                    if quiet > waited_for:
                        stop.set()
                        join_s = BENCH_POLL_S  # stuck inside one run: waiting longer would not free it
                        raise DeadlineExceeded(
                            f"benchmark made no progress for {quiet:.0f} s (its first run took {first_s:.3f} s); "
                            "the backend looks hung; the benchmark was stopped, the agent keeps serving")
                    continue
                waited_for, since = later_wait, time.monotonic()
                if item is None:
                    break
                if not self.is_active():
                    stop.set()
                    continue
                yield item
        finally:
            stop.set()
            worker.join(join_s)  # the iteration in flight ends, then run_loop sees `stop`
            if worker.is_alive():
                log.warning("benchmark worker still inside one run %.1f s after it was stopped; left to finish",
                            join_s)
        if "error" in done:
            raise done["error"]
        self.stats = done["stats"]


def add_layers(result: agent_pb2.BenchmarkResult, bundle: Bundle, runner: ModelRunner,
               feeds: Dict[str, np.ndarray]) -> None:
    """The per-layer profile of LAYER_RUNS runs of their own; the segments' ONNX names fused kernels."""
    sources = {s.id: bundle.segment_path(s.id).read_bytes() for s in bundle.manifest.segments}
    prof = runner.profile_layers(feeds, LAYER_RUNS, sources)
    for r in prof.rows[:MAX_LAYERS]:
        result.layers.add(name=r.name[:MAX_LAYER_NAME], op=r.op[:MAX_LAYER_NAME], mean_ms=r.mean_ms,
                          share=r.share, segment=r.segment, calls=r.calls)
    result.layers_total_ms = sum(r.mean_ms for r in prof.rows)
    result.layers_wall_ms = prof.wall_ms
    result.layers_runs = prof.runs


def result_event(stats: LatencyStats, timings: Dict[str, float], backend: str,
                 batch: int) -> agent_pb2.BenchmarkEvent:
    lat = agent_pb2.LatencyStats(min_ms=stats.min_ms, mean_ms=stats.mean_ms, p50_ms=stats.p50_ms,
                                 p90_ms=stats.p90_ms, p95_ms=stats.p95_ms, p99_ms=stats.p99_ms,
                                 max_ms=stats.max_ms, throughput=stats.throughput, iterations=stats.iterations)
    lat.samples_ms.extend(stats.samples_ms[:MAX_SAMPLES])
    result = agent_pb2.BenchmarkResult(latency=lat, backend=backend, batch=batch)
    for k, v in timings.items():
        result.backend_timings_ms[k] = float(v)
    return agent_pb2.BenchmarkEvent(result=result)
