"""Run one segment build in a worker thread and yield its progress while it runs, so a long build never looks dead.

TensorRT >= 10 reports its IProgressMonitor phases and steps (BuildSpec.progress); every backend also gets a
heartbeat with the elapsed time every `heartbeat_s` seconds while nothing else was reported. The generator yields
only `BuildProgress` and *returns* the build's output, so a caller takes it with ``out = yield from ...`` or
`relay` or `finish`, never by telling items apart.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Dict, Generator, TypeVar

from .engines.base import BuildProgress, BuildSpec

T = TypeVar("T")
E = TypeVar("E")
Steps = Generator[BuildProgress, None, T]  # progress while it runs, then the result as the generator's return value
_DONE = object()


def run_with_progress(build: Callable[[BuildSpec], T], spec: BuildSpec, heartbeat_s: float) -> Steps[T]:
    """Yield progress, then return build's value; the build's exception is raised here, in the caller."""
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
            yield BuildProgress("heartbeat", elapsed_s=time.perf_counter() - start)
            continue
        if item is _DONE:
            break
        yield item
    if "error" in box:
        raise box["error"]
    return box["result"]


def relay(steps: Steps[T], to: Callable[[BuildProgress], E]) -> Generator[E, None, T]:
    """Yield `to(p)` for each progress item of `steps`; return its result (take it with ``yield from``)."""
    while True:
        try:
            p = next(steps)
        except StopIteration as end:
            return end.value
        yield to(p)


def finish(steps: Steps[T]) -> T:
    """Run `steps` to its end, dropping the progress; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value
