"""TensorRT's builder progress (IProgressMonitor, TensorRT >= 10 and TensorRT-RTX) turned into BuildProgress events.

A 5-20 minute build on a Nano prints nothing; the monitor's phase and step callbacks are what TensorRT offers to show
it is alive. The class is made per TensorRT module (tensorrt or tensorrt_rtx_bindings) because it must subclass that
module's trt.IProgressMonitor; the callbacks run on TensorRT's threads, so the sink must be thread-safe.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

from device_agent.engines.base import BuildProgress

ProgressSink = Callable[[BuildProgress], None]


def attach_progress_monitor(trt: Any, config: Any, sink: Optional[ProgressSink]) -> Optional[Any]:
    """Set config.progress_monitor to a monitor feeding `sink`; None where this TensorRT has no monitor.

    The caller keeps the returned monitor alive until the build ends (TensorRT holds no Python reference).
    """
    if sink is None or not hasattr(trt, "IProgressMonitor") or not hasattr(config, "progress_monitor"):
        return None
    start = time.perf_counter()

    class Monitor(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def _emit(self, kind: str, phase: str, **extra: Any) -> None:
            try:
                sink(BuildProgress(kind, str(phase), time.perf_counter() - start, **extra))
            except Exception:  # a failing sink must not abort TensorRT's build
                pass

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            self._emit("phase_start", phase_name, parent=str(parent_phase or ""), steps=int(num_steps))

        def step_complete(self, phase_name: str, step: int) -> bool:
            self._emit("step_complete", phase_name, step=int(step))
            return True  # False would ask TensorRT to cancel the build

        def phase_finish(self, phase_name: str) -> None:
            self._emit("phase_finish", phase_name)

    monitor = Monitor()
    config.progress_monitor = monitor
    return monitor
