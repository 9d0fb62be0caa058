"""The service edge every handler runs behind: our exceptions become status codes (with a marker that the agent
itself answered), and calls are counted for the local agent's idle exit. Shared by the DeviceAgent service and the
Open Inference Protocol service (device_agent/oip.py)."""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable, Iterator

import grpc

from .errors import DeployError

log = logging.getLogger(__name__)
ANSWER_KEY = "deploy-error"  # trailing metadata on every status the service itself sets


class Activity:
    """Counts calls in flight and the time of the last one, for the idle exit of the local agent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self.last = time.monotonic()

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.last = time.monotonic()

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.last = time.monotonic()

    def idle_for(self) -> float:
        with self._lock:
            return 0.0 if self.in_flight else time.monotonic() - self.last


MAX_STATUS_CHARS = 2000  # messages may quote client input; keep trailers small whatever the client sent


def _clip(message: str) -> str:
    return message if len(message) <= MAX_STATUS_CHARS else message[:MAX_STATUS_CHARS] + "... (truncated)"


def _abort(context: grpc.ServicerContext, exc: BaseException) -> None:
    # marks the status as the agent's own answer, so a client never mistakes e.g. UNAVAILABLE for a dead agent
    context.set_trailing_metadata(((ANSWER_KEY, type(exc).__name__),))
    if isinstance(exc, DeployError):
        context.abort(exc.code, _clip(str(exc)))
    log.exception("unexpected error in handler")
    context.abort(grpc.StatusCode.INTERNAL, _clip(f"agent error: {type(exc).__name__}: {exc}"))


def unary_edge(method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        self.activity.enter()
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - the edge: everything becomes a status code
            _abort(context, exc)
        finally:
            self.activity.leave()
    return wrapper


def stream_edge(method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self.activity.enter()
        try:
            yield from method(self, request, context)
        except Exception as exc:  # noqa: BLE001
            _abort(context, exc)
        finally:
            self.activity.leave()
    return wrapper
