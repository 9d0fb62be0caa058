"""Request ids: every call to an agent carries `x-request-id`, which the agent logs and the CLI prints on error.

So a failure seen on the host can be found in the device's journal (`journalctl -u deploy-agent | grep ID`).
gRPC metadata rather than a proto field: every RPC gets one, old agents ignore it, nothing in the schema changes.
"""
from __future__ import annotations

import uuid

REQUEST_ID_KEY = "x-request-id"  # device_agent/logfmt.py reads the same key


def new_request_id() -> str:
    """12 hex digits: short enough to print in a one-line error, unique enough to grep a journal for."""
    return uuid.uuid4().hex[:12]


def metadata_with_id(request_id: str) -> list[tuple[str, str]]:
    return [(REQUEST_ID_KEY, request_id)]
