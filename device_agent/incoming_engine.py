"""The checks of an engine that arrives from elsewhere (another device's PutEngine, a registry's engine layer).

One function for both ways in, so they refuse the same things: a size outside this cache's bound, key parts that
are missing or not a JSON object, another device class, a key that does not match its parts. All of it is checked
before any byte of the plan is read; the bytes' size and digest are checked as they stream, by
`EngineCache.put_external_stream`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict

from .bounded_json import loads_bounded
from .cache import EngineCache
from .errors import InvalidInput, ResourceExhausted

MAX_ENGINE_BYTES = 8 * 1024 ** 3  # the largest plan this agent takes from elsewhere, whatever its cache's bound
MAX_PARTS_CHARS = 1 << 20


@dataclass(frozen=True)
class EngineSource:
    """How the engine arrived, for the messages: what it is called and where its key parts travel."""

    label: str        # "engine entry", "engine layer sha256:..."
    parts_field: str  # where the key parts should have been
    hint: str = ""    # how to send it properly, appended to "lacks its key parts"


@dataclass(frozen=True)
class IncomingEngine:
    """An engine whose declared facts passed: ready for `EngineCache.put_external_stream`."""

    key: str
    parts: Dict[str, Any]
    size: int
    digest: str
    expected: Dict[str, str]  # this agent's device-class parts for the engine's backend


def check_incoming(key: str, raw_parts: str, size: int, digest: str, cache: EngineCache,
                   device_parts: Callable[[str], Dict[str, str]], source: EngineSource) -> IncomingEngine:
    """Refuse an engine from elsewhere before its bytes are read; the error says what to change."""
    limit = min(MAX_ENGINE_BYTES, cache.max_bytes or MAX_ENGINE_BYTES)
    if size <= 0 or size > limit:
        raise ResourceExhausted(f"{source.label} of {size} bytes is outside this cache's limit of 1..{limit} bytes")
    if not raw_parts:
        raise InvalidInput(f"{source.label} lacks its key parts ({source.parts_field}){source.hint}")
    parts = loads_bounded(raw_parts, MAX_PARTS_CHARS,
                          lambda why: InvalidInput(f"{source.label}'s key parts ({source.parts_field}) are {why}"))
    if not isinstance(parts, dict):
        raise InvalidInput(f"{source.label}'s key parts must be a JSON object")
    expected = device_parts(str(parts.get("backend", "")))
    cache.check_external(key, parts, expected)
    return IncomingEngine(key, parts, size, digest, expected)
