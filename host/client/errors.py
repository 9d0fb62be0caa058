"""The one exception the client raises: every gRPC failure becomes an `AgentError`."""
from __future__ import annotations

import grpc


class AgentError(Exception):
    """A call to an agent failed; `code` is the gRPC status, `address` the agent."""

    def __init__(self, code: grpc.StatusCode, message: str, address: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.address = address

    @property
    def unreachable(self) -> bool:
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    def __str__(self) -> str:
        where = f" ({self.address})" if self.address else ""
        return f"{self.code.name}{where}: {self.message}"


def from_rpc_error(exc: grpc.RpcError, address: str) -> AgentError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"agent at {address} is unreachable ({details}); is it running? try `deploy info --device ...`"
    return AgentError(code, details or code.name, address)
