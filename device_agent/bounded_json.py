"""JSON from outside (a bundle's manifest, signing metadata, a registry's documents, an engine's key parts), parsed
only within a size bound.

One reader, so each such document is refused the same way: the bound checked before the parser sees a byte (a
peer cannot make the agent parse a huge document), UTF-8 required (RFC 8259 for JSON that travels), and the reason
given in a few words for the caller's own message ("invalid bundle manifest: not JSON: ...").
"""
from __future__ import annotations

import json
from typing import Any, Callable, Union


def loads_bounded(data: Union[bytes, str], limit: int, refuse: Callable[[str], Exception]) -> Any:
    """`data` parsed as JSON; raises `refuse(why)` when it is larger than `limit` bytes (characters, given text), not
    UTF-8 or not JSON, `why` saying which ("larger than N bytes", "not UTF-8: ...", "not JSON: ...")."""
    if len(data) > limit:
        raise refuse(f"larger than {limit} bytes")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise refuse(f"not UTF-8: {exc}") from None
    try:
        return json.loads(data)
    except ValueError as exc:
        raise refuse(f"not JSON: {exc}") from None


__all__ = ["loads_bounded"]
