"""Retries of the calls to one agent: jittered exponential backoff (tenacity) within a bounded window.

What is retried: a failure the agent did not answer itself (UNAVAILABLE: connection refused or reset, an agent
restarting, a link down; DEADLINE_EXCEEDED of a call that is safe to repeat; RESOURCE_EXHAUSTED from gRPC's bound
on concurrent calls; ABORTED, the agent's "retry in a moment"), and only once this client has heard from the agent: a device that was never reached is
reported unreachable at once, so an offline device costs no wait (`deploy devices`, the first query of a fleet).
A status the agent's service chose (disk full, a bad request, a backend it lacks) is an answer and never retried.

The window (`--retry-for SECONDS`, `DEPLOY_RETRY_FOR`, default 60 s, 0 turns retries off) is how long the agent may
stay silent: it starts at the first failure and starts again whenever a retried upload made progress. Each retry is
announced once through the caller's `on_retry(line)` (the CLI's progress output), never through a logger.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional, TypeVar

import grpc
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential, wait_random

from device_agent.errors import InvalidInput

from .errors import AgentError

T = TypeVar("T")
RetryFn = Callable[[str], None]

ENV_RETRY_FOR = "DEPLOY_RETRY_FOR"
DEFAULT_RETRY_FOR_S = 60.0
FIRST_WAIT_S = 0.25  # then doubling, with jitter, up to MAX_WAIT_S
MAX_WAIT_S = 4.0
MAX_RETRY_FOR_S = 24 * 3600.0


def default_retry_for(environ: Optional[dict[str, str]] = None) -> float:
    """`DEPLOY_RETRY_FOR` if set, else 60 s."""
    raw = (os.environ if environ is None else environ).get(ENV_RETRY_FOR, "").strip()
    if not raw:
        return DEFAULT_RETRY_FOR_S
    return check_retry_for(raw, ENV_RETRY_FOR)


def check_retry_for(value: object, what: str = "--retry-for") -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} {value!r} is not a number of seconds (0 turns retries off)") from None
    if not 0 <= seconds <= MAX_RETRY_FOR_S:
        raise InvalidInput(f"{what} {value!r} must be between 0 and {MAX_RETRY_FOR_S:.0f} seconds")
    return seconds


def is_transient(exc: BaseException, *, deadline: bool = True) -> bool:
    """A failure worth repeating the call for; `deadline`: DEADLINE_EXCEEDED counts (short, repeatable calls)."""
    if not isinstance(exc, AgentError):
        return False
    if exc.answered:  # the agent's own answer; only ABORTED ("another call holds it, retry") asks for a retry
        return exc.code == grpc.StatusCode.ABORTED
    codes = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
    if deadline:
        codes.add(grpc.StatusCode.DEADLINE_EXCEEDED)
    return exc.code in codes


def reason(exc: BaseException) -> str:
    """Why a call failed, short: the status and gRPC's own words, without our advice."""
    if isinstance(exc, AgentError):
        detail = " ".join((exc.detail or exc.message).split())
        if "last error: " in detail:  # "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:..."
            detail = detail.split("last error: ", 1)[1]
        return f"{exc.code.name}: {detail[:160]}"
    return f"{type(exc).__name__}: {exc}"


class Attempts:
    """The retries of one logical operation (a call, a stream, an upload) under one window.

    `failed(exc)` either re-raises `exc` (not transient, retries off, agent never heard from, window spent) or
    announces the retry and sleeps the backoff; `progressed()` restarts the window and the backoff.
    """

    def __init__(self, retrier: "Retrier", what: str) -> None:
        self.retrier = retrier
        self.what = what
        self.since: Optional[float] = None
        self.retries = 0       # in this run of failures (the backoff's exponent)
        self.total_retries = 0
        self._wait = wait_exponential(multiplier=FIRST_WAIT_S, max=MAX_WAIT_S) + wait_random(0, FIRST_WAIT_S)

    def progressed(self) -> None:
        self.since = None
        self.retries = 0

    def left_s(self) -> float:
        if self.since is None:
            return self.retrier.window_s
        return self.retrier.window_s - (time.monotonic() - self.since)

    def should_retry(self, exc: BaseException, *, deadline: bool = True) -> bool:
        if self.since is None:
            self.since = time.monotonic()
        return (self.retrier.window_s > 0 and self.retrier.heard() and is_transient(exc, deadline=deadline)
                and self.left_s() > 0)

    def delay(self) -> float:
        state = RetryCallState(None, None, (), {})
        state.attempt_number = self.retries + 1
        return max(0.0, min(self._wait(state), self.left_s()))

    def failed(self, exc: BaseException, *, deadline: bool = True) -> None:
        if not self.should_retry(exc, deadline=deadline):
            raise exc
        self.pause(exc)

    def pause(self, exc: BaseException) -> None:
        sleep = self.delay()
        self.retries += 1
        self.total_retries += 1
        self.retrier.announce(f"{self.what}: {reason(exc)}; retry {self.retries} in {sleep:.1f} s "
                              f"(giving up {max(0.0, self.left_s()):.0f} s from now)")
        time.sleep(sleep)


class Retrier:
    """The retry settings of one client; `heard()` says whether the agent has answered this client yet."""

    def __init__(self, window_s: float, on_retry: Optional[RetryFn] = None,
                 heard: Callable[[], bool] = lambda: True) -> None:
        self.window_s = check_retry_for(window_s)
        self.on_retry = on_retry
        self.heard = heard

    def announce(self, line: str) -> None:
        if self.on_retry is not None:
            self.on_retry(line)

    def attempts(self, what: str) -> Attempts:
        return Attempts(self, what)

    def call(self, what: str, fn: Callable[[], T], *, deadline: bool = True) -> T:
        """`fn()`, repeated on transient failures (tenacity drives the loop, `Attempts` decides and announces)."""
        attempts = self.attempts(what)

        def retry_it(exc: BaseException) -> bool:
            return attempts.should_retry(exc, deadline=deadline)

        for attempt in Retrying(retry=retry_if_exception(retry_it), stop=lambda state: False,
                                wait=lambda state: 0.0, before_sleep=lambda state: attempts.pause(
                                    state.outcome.exception()), reraise=True):
            with attempt:
                return fn()
        raise AssertionError("unreachable: tenacity returns or re-raises")  # pragma: no cover
