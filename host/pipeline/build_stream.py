"""The one consumer of an agent's Build stream: its deadline, per-segment state, progress, failure and DATA_LOSS rules.

`deploy push`, `bench` and `run` (`host/pipeline/push.py`) and `deploy fleet warm` (`host/fleet/warm.py`) all build
through `build_bundle`, so a build that one of them may wait for, the others may too. The deadline is one setting,
`DEPLOY_BUILD_TIMEOUT_S` (default 3 h: a Jetson Nano build of a large model can take more than an hour, and the agent
itself waits 3 h for another build of the same engine key, `device_agent/cache.py` `LOCK_WAIT_S`).
"""
from __future__ import annotations

import logging
import math
import os
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import grpc

from device_agent.cache import LOCK_WAIT_S
from device_agent.errors import BuildFailed, InvalidInput
from host.client.agent import AgentClient
from host.client.errors import AgentError
from protos import agent_pb2

from .observer import SegmentState

log = logging.getLogger(__name__)

ENV_BUILD_TIMEOUT = "DEPLOY_BUILD_TIMEOUT_S"
#: How long one Build call may stream: the agent's own wait for another build of the same key, one number.
DEFAULT_BUILD_TIMEOUT_S = LOCK_WAIT_S
_STAGES = {
    agent_pb2.SegmentEvent.STARTED: "started",
    agent_pb2.SegmentEvent.CACHE_HIT: "hit",
    agent_pb2.SegmentEvent.CACHE_MISS: "miss",
    agent_pb2.SegmentEvent.PARSED: "parsed",
    agent_pb2.SegmentEvent.BUILT: "built",
    agent_pb2.SegmentEvent.FAILED: "failed",
}

SegmentFn = Callable[[SegmentState, agent_pb2.SegmentEvent], None]


def build_timeout_s(environ: Optional[Mapping[str, str]] = None) -> float:
    """`DEPLOY_BUILD_TIMEOUT_S` if set, else 3 h; read at each build, so a test or a script can shorten it."""
    raw = (os.environ if environ is None else environ).get(ENV_BUILD_TIMEOUT, "").strip()
    if not raw:
        return DEFAULT_BUILD_TIMEOUT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not (seconds > 0 and math.isfinite(seconds)):
        raise InvalidInput(f"{ENV_BUILD_TIMEOUT}={raw!r}: give the build deadline in seconds, above 0 "
                           f"(default {DEFAULT_BUILD_TIMEOUT_S:.0f})")
    return seconds


def progress_text(seg: agent_pb2.SegmentEvent) -> str:
    """A running build in a few words: TensorRT's phase and step where it reports them, else the time so far."""
    elapsed = f"{seg.elapsed_s:.0f} s"
    if seg.progress_kind != "heartbeat" and seg.progress_phase:
        step = f" step {seg.progress_step}/{seg.progress_steps}" if seg.progress_steps else ""
        return f"{seg.progress_phase}{step}, {elapsed}"
    return elapsed


@dataclass
class BuildHooks:
    """What a caller hears of a build, and how it puts the bundle on the device again; each hook is optional."""

    attempt: Optional[Callable[[], None]] = None  # a Build call starts (once more after a re-sent bundle)
    segment: Optional[SegmentFn] = None           # a segment event, with what is known of that segment so far
    log: Optional[Callable[[str], None]] = None   # a builder line the agent streamed
    resend: Optional[Callable[[AgentError], None]] = None  # DATA_LOSS: send the bundle again (None: raise it)


@dataclass
class StreamedBuild:
    """A build that succeeded: its summary, one state per segment, and what this call itself built."""

    summary: agent_pb2.BuildSummary
    segments: list[SegmentState] = field(default_factory=list)
    seconds: float = 0.0   # of the last Build call (after a re-sent bundle: the second one)
    built: int = 0         # BUILT events seen
    built_s: float = 0.0   # their parse + build seconds, as the device measured them
    resent: bool = False   # the bundle was sent again after DATA_LOSS

RESENDS = 2


