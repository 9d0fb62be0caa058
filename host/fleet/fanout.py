"""Run one call on many devices: bounded concurrency, a deadline per device, retries with backoff.

Only transient failures (the agent unreachable or too slow) are retried: a device that answered with a
real error (bad input, failed build) would answer the same again. Results keep the input order, and a
failure is returned as data, never raised, so one dead device cannot stop the rest of a fleet.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Generic, Optional, Sequence, TypeVar

import grpc
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential

from host.client.errors import AgentError

T = TypeVar("T")
X = TypeVar("X")

DEFAULT_CONCURRENCY = 8
DEFAULT_ATTEMPTS = 3
DEFAULT_DEADLINE_S = 60.0


@dataclass
class RetryPolicy:
    """How hard to try one device: `attempts` tries within `deadline_s`, waiting `first_wait_s`, doubling."""

    attempts: int = DEFAULT_ATTEMPTS
    deadline_s: float = DEFAULT_DEADLINE_S
    first_wait_s: float = 0.2
    max_wait_s: float = 2.0


@dataclass
class Outcome(Generic[X, T]):
    """What happened on one item: its value, or the error after the last attempt."""

    item: X
    value: Optional[T] = None
    error: Optional[BaseException] = None
    attempts: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def unreachable(self) -> bool:
        return is_unreachable(self.error)


class NotStarted(Exception):
    """A device's work was not started because the run stopped (`deploy fleet warm --max-failures`)."""


def is_unreachable(exc: Optional[BaseException]) -> bool:
    return isinstance(exc, AgentError) and exc.unreachable


def is_transient(exc: BaseException) -> bool:
    """Worth another try: the agent did not answer, or a stream broke (an agent restarting, a flaky link)."""
    if not isinstance(exc, AgentError):
        return False
    return exc.unreachable or exc.code in (grpc.StatusCode.ABORTED,)


def retrying(fn: Callable[[], T], policy: Optional[RetryPolicy] = None) -> tuple[T, int]:
    """(value, attempts) of `fn()`, retried on transient errors; the last error is re-raised."""
    policy = policy or RetryPolicy()
    attempts = 0
    for attempt in Retrying(stop=stop_after_attempt(max(1, policy.attempts)) | stop_after_delay(policy.deadline_s),
                            wait=wait_exponential(multiplier=policy.first_wait_s, max=policy.max_wait_s),
                            retry=retry_if_exception(is_transient), reraise=True):
        with attempt:
            attempts += 1
            return fn(), attempts
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover


class Limiter:
    """One bound on device operations in flight, shared by every class being warmed at once."""

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self._sem = threading.BoundedSemaphore(concurrency)

    def __enter__(self) -> "Limiter":
        self._sem.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sem.release()


def fan_out(items: Sequence[X], fn: Callable[[X], T], *, concurrency: int = DEFAULT_CONCURRENCY,
            policy: Optional[RetryPolicy] = None, limiter: Optional[Limiter] = None,
            stopped: Optional[Callable[[], Optional[str]]] = None,
            on_done: Optional[Callable[["Outcome[X, T]"], None]] = None) -> list[Outcome[X, T]]:
    """`fn(item)` for every item, at most `concurrency` at once (or under a shared `limiter`), in input order.

    `stopped()`, asked just before an item starts (once it has its turn), returns why no new item may start, or
    None; an item not started gets a `NotStarted` error. `on_done(outcome)` hears of each item as it ends.
    """
    if not items:
        return []

    def one(item: X) -> Outcome[X, T]:
        started = time.perf_counter()
        out: Outcome[X, T] = Outcome(item)

        def attempt() -> T:
            out.attempts += 1
            return fn(item)

        def start() -> T:
            why = stopped() if stopped is not None else None
            if why:
                raise NotStarted(why)
            return retrying(attempt, policy)[0]

        def run() -> None:
            try:
                out.value = start()
            except Exception as exc:  # noqa: BLE001 - a device's failure is a result, not a crash of the fleet
                out.error = exc
            out.seconds = time.perf_counter() - started
            if on_done is not None:
                on_done(out)  # before the slot is free: the next item's stopped() already counts this one

        if limiter is not None:
            with limiter:
                run()
        else:
            run()
        return out

    workers = max(1, min(concurrency, len(items)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fanout") as pool:
        return list(pool.map(one, items))


def first_line(exc: BaseException) -> str:
    """A failure as one line for a table cell or JSON."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
