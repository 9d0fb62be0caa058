"""The one exception the client raises: every gRPC failure becomes an `AgentError`."""
from __future__ import annotations

import grpc

ANSWER_KEY = "deploy-error"  # device_agent.edge sets it on every status the service itself chooses


class AgentError(Exception):
    """A call to an agent failed; `code` is the gRPC status, `address` the agent."""

    def __init__(self, code: grpc.StatusCode, message: str, address: str = "", answered: bool = False,
                 detail: str = "", request_id: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.address = address
        self.answered = answered  # the agent itself set this status (e.g. a backend it lacks), it is reachable
        self.detail = detail or message  # gRPC's own words, before we add advice (for retry lines)
        self.request_id = request_id  # the `x-request-id` the call carried; the agent logs it (docs/operations.md)

    @property
    def unreachable(self) -> bool:
        return not self.answered and self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    def __str__(self) -> str:
        where = f" ({self.address})" if self.address else ""
        return f"{self.code.name}{where}: {self.message}"


def from_rpc_error(exc: grpc.RpcError, address: str) -> AgentError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    try:
        trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    except Exception:  # noqa: BLE001 - some error objects carry no call
        trailing = None
    answered = any(key == ANSWER_KEY for key, _value in (trailing or ()))
    raw = details or code.name
    if code == grpc.StatusCode.UNAVAILABLE and not answered:
        details = f"agent at {address} is unreachable ({details}); is it running? try `deploy info --device ...`"
    return AgentError(code, details or code.name, address, answered=answered, detail=raw)
