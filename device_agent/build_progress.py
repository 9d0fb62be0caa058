"""Run one segment build in a worker thread and yield its progress while it runs, so a long build never looks dead.

TensorRT >= 10 reports its IProgressMonitor phases and steps (BuildSpec.progress); every backend also gets a
heartbeat with the elapsed time every `heartbeat_s` seconds while nothing else was reported.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Dict, Iterator, Tuple, Union

from .engines.base import BuildSpec

Progress = Dict[str, Any]
_DONE = object()


def run_with_progress(build: Callable[[BuildSpec], Any], spec: BuildSpec,
                      heartbeat_s: float) -> Iterator[Union[Progress, Tuple[str, Any]]]:
    """Yield progress dicts, then ("result", value); the build's exception is raised here, in the caller."""
    events: "queue.Queue[Any]" = queue.Queue()
    start = time.perf_counter()
    box: Dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = build(replace(spec, progress=events.put))
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc
        finally:
            events.put(_DONE)

    threading.Thread(target=work, name="segment-build", daemon=True).start()
    while True:
        try:
            item = events.get(timeout=heartbeat_s if heartbeat_s > 0 else None)
        except queue.Empty:
            yield {"kind": "heartbeat", "phase": "", "elapsed_s": time.perf_counter() - start}
            continue
        if item is _DONE:
            break
        yield item
    if "error" in box:
        raise box["error"]
    yield ("result", box["result"])
