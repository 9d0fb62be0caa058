"""trtexec's report, in the layout trtexec 8.x/10.x prints, parsed into the agent's timings.

No trtexec exists in this workplace: these tests pin the parser to the documented report layout.
"""
from __future__ import annotations

import pytest

from device_agent.engines.trtexec import decode_version, parse_summary, parse_version

REPORT = """\
&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec --loadEngine=model.plan --percentile=90,95,99
[11/25/2026-10:00:01] [I] === Trace details ===
[11/25/2026-10:00:01] [I] Latency: this line is before the summary and must be ignored = 999 ms
[11/25/2026-10:00:04] [I] === Performance summary ===
[11/25/2026-10:00:04] [I] Throughput: 812.5 qps
[11/25/2026-10:00:04] [I] Latency: min = 1.1 ms, max = 2.5 ms, mean = 1.25 ms, median = 1.2 ms, percentile(90%) = 1.4 ms, percentile(95%) = 1.6 ms, percentile(99%) = 2.2 ms
[11/25/2026-10:00:04] [I] Enqueue Time: min = 0.1 ms, max = 0.3 ms, mean = 0.15 ms, median = 0.14 ms, percentile(90%) = 0.2 ms, percentile(95%) = 0.25 ms, percentile(99%) = 0.29 ms
[11/25/2026-10:00:04] [I] H2D Latency: min = 0.05 ms, max = 0.09 ms, mean = 0.06 ms, median = 0.06 ms, percentile(90%) = 0.07 ms, percentile(95%) = 0.08 ms, percentile(99%) = 0.09 ms
[11/25/2026-10:00:04] [I] GPU Compute Time: min = 1.0 ms, max = 2.3 ms, mean = 1.15 ms, median = 1.1 ms, percentile(90%) = 1.3 ms, percentile(95%) = 1.5 ms, percentile(99%) = 2.0 ms
[11/25/2026-10:00:04] [I] D2H Latency: min = 0.01 ms, max = 0.04 ms, mean = 0.02 ms, median = 0.02 ms, percentile(90%) = 0.03 ms, percentile(95%) = 0.03 ms, percentile(99%) = 0.04 ms
[11/25/2026-10:00:04] [I] Total Host Walltime: 3.0 s
[11/25/2026-10:00:04] [I] Total GPU Compute Time: 2.9 s
"""

OLD_REPORT = """\
[05/01/2022-10:00:00] [I] === Performance summary ===
[05/01/2022-10:00:00] [I] Throughput: 30.5 qps
[05/01/2022-10:00:00] [I] Latency: min = 33.0 ms, max = 36.0 ms, mean = 34.0 ms, median = 33.9 ms, percentile(99%) = 35.5 ms
[05/01/2022-10:00:00] [I] End-to-End Host Latency: min = 33.1 ms, max = 36.1 ms, mean = 34.1 ms, median = 34.0 ms, percentile(99%) = 35.6 ms
[05/01/2022-10:00:00] [I] GPU Compute Time: min = 32.0 ms, max = 35.0 ms, mean = 33.0 ms, median = 32.9 ms, percentile(99%) = 34.5 ms
"""


def test_summary_sections_and_percentiles():
    s = parse_summary(REPORT)
    assert s["throughput"] == {"qps": 812.5}
    assert s["latency"] == {"min": 1.1, "max": 2.5, "mean": 1.25, "median": 1.2, "p90": 1.4, "p95": 1.6, "p99": 2.2}
    assert s["h2d"]["mean"] == 0.06 and s["gpu_compute"]["mean"] == 1.15 and s["d2h"]["mean"] == 0.02
    assert s["enqueue"]["p95"] == 0.25


def test_older_report_without_90_95_and_with_end_to_end_line():
    s = parse_summary(OLD_REPORT)
    assert s["latency"]["median"] == 33.9 and s["latency"]["p99"] == 35.5 and "p90" not in s["latency"]
    assert s["gpu_compute"]["mean"] == 33.0 and "h2d" not in s


def test_no_summary_gives_nothing():
    assert parse_summary("[E] Engine deserialization failed\n") == {}


@pytest.mark.parametrize("number, version", [("8201", "8.2.1"), ("8502", "8.5.2"), ("8601", "8.6.1"),
                                             ("100300", "10.3.0"), ("101300", "10.13.0")])
def test_version_numbers_as_trtexec_prints_them(number, version):
    assert decode_version(number) == version
    assert parse_version(f"&&&& RUNNING TensorRT.trtexec [TensorRT v{number}] # trtexec --help") == version


def test_profile_flags_one_group_per_optimization_profile():
    from device_agent.engines.base import ProfileShape
    from device_agent.engines.trtexec import profile_args
    from device_agent.errors import InvalidInput

    narrow = [ProfileShape("x", (1, 3, 48, 10), (1, 3, 48, 160), (1, 3, 48, 320))]
    wide = [ProfileShape("x", (1, 3, 48, 320), (1, 3, 48, 960), (1, 3, 48, 2304))]
    assert profile_args([narrow], (8, 2)) == ["--minShapes=x:1x3x48x10", "--optShapes=x:1x3x48x160",
                                              "--maxShapes=x:1x3x48x320"]
    assert profile_args([narrow, wide], (10, 3)) == [
        "--profile=0", "--minShapes=x:1x3x48x10", "--optShapes=x:1x3x48x160", "--maxShapes=x:1x3x48x320",
        "--profile=1", "--minShapes=x:1x3x48x320", "--optShapes=x:1x3x48x960", "--maxShapes=x:1x3x48x2304"]
    with pytest.raises(InvalidInput, match="trtexec of TensorRT 8.5 builds one optimization profile"):
        profile_args([narrow, wide], (8, 5))
