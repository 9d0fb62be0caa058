"""The IProgressMonitor adapter, driven the way TensorRT drives it (phase_start, step_complete, phase_finish).

TensorRT cannot be installed here, so `trt` is a namespace holding a plain IProgressMonitor base class and `config`
an object with a progress_monitor attribute; the real module runs in scripts/device/trt_rtx_build_probe.py.
"""
from __future__ import annotations

import types

from device_agent.engines.trt_progress import attach_progress_monitor


class _Base:
    def __init__(self) -> None:
        pass


def _trt():
    return types.SimpleNamespace(IProgressMonitor=_Base)


def test_monitor_turns_phase_and_step_callbacks_into_events_and_never_cancels_the_build():
    config = types.SimpleNamespace(progress_monitor=None)
    events: list = []
    monitor = attach_progress_monitor(_trt(), config, events.append)
    assert config.progress_monitor is monitor
    monitor.phase_start("Building engine", None, 2)
    assert monitor.step_complete("Building engine", 0) is True
    monitor.phase_finish("Building engine")
    assert [(e.kind, e.phase) for e in events] == [
        ("phase_start", "Building engine"), ("step_complete", "Building engine"), ("phase_finish", "Building engine")]
    assert events[0].steps == 2 and events[0].parent == "" and events[1].step == 0
    assert all(e.elapsed_s >= 0 for e in events)


def test_a_failing_sink_does_not_abort_the_build_and_no_monitor_without_the_api():
    config = types.SimpleNamespace(progress_monitor=None)

    def broken(ev):
        raise RuntimeError("sink down")

    monitor = attach_progress_monitor(_trt(), config, broken)
    assert monitor.step_complete("p", 1) is True
    assert attach_progress_monitor(types.SimpleNamespace(), config, print) is None  # TensorRT < 10
    assert attach_progress_monitor(_trt(), types.SimpleNamespace(), print) is None
    assert attach_progress_monitor(_trt(), config, None) is None