def build_bundle(client: AgentClient, digest: str, options: agent_pb2.BuildOptions,
                 hooks: Optional[BuildHooks] = None, device: str = "the device") -> StreamedBuild:
    """Build `digest` on `client`'s agent under the one deadline; a failed segment, a summary that counts failures,
    or a stream without a summary raise `BuildFailed` (`device` names the builder in its message). When the agent
    answers DATA_LOSS (it dropped its damaged copy of the bundle) `hooks.resend` sends the bundle again and the
    build is asked again, up to `RESENDS` times (a bundle by parts finds its damaged manifest, then a damaged part,
    one at a time)."""
    hooks = hooks or BuildHooks()
    for attempt in range(RESENDS + 1):
        try:
            result = _check(_stream(client, digest, options, hooks), device)
            result.resent = attempt > 0
            return result
        except AgentError as exc:
            if exc.code != grpc.StatusCode.DATA_LOSS or hooks.resend is None or attempt == RESENDS:
                raise
            hooks.resend(exc)
    raise AssertionError("unreachable")


@dataclass
class _Streamed:
    states: dict[str, SegmentState]
    summary: Optional[agent_pb2.BuildSummary]
    seconds: float
    built: int
    built_s: float


def _stream(client: AgentClient, digest: str, options: agent_pb2.BuildOptions, hooks: BuildHooks) -> _Streamed:
    """One Build call read to its end: the state of each segment as its events arrive."""
    if hooks.attempt is not None:
        hooks.attempt()
    started = time.perf_counter()
    states: dict[str, SegmentState] = {}
    summary: Optional[agent_pb2.BuildSummary] = None
    built, built_s = 0, 0.0
    with closing(client.build(digest, options, timeout=build_timeout_s())) as events:
        for event in events:
            which = event.WhichOneof("event")
            if which == "log":
                if hooks.log is not None:
                    hooks.log(event.log)
            elif which == "summary":
                summary = event.summary
            elif which == "segment":
                seg = event.segment
                state = _update(states.setdefault(seg.segment_id, SegmentState(seg.segment_id)), seg)
                if seg.stage == agent_pb2.SegmentEvent.BUILT:
                    built += 1
                    built_s += seg.parse_s + seg.build_s
                if hooks.segment is not None:
                    hooks.segment(state, seg)
    return _Streamed(states, summary, time.perf_counter() - started, built, built_s)


def _update(state: SegmentState, seg: agent_pb2.SegmentEvent) -> SegmentState:
    state.index, state.total = seg.index, seg.total
    state.stage = _STAGES.get(seg.stage, state.stage)
    if state.stage in ("hit", "miss"):
        state.cache = state.stage
    state.parse_s = seg.parse_s or state.parse_s
    state.build_s = seg.build_s or state.build_s
    state.engine_bytes = seg.engine_bytes or state.engine_bytes
    state.backend = seg.backend or state.backend
    if seg.error:
        state.error = seg.error
    if seg.stage == agent_pb2.SegmentEvent.PROGRESS:
        state.progress = progress_text(seg)
    state.messages.extend(seg.messages)
    for message in seg.messages:
        log.info("segment %s: %s", seg.segment_id, message)
    return state


def _check(streamed: _Streamed, device: str) -> StreamedBuild:
    """The failure rule: any failed segment (the first one named, with its last message), a summary that counts a
    failure, or no summary at all."""
    failed = [s for s in streamed.states.values() if s.stage == "failed"]
    summary = streamed.summary
    if failed or (summary is not None and summary.failed):
        first = failed[0] if failed else None
        detail = f"segment {first.id}: {first.error or 'build failed'}" if first else "a segment failed"
        if first and first.messages:
            detail += f" ({first.messages[-1]})"
        raise BuildFailed(f"{device} could not build the bundle: {detail}")
    if summary is None:
        raise BuildFailed("the build stream ended without a summary; the agent may have stopped")
    return StreamedBuild(summary, list(streamed.states.values()), streamed.seconds, streamed.built,
                         streamed.built_s)


__all__ = ["BuildHooks", "StreamedBuild", "build_bundle", "build_timeout_s", "progress_text",
           "DEFAULT_BUILD_TIMEOUT_S", "ENV_BUILD_TIMEOUT"]
