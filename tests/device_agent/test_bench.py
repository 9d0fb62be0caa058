"""Timing loop and statistics of device_agent.bench on real sleeps."""
from __future__ import annotations

import time

import numpy as np
import pytest

from device_agent.bench import run_loop, summarize
from device_agent.errors import InvalidInput


def test_percentiles_follow_numpy_on_known_samples():
    samples = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    s = summarize(samples, batch=2)
    assert (s.min_ms, s.max_ms, s.iterations) == (pytest.approx(1), pytest.approx(100), 100)
    assert s.mean_ms == pytest.approx(50.5)
    assert s.p50_ms == pytest.approx(np.percentile(np.arange(1, 101), 50))
    assert s.p99_ms == pytest.approx(np.percentile(np.arange(1, 101), 99))
    assert s.min_ms <= s.p50_ms <= s.p90_ms <= s.p95_ms <= s.p99_ms <= s.max_ms
    assert s.throughput == pytest.approx(100 * 2 / sum(samples))


def test_iterations_mode_runs_warmup_plus_iterations():
    calls = []
    stats = run_loop(lambda: calls.append(1), warmup=3, iterations=7)
    assert len(calls) == 10 and stats.iterations == 7


def test_duration_mode_stops_near_the_duration_and_reports_progress():
    seen = []
    start = time.perf_counter()
    stats = run_loop(lambda: time.sleep(0.01), warmup=0, iterations=0, duration_s=0.5,
                     on_progress=seen.append, progress_every_s=0.1)
    elapsed = time.perf_counter() - start
    assert 0.5 <= elapsed < 1.5
    assert stats.iterations >= 10 and stats.min_ms >= 10
    assert len(seen) >= 3 and seen[-1].done == stats.iterations and seen[-1].total == 0


@pytest.mark.parametrize("kw, words", [
    (dict(iterations=0, duration_s=0), "duration"),
    (dict(iterations=-1), "iterations"),
    (dict(warmup=10 ** 9), "warmup"),
])
def test_impossible_plans_are_refused(kw, words):
    with pytest.raises(InvalidInput, match=words):
        run_loop(lambda: None, **kw)
