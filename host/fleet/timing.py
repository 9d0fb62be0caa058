"""Moving a device class's TensorRT timing cache during fleet warm: fetched once from the builder, put on the rest.

A timing cache only helps builds of its own class (same TensorRT, GPU, L4T); the agent refuses one of another
class with FAILED_PRECONDITION, so a refusal here is a fact to report, never a reason to fail the warm.
"""
from __future__ import annotations

import hashlib
from contextlib import closing
from dataclasses import dataclass
from typing import Iterator, Optional

import grpc

from device_agent.errors import DataLoss, ResourceExhausted
from device_agent.timing_cache import MAX_TIMING_CACHE_BYTES
from host.client.agent import AgentClient
from host.client.errors import AgentError
from protos import agent_pb2

TENSORRT_FAMILY = ("tensorrt", "trtexec")
CHUNK = 1024 * 1024


@dataclass
class TimingCopy:
    info: agent_pb2.TimingCacheInfo
    data: bytes


def timing_backend(backend: str) -> str:
    """Whose timing cache a class carries: its own TensorRT backend, else tensorrt's (other backends have none)."""
    return backend if backend in TENSORRT_FAMILY else "tensorrt"


def fetch(client: AgentClient, backend: str) -> Optional[TimingCopy]:
    """The class's timing cache from `client`'s agent, digest checked; None when it has none. No more bytes are
    taken than its info says, nor than any agent accepts in a put (`MAX_TIMING_CACHE_BYTES`): a cache no device
    would take is refused (RESOURCE_EXHAUSTED) before the host holds it."""
    info: Optional[agent_pb2.TimingCacheInfo] = None
    parts: list[bytes] = []
    received = 0
    try:
        with closing(client.fetch_timing_cache(timing_backend(backend))) as stream:
            for msg in stream:
                if msg.WhichOneof("msg") == "info":
                    info = msg.info
                    _check_size(info.size)
                    continue
                received += len(msg.chunk)
                _check_size(received, info.size if info is not None else None)
                parts.append(msg.chunk)
    except AgentError as exc:
        if exc.code == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    data = b"".join(parts)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if info is None or digest != info.digest or len(data) != info.size:
        raise DataLoss(f"timing cache arrived as {len(data)} bytes, {digest}; its info says "
                       f"{info.size if info else '?'} bytes, {info.digest if info else '?'}")
    return TimingCopy(info, data)


def _check_size(size: int, declared: Optional[int] = None) -> None:
    if size > MAX_TIMING_CACHE_BYTES:
        raise ResourceExhausted(f"the builder's timing cache has more than {MAX_TIMING_CACHE_BYTES} bytes, the most "
                                "an agent takes; it is not copied (builds on the other devices time their own)")
    if declared is not None and size > declared:
        raise DataLoss(f"timing cache sends more than the {declared} bytes its info says; not copied")


def _chunks(copy: TimingCopy) -> Iterator[agent_pb2.TimingCacheChunk]:
    yield agent_pb2.TimingCacheChunk(info=copy.info)
    for off in range(0, len(copy.data), CHUNK):
        yield agent_pb2.TimingCacheChunk(chunk=copy.data[off:off + CHUNK])


def put(client: AgentClient, copy: TimingCopy) -> Optional[str]:
    """Put the cache; None when stored (or already there), else the agent's refusal (another class)."""
    try:
        client.put_timing_cache(_chunks(copy))
    except AgentError as exc:
        if exc.code == grpc.StatusCode.FAILED_PRECONDITION:
            return exc.message
        raise
    return None
