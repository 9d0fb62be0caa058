"""`AgentClient`: one agent, every RPC, deadlines on each call, gRPC failures raised as `AgentError`."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import grpc

from device_agent.errors import InvalidInput
from host.inventory import LOCAL, Device
from protos import agent_pb2, agent_pb2_grpc

from . import local
from .channel import explain, make_channel
from .digests import digest_of
from .errors import AgentError
from .request_ids import metadata_with_id, new_request_id
from .retry import Retrier, RetryFn

CHUNK_BYTES = 1024 * 1024
INFO_TIMEOUT_S = 10.0
UNARY_TIMEOUT_S = 60.0
STREAM_TIMEOUT_S = 3600.0
#: An activation waits for the version to load and the agent's health command (--health-timeout-s, default 30 s).
ACTIVATE_TIMEOUT_S = 900.0


@dataclass
class UploadSummary:
    digest: str
    size: int
    bytes_sent: int
    seconds: float
    already_present: bool
    resumed_from: int
    retries: int = 0


ProgressFn = Callable[[int, int], None]


def upload_timeout(size: int) -> float:
    """Generous deadline: a minute plus the time at 2 MB/s, so a slow link finishes and a dead one fails."""
    return 60.0 + size / (2 * 1024 * 1024)


class AgentClient:
    """A connection to one agent; use as a context manager or call `close()`.

    `retry_for` seconds (0: off, the library's default; the CLI passes `--retry-for`) bounds how long calls are
    repeated after the agent went away (`host.client.retry`); `on_retry(line)` hears of each retry.
    """

    def __init__(self, device: Device, *, retry_for: float = 0.0, on_retry: Optional[RetryFn] = None) -> None:
        if device.name == LOCAL and device.address == "local:0":
            device = device.model_copy(update={"address": local.ensure_running().address})
        self.device = device
        self.address = device.address
        self.channel = make_channel(device)
        self.stub = agent_pb2_grpc.DeviceAgentStub(self.channel)
        self._heard = False  # the agent has answered this client at least once
        self.retrier = Retrier(retry_for, on_retry, heard=lambda: self._heard)

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _error(self, exc: grpc.RpcError) -> AgentError:
        err = explain(exc, self.device)
        if err.answered or err.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            self._heard = True  # something on the other side answered (gRPC's own overload answer included)
        return err

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        request_id = new_request_id()
        try:
            result = fn(*args, metadata=metadata_with_id(request_id), **kwargs)
        except grpc.RpcError as exc:
            err = self._error(exc)
            err.request_id = request_id
            raise err from None
        self._heard = True
        return result

    def _retried(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A unary call that is safe to repeat, repeated on transient failures within the retry window."""
        return self.retrier.call(what, lambda: self._call(fn, *args, **kwargs))

    def _stream(self, what: str, start: Callable[[Any], Any], *, replay: bool,
                finished: Callable[[Any], bool] = lambda msg: False) -> Iterator[Any]:
        """Messages of a server stream; one cut off by a lost agent is asked again within the retry window,
        from the start, if `replay` (builds and benchmarks: idempotent through the engine cache) or if it had
        yielded nothing yet; never after a message for which `finished(msg)` holds."""
        attempts = self.retrier.attempts(what)
        while True:
            request_id = new_request_id()
            call = start(metadata_with_id(request_id))  # start(metadata) begins the call
            yielded = done = False
            try:
                for msg in call:
                    self._heard = yielded = True
                    done = done or finished(msg)
                    yield msg
                return
            except grpc.RpcError as exc:
                err = self._error(exc)
                err.request_id = request_id
                if done or (yielded and not replay) or not attempts.should_retry(err, deadline=False):
                    raise err from None
            finally:
                call.cancel()  # a consumer that stops early (Ctrl-C) cancels the remote work
            attempts.pause(err)

    # ------------------------------------------------------------------ info
    def info(self, timeout: float = INFO_TIMEOUT_S) -> agent_pb2.DeviceInfo:
        return self._retried("GetInfo", self.stub.GetInfo, agent_pb2.GetInfoRequest(), timeout=timeout)

    # ------------------------------------------------------------------ store
    def query_upload(self, digest: str) -> agent_pb2.QueryUploadReply:
        return self._retried("QueryUpload", self.stub.QueryUpload, agent_pb2.QueryUploadRequest(digest=digest),
                             timeout=UNARY_TIMEOUT_S)

    def find_missing_blobs(self, digests: list[str]) -> list[str]:
        """Which of `digests` the agent holds no complete blob of (one call for a whole bundle's parts)."""
        reply = self._retried("FindMissingBlobs", self.stub.FindMissingBlobs,
                              agent_pb2.FindMissingBlobsRequest(digests=digests), timeout=UNARY_TIMEOUT_S)
        return list(reply.missing)

    def upload(self, path: Path, *, digest: Optional[str] = None, chunk_bytes: int = CHUNK_BYTES,
               progress: Optional[ProgressFn] = None, kind: str = "blob",
               trust: Optional[bytes] = None) -> UploadSummary:
        """Send a file, resuming from what the agent committed and skipping it when the agent has it.

        `trust`: the fleet's signing metadata for a bundle (host/security/signing.py), sent in every header; a
        bundle the agent has already gets a header-only call, so an agent with a trust root records it verified.

        A cut-off upload (agent restarted, link down) asks `QueryUpload` again and resumes at the committed
        offset, within the retry window, which starts again whenever an attempt moved the offset forward.
        """
        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"{path}: no such file")
        started = time.perf_counter()
        size = path.stat().st_size
        if size == 0:
            raise InvalidInput(f"{path} is empty; nothing to upload")
        digest = digest or digest_of(path)
        attempts = self.retrier.attempts(f"upload of {path.name}")
        sent = [0]
        first_offset: Optional[int] = None
        last_offset = -1
        restarted = False
        while True:
            state = self.query_upload(digest)
            if state.complete and trust:
                self._call(self.stub.Upload, iter([self._header(digest, size, size, kind, trust)]),
                           timeout=upload_timeout(0))
            if state.complete:
                if progress:
                    progress(size, size)
                return UploadSummary(digest, size, sent[0], time.perf_counter() - started,
                                     first_offset is None, size if first_offset is None else first_offset,
                                     attempts.total_retries)
            offset = state.committed_offset if state.committed_offset <= size else 0
            if first_offset is None:
                first_offset = offset
            if offset > last_offset >= 0:
                attempts.progressed()  # the last attempt moved the offset: a fresh window
            last_offset = offset
            try:
                reply = self._call(self.stub.Upload, self._messages(path, digest, size, offset, kind, chunk_bytes,
                                                                   progress, sent, trust),
                                   timeout=upload_timeout(size - offset))
            except AgentError as err:
                if err.code == grpc.StatusCode.DATA_LOSS and offset > 0 and not restarted:
                    # the committed prefix did not survive (a power cut before it reached the disk): the agent
                    # dropped it; start once more from byte 0
                    restarted = True
                    attempts.retrier.announce(f"upload of {path.name}: {err.code.name}: the {offset} bytes the "
                                              "agent had committed were damaged; sending the file again from 0")
                    continue
                if not attempts.should_retry(err):
                    raise
                attempts.pause(err)
                continue
            return UploadSummary(reply.digest, reply.size, sent[0], time.perf_counter() - started,
                                 reply.already_present, first_offset, attempts.total_retries)

    @staticmethod
    def _header(digest: str, size: int, offset: int, kind: str, trust: Optional[bytes]) -> agent_pb2.UploadRequest:
        return agent_pb2.UploadRequest(header=agent_pb2.UploadHeader(digest=digest, size=size, offset=offset,
                                                                    kind=kind, trust_metadata=trust or b""))

    @classmethod
    def _messages(cls, path: Path, digest: str, size: int, offset: int, kind: str, chunk_bytes: int,
                  progress: Optional[ProgressFn], sent: list[int],
                  trust: Optional[bytes] = None) -> Iterator[agent_pb2.UploadRequest]:
        yield cls._header(digest, size, offset, kind, trust)
        position = offset
        with open(path, "rb") as f:
            f.seek(offset)
            while True:
                block = f.read(chunk_bytes)
                if not block:
                    break
                yield agent_pb2.UploadRequest(chunk=block)
                position += len(block)
                sent[0] += len(block)
                if progress:
                    progress(position, size)

    # ------------------------------------------------------------------ engines
    def build(self, bundle_digest: str, options: Optional[agent_pb2.BuildOptions] = None,
              timeout: Optional[float] = None) -> Iterator[agent_pb2.BuildEvent]:
        """Build events; a build cut off by a lost agent is asked again (cache hits for what was built).

        `timeout` None: the generic STREAM_TIMEOUT_S, read now; the host's builds pass the one build deadline
        (`host.pipeline.build_stream`, `DEPLOY_BUILD_TIMEOUT_S`)."""
        timeout = STREAM_TIMEOUT_S if timeout is None else timeout
        request = agent_pb2.BuildRequest(bundle_digest=bundle_digest, options=options)
        return self._stream("Build", lambda md: self.stub.Build(request, timeout=timeout, metadata=md), replay=True,
                            finished=lambda ev: ev.WhichOneof("event") == "summary")

    def run(self, request: agent_pb2.RunRequest, timeout: float = UNARY_TIMEOUT_S * 10) -> agent_pb2.RunReply:
        """Repeated on a lost agent (a run changes nothing but the engine cache), not on its own deadline."""
        return self.retrier.call("Run", lambda: self._call(self.stub.Run, request, timeout=timeout), deadline=False)

    def benchmark(self, request: agent_pb2.BenchmarkRequest,
                  timeout: float = STREAM_TIMEOUT_S) -> Iterator[agent_pb2.BenchmarkEvent]:
        """Benchmark events; a benchmark cut off by a lost agent is run again from the start."""
        return self._stream("Benchmark", lambda md: self.stub.Benchmark(request, timeout=timeout, metadata=md),
                            replay=True, finished=lambda ev: ev.WhichOneof("event") == "result")

    def list_engines(self, segment_digest: str = "", timeout: float = UNARY_TIMEOUT_S) -> agent_pb2.ListEnginesReply:
        return self._retried("ListEngines", self.stub.ListEngines,
                             agent_pb2.ListEnginesRequest(segment_digest=segment_digest), timeout=timeout)

    def fetch_engine(self, key: str, timeout: float = STREAM_TIMEOUT_S) -> Iterator[agent_pb2.EngineChunk]:
        """Entry then chunks; asked again only if the agent was lost before the first message."""
        request = agent_pb2.FetchEngineRequest(key=key)
        return self._stream("FetchEngine", lambda md: self.stub.FetchEngine(request, timeout=timeout, metadata=md),
                            replay=False)

    def put_engine(self, chunks: Iterator[agent_pb2.EngineChunk],
                   timeout: float = STREAM_TIMEOUT_S) -> agent_pb2.PutEngineReply:
        return self._call(self.stub.PutEngine, chunks, timeout=timeout)

    def fetch_timing_cache(self, backend: str = "",
                           timeout: float = STREAM_TIMEOUT_S) -> Iterator[agent_pb2.TimingCacheChunk]:
        """Info then chunks of the timing cache of this agent's class (for `backend`, default tensorrt)."""
        request = agent_pb2.TimingCacheFetchRequest(backend=backend)
        return self._stream("TimingCacheFetch",
                            lambda md: self.stub.TimingCacheFetch(request, timeout=timeout, metadata=md),
                            replay=False)

    def put_timing_cache(self, chunks: Iterator[agent_pb2.TimingCacheChunk],
                         timeout: float = STREAM_TIMEOUT_S) -> agent_pb2.TimingCachePutReply:
        return self._call(self.stub.TimingCachePut, chunks, timeout=timeout)

    def prune(self, request: agent_pb2.PruneRequest) -> agent_pb2.PruneReply:
        return self._call(self.stub.Prune, request, timeout=UNARY_TIMEOUT_S)

    def list_store(self, timeout: float = UNARY_TIMEOUT_S) -> agent_pb2.ListStoreReply:
        return self._retried("ListStore", self.stub.ListStore, agent_pb2.ListStoreRequest(), timeout=timeout)

    def prune_store(self, request: agent_pb2.PruneStoreRequest) -> agent_pb2.PruneStoreReply:
        return self._call(self.stub.PruneStore, request, timeout=UNARY_TIMEOUT_S)

    def pull(self, bundle_digest: str = "", engines_reference: str = "",
             timeout: float = STREAM_TIMEOUT_S) -> agent_pb2.PullReply:
        """The agent fetches from its own registry (--registry); idempotent, so repeated on transient failures."""
        return self._retried("Pull", self.stub.Pull, agent_pb2.PullRequest(
            bundle_digest=bundle_digest, engines_reference=engines_reference), timeout=timeout)

    # ------------------------------------------------------------------ models on the device
    def register_version(self, request: agent_pb2.RegisterVersionRequest,
                         timeout: float = UNARY_TIMEOUT_S * 10) -> agent_pb2.RegisterVersionReply:
        """Not repeated: a lost reply may have recorded the version (the next push finds it unchanged)."""
        return self._call(self.stub.RegisterVersion, request, timeout=timeout)

    def list_models(self, name: str = "", timeout: float = UNARY_TIMEOUT_S) -> agent_pb2.ListModelsReply:
        return self._retried("ListModels", self.stub.ListModels, agent_pb2.ListModelsRequest(name=name),
                             timeout=timeout)

    def activate(self, name: str, version: Optional[int] = None,
                 timeout: float = ACTIVATE_TIMEOUT_S) -> agent_pb2.ActivateReply:
        """Not repeated: the agent's health command may be running; the caller sees what happened."""
        request = agent_pb2.ActivateRequest(name=name)
        if version is not None:
            request.version = version
        return self._call(self.stub.Activate, request, timeout=timeout)

    def rollback(self, name: str, timeout: float = ACTIVATE_TIMEOUT_S) -> agent_pb2.ActivateReply:
        return self._call(self.stub.Rollback, agent_pb2.RollbackRequest(name=name), timeout=timeout)

    def deactivate(self, name: str, timeout: float = UNARY_TIMEOUT_S) -> agent_pb2.ActivateReply:
        """No version of `name` active (idempotent, so repeated on a lost agent)."""
        return self._retried("Deactivate", self.stub.Deactivate, agent_pb2.DeactivateRequest(name=name),
                             timeout=timeout)


def connect(spec: str, *, retry_for: float = 0.0, on_retry: Optional[RetryFn] = None) -> AgentClient:
    """Client for an inventory name, `local` or HOST:PORT."""
    from host.inventory import resolve

    return AgentClient(resolve(spec), retry_for=retry_for, on_retry=on_retry)


__all__ = ["AgentClient", "AgentError", "UploadSummary", "connect"]
