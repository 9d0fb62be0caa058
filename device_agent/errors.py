"""The project's exception hierarchy; each maps to one gRPC status code at the service edge.

The host re-uses these classes so a failure keeps its meaning from agent to CLI.
"""
from __future__ import annotations

import grpc


class DeployError(Exception):
    """Base of every error this project raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidInput(DeployError):
    """The request or file is malformed; the caller must change it."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DeployError):
    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(DeployError):
    """A size or count limit, or the disk, would be exceeded."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DataLoss(DeployError):
    """Bytes arrived but do not match their digest."""

    code = grpc.StatusCode.DATA_LOSS


class PreconditionFailed(DeployError):
    """The request is valid but does not fit this device (another TensorRT, another GPU)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(DeployError):
    """A backend or the device cannot serve now."""

    code = grpc.StatusCode.UNAVAILABLE


class Aborted(DeployError):
    """A conflict that passes: another call holds what this one needs; retry in a moment."""

    code = grpc.StatusCode.ABORTED


class Unimplemented(DeployError):
    code = grpc.StatusCode.UNIMPLEMENTED


class BuildFailed(DeployError):
    """An engine could not be built (parser or builder error)."""

    code = grpc.StatusCode.INTERNAL


class Unauthenticated(DeployError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Cancelled(DeployError):
    code = grpc.StatusCode.CANCELLED


class DeadlineExceeded(DeployError):
    """A wait inside the agent passed its bound (a hung backend, a stuck worker); the agent keeps serving."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class EngineMissing(PreconditionFailed):
    """A segment's engine is not in the cache where a caller that never builds (the device runtime) needs it."""
