"""A device's state as a few words: what an operator scanning 50 rows needs, the full reason kept elsewhere.

One pure function shared by `deploy devices`, `deploy fleet ls` and `deploy fleet warm`, so the same failure
reads the same everywhere. The classes come from the gRPC status code and, for UNAVAILABLE, gRPC's own words.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

UP = "up"

# (words in gRPC's detail, lower case) -> class; checked in order for UNAVAILABLE
_UNAVAILABLE_WORDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("connection refused",), "refused"),
    (("does not speak tls", "ssl", "tls", "handshake", "certificate"), "TLS"),
    (("resolv", "name or service not known", "domain name not found"), "dns"),
    (("timed out", "timeout", "deadline"), "timeout"),
    (("no route to host", "network is unreachable", "host is unreachable"), "no route"),
)


@dataclass(frozen=True)
class DeviceState:
    """`short` for a table cell ("up", "down: refused"), `reason` the whole story for -v and --json."""

    short: str
    reason: Optional[str] = None
    request_id: Optional[str] = None

    @property
    def up(self) -> bool:
        return self.short == UP


def short_state(exc: Optional[BaseException]) -> str:
    """"up" for no error, else "down: CLASS" (refused, timeout, TLS, auth, version, dns, ...)."""
    if exc is None:
        return UP
    from host.client.errors import AgentError

    if not isinstance(exc, AgentError):
        return "down: config" if type(exc).__name__ in ("InvalidInput", "NotFound") else "down: error"
    code = exc.code.name
    text = f"{exc.detail} {exc.message}".lower()
    if code == "DEADLINE_EXCEEDED":
        return "down: timeout"
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return "down: TLS" if "not the device we trust" in text else "down: auth"
    if code == "UNIMPLEMENTED":
        return "down: version"
    if code == "UNAVAILABLE" and not exc.answered:
        for words, cls in _UNAVAILABLE_WORDS:
            if any(w in text for w in words):
                return f"down: {cls}"
        return "down: unreachable"
    return f"down: {code.lower()}"


CONNECTION_CLASSES = ("refused", "timeout", "TLS", "auth", "version", "dns", "no route", "unreachable")


def failure_state(exc: BaseException, stage: str) -> str:
    """A failure during fleet work: the device's short "down: ..." state when it could not be talked to, else
    "failed: STAGE" (a build that failed on a device that is up is no connection problem)."""
    state = short_state(exc)
    return state if state.split(": ", 1)[-1] in CONNECTION_CLASSES else f"failed: {stage}"


def device_state(exc: Optional[BaseException]) -> DeviceState:
    """The short state plus the one-line reason and the failing call's request id, if any."""
    if exc is None:
        return DeviceState(UP)
    from host.fleet.fanout import first_line

    return DeviceState(short_state(exc), first_line(exc), getattr(exc, "request_id", None) or None)


def summary_line(states: list[str]) -> str:
    """"3 devices: 1 up, 2 down (refused 1, timeout 1)"."""
    up = sum(1 for s in states if s == UP)
    down: dict[str, int] = {}
    for s in states:
        if s != UP:
            cls = s.split(": ", 1)[-1]
            down[cls] = down.get(cls, 0) + 1
    line = f"{len(states)} device{'s' if len(states) != 1 else ''}: {up} up, {len(states) - up} down"
    if down:
        line += " (" + ", ".join(f"{cls} {n}" for cls, n in sorted(down.items(), key=lambda kv: (-kv[1], kv[0]))) + ")"
    return line
