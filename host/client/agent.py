"""`AgentClient`: one agent, every RPC, deadlines on each call, gRPC failures raised as `AgentError`."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import grpc

from device_agent.errors import InvalidInput
from host.fleet.inventory import LOCAL, Device
from protos import agent_pb2, agent_pb2_grpc

from . import local
from .channel import explain, make_channel
from .digests import digest_of
from .errors import AgentError

CHUNK_BYTES = 1024 * 1024
INFO_TIMEOUT_S = 10.0
UNARY_TIMEOUT_S = 60.0
STREAM_TIMEOUT_S = 3600.0


@dataclass
class UploadSummary:
    digest: str
    size: int
    bytes_sent: int
    seconds: float
    already_present: bool
    resumed_from: int


ProgressFn = Callable[[int, int], None]


def upload_timeout(size: int) -> float:
    """Generous deadline: a minute plus the time at 2 MB/s, so a slow link finishes and a dead one fails."""
    return 60.0 + size / (2 * 1024 * 1024)


class AgentClient:
    """A connection to one agent; use as a context manager or call `close()`."""

    def __init__(self, device: Device) -> None:
        if device.name == LOCAL and device.address == "local:0":
            device = device.model_copy(update={"address": local.ensure_running().address})
        self.device = device
        self.address = device.address
        self.channel = make_channel(device)
        self.stub = agent_pb2_grpc.DeviceAgentStub(self.channel)

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as exc:
            raise explain(exc, self.device) from None

    def _stream(self, call: Any) -> Iterator[Any]:
        try:
            yield from call
        except grpc.RpcError as exc:
            raise explain(exc, self.device) from None
        finally:
            call.cancel()  # a consumer that stops early (Ctrl-C) cancels the remote work

    # ------------------------------------------------------------------ info
    def info(self, timeout: float = INFO_TIMEOUT_S) -> agent_pb2.DeviceInfo:
        return self._call(self.stub.GetInfo, agent_pb2.GetInfoRequest(), timeout=timeout)

    # ------------------------------------------------------------------ store
    def query_upload(self, digest: str) -> agent_pb2.QueryUploadReply:
        return self._call(self.stub.QueryUpload, agent_pb2.QueryUploadRequest(digest=digest), timeout=UNARY_TIMEOUT_S)

    def upload(self, path: Path, *, digest: Optional[str] = None, chunk_bytes: int = CHUNK_BYTES,
               progress: Optional[ProgressFn] = None, kind: str = "blob") -> UploadSummary:
        """Send a file, resuming from what the agent committed and skipping it when the agent has it."""
        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"{path}: no such file")
        started = time.perf_counter()
        size = path.stat().st_size
        if size == 0:
            raise InvalidInput(f"{path} is empty; nothing to upload")
        digest = digest or digest_of(path)
        state = self.query_upload(digest)
        if state.complete:
            if progress:
                progress(size, size)
            return UploadSummary(digest, size, 0, time.perf_counter() - started, True, size)
        offset = state.committed_offset if state.committed_offset <= size else 0

        def messages() -> Iterator[agent_pb2.UploadRequest]:
            yield agent_pb2.UploadRequest(header=agent_pb2.UploadHeader(digest=digest, size=size, offset=offset,
                                                                        kind=kind))
            sent = offset
            with open(path, "rb") as f:
                f.seek(offset)
                while True:
                    block = f.read(chunk_bytes)
                    if not block:
                        break
                    yield agent_pb2.UploadRequest(chunk=block)
                    sent += len(block)
                    if progress:
                        progress(sent, size)

        reply = self._call(self.stub.Upload, messages(), timeout=upload_timeout(size - offset))
        return UploadSummary(reply.digest, reply.size, reply.bytes_received, time.perf_counter() - started,
                             reply.already_present, offset)

    # ------------------------------------------------------------------ engines
    def build(self, bundle_digest: str, options: Optional[agent_pb2.BuildOptions] = None,
              timeout: float = STREAM_TIMEOUT_S) -> Iterator[agent_pb2.BuildEvent]:
        request = agent_pb2.BuildRequest(bundle_digest=bundle_digest, options=options)
        return self._stream(self._call(self.stub.Build, request, timeout=timeout))

    def run(self, request: agent_pb2.RunRequest, timeout: float = UNARY_TIMEOUT_S * 10) -> agent_pb2.RunReply:
        return self._call(self.stub.Run, request, timeout=timeout)

    def benchmark(self, request: agent_pb2.BenchmarkRequest,
                  timeout: float = STREAM_TIMEOUT_S) -> Iterator[agent_pb2.BenchmarkEvent]:
        return self._stream(self._call(self.stub.Benchmark, request, timeout=timeout))

    def list_engines(self, segment_digest: str = "", timeout: float = UNARY_TIMEOUT_S) -> agent_pb2.ListEnginesReply:
        return self._call(self.stub.ListEngines, agent_pb2.ListEnginesRequest(segment_digest=segment_digest),
                          timeout=timeout)

    def fetch_engine(self, key: str, timeout: float = STREAM_TIMEOUT_S) -> Iterator[agent_pb2.EngineChunk]:
        return self._stream(self._call(self.stub.FetchEngine, agent_pb2.FetchEngineRequest(key=key), timeout=timeout))

    def put_engine(self, chunks: Iterator[agent_pb2.EngineChunk],
                   timeout: float = STREAM_TIMEOUT_S) -> agent_pb2.PutEngineReply:
        return self._call(self.stub.PutEngine, chunks, timeout=timeout)

    def prune(self, request: agent_pb2.PruneRequest) -> agent_pb2.PruneReply:
        return self._call(self.stub.Prune, request, timeout=UNARY_TIMEOUT_S)


def connect(spec: str) -> AgentClient:
    """Client for an inventory name, `local` or HOST:PORT."""
    from host.fleet.inventory import resolve

    return AgentClient(resolve(spec))


__all__ = ["AgentClient", "AgentError", "UploadSummary", "connect"]
