"""The project's exception hierarchy; each maps to one gRPC status code at the service edge.

The host re-uses these classes so a failure keeps its meaning from agent to CLI. grpc is imported only when a
code is asked for (at the service edge), so the device runtime (device_agent/runtime) raises these without it.
"""
from __future__ import annotations

from typing import Any


class _Status:
    """A class's gRPC status code, looked up in grpc on first use (``exc.code`` and ``Class.code`` both work)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: Any) -> Any:
        import grpc

        return getattr(grpc.StatusCode, self.name)


class DeployError(Exception):
    """Base of every error this project raises on purpose."""

    code = _Status("INTERNAL")


class InvalidInput(DeployError):
    """The request or file is malformed; the caller must change it."""

    code = _Status("INVALID_ARGUMENT")


class NotFound(DeployError):
    code = _Status("NOT_FOUND")


class ResourceExhausted(DeployError):
    """A size or count limit, or the disk, would be exceeded."""

    code = _Status("RESOURCE_EXHAUSTED")


class DataLoss(DeployError):
    """Bytes arrived but do not match their digest."""

    code = _Status("DATA_LOSS")


class PreconditionFailed(DeployError):
    """The request is valid but does not fit this device (another TensorRT, another GPU)."""

    code = _Status("FAILED_PRECONDITION")


class Unavailable(DeployError):
    """A backend or the device cannot serve now."""

    code = _Status("UNAVAILABLE")


class Aborted(DeployError):
    """A conflict that passes: another call holds what this one needs; retry in a moment."""

    code = _Status("ABORTED")


class Unimplemented(DeployError):
    code = _Status("UNIMPLEMENTED")


class BuildFailed(DeployError):
    """An engine could not be built (parser or builder error)."""

    code = _Status("INTERNAL")


class Unauthenticated(DeployError):
    code = _Status("UNAUTHENTICATED")


class PermissionDenied(DeployError):
    """The caller is known, but what it sent is not vouched for (an unsigned or badly signed bundle or engine)."""

    code = _Status("PERMISSION_DENIED")


class Cancelled(DeployError):
    code = _Status("CANCELLED")


class DeadlineExceeded(DeployError):
    """A wait inside the agent passed its bound (a hung backend, a stuck worker); the agent keeps serving."""

    code = _Status("DEADLINE_EXCEEDED")


class EngineMissing(PreconditionFailed):
    """A segment's engine is not in the cache where a caller that never builds (the device runtime) needs it."""
