"""The gRPC service `deploy.v1.DeviceAgent`: maps requests onto the store and the engine service.

Every handler runs behind one edge that turns our exceptions into status codes; credentials and interceptors come
from `auth` only, so security is configured in one place.
"""
from __future__ import annotations

import logging
import threading
from concurrent import futures
from pathlib import Path
from typing import Any, Iterator, Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos import agent_pb2, agent_pb2_grpc

from . import auth
from .config import AgentSettings
from .edge import Activity, stream_edge, unary_edge
from .errors import InvalidInput, PreconditionFailed, Unimplemented
from .info import DeviceFacts, disk_free, meminfo, probe_device, settings_info
from .logfmt import RequestLogInterceptor
from .memory_guard import free_memory
from .store import Store

log = logging.getLogger(__name__)
SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["DeviceAgent"].full_name
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


AGENT_PACKAGES = ("device_agent", "protos")  # the agent's own code: a part missing from it is an old agent


def engine_service_missing(exc: ImportError) -> str:
    """Why the engine service could not be imported: an old agent (one of its own modules or protos lacks what
    the service needs) is upgraded; a library missing on the device is named, to be installed."""
    name = exc.name or ""
    if name.split(".")[0] in AGENT_PACKAGES:
        return f"this agent has no engine service ({exc}); upgrade the agent"
    return (f"this agent's engine service cannot start: module {name or '?'} is missing on this device ({exc}); "
            "install it")


class DeviceAgentService(agent_pb2_grpc.DeviceAgentServicer):
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.activity = Activity()
        self.store = Store(settings.store, settings.max_upload_bytes, 4 * settings.chunk_bytes)
        from .trust import load as load_trust

        self.trust = load_trust(settings)  # None: signing off (device_agent/trust.py)
        self.facts: DeviceFacts = probe_device()
        self.engines_missing = ""  # why there is no engine service, when there is none
        self.engines = self._engine_service()
        if self.engines is not None and self.trust is not None:
            from .engine_seal import EngineSeal

            self.engines.unpacked.trust = self.trust  # a stored bundle is unpacked only once verified
            self.engines.cache.seal = EngineSeal.from_settings(settings, self.trust.state, self.trust.refusals)
        self.models: Optional[Any] = None  # device_agent/model_service.py: names, versions, the active one
        if self.engines is not None:
            from .model_service import ModelService

            self.models = ModelService(settings, self.engines)

    def _engine_service(self) -> Optional[Any]:
        try:
            from .engine_service import EngineService
        except ImportError as exc:
            self.engines_missing = engine_service_missing(exc)
            log.warning("%s", self.engines_missing)
            return None
        return EngineService(self.settings, self.store, self.facts)

    def _engines(self) -> Any:
        if self.engines is None:
            raise Unimplemented(self.engines_missing or "this agent has no engine service; upgrade the agent")
        return self.engines

    # ---------------------------------------------------------------- info
    @unary_edge
    def GetInfo(self, request: agent_pb2.GetInfoRequest, context: grpc.ServicerContext) -> agent_pb2.DeviceInfo:
        facts = self.facts
        budget = free_memory(int(self.settings.memory_limit_bytes))  # what the build guard will allow
        available = budget.available if budget is not None else meminfo()[1]
        reply = agent_pb2.DeviceInfo(
            hostname=facts.hostname, os=facts.os, arch=facts.arch, cpu_count=facts.cpu_count,
            memory_total_bytes=facts.memory_total_bytes, memory_available_bytes=available,
            store_free_bytes=disk_free(self.store.root), python_version=facts.python_version,
            agent_version=facts.agent_version, store_dir=str(self.store.root),
            max_upload_bytes=self.settings.max_upload_bytes, profile=self.settings.profile,
            default_backend=self.settings.backend, settings=settings_info(self.settings),
        )
        for name in ("jetson_model", "l4t_release", "cuda_version"):
            value = getattr(facts, name)
            if value:
                setattr(reply, name, value)
        for gpu in facts.gpus:
            reply.gpus.add(name=gpu.name, compute_capability=gpu.compute_capability, memory_bytes=gpu.memory_bytes)
        if self.engines is not None:
            self.engines.describe(reply)
        if self.trust is not None:
            v = self.trust.describe()
            reply.signing.CopyFrom(agent_pb2.SigningInfo(enabled=True, root_version=v.get("root", 0),
                                                         targets_version=v.get("targets", 0),
                                                         timestamp_version=v.get("timestamp", 0)))
        return reply

    # ---------------------------------------------------------------- store
    @unary_edge
    def Upload(self, request_iterator: Iterator[agent_pb2.UploadRequest],
               context: grpc.ServicerContext) -> agent_pb2.UploadReply:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "header":
            raise InvalidInput("an upload must start with a header message carrying digest and size")
        header = first.header
        verify = None
        if self.trust is not None and header.kind != "part":  # a part is inert data until a verified manifest
            trust, wire, store = self.trust, bytes(header.trust_metadata), self.store  # names it (parts.py)
            if not wire:  # refused before any payload is read
                trust.verify_bundle(header.digest, Path(), wire)
            verify = lambda path: trust.verify_bundle(header.digest, path, wire, store)  # noqa: E731

        def chunks() -> Iterator[bytes]:
            for msg in request_iterator:
                if msg.WhichOneof("msg") != "chunk":
                    raise InvalidInput("only chunk messages may follow the upload header")
                yield msg.chunk

        result = self.store.receive(header.digest, header.size, header.offset, chunks(), verify)
        if verify is not None and result.already_present:  # newer metadata (a rotated root), or stored unverified
            verify(self.store.path_of(result.digest))
        limit = int(self.settings.store_max_bytes)
        # a part waits for its manifest: pruning then could take the parts of the bundle still arriving
        if limit > 0 and not result.already_present and header.kind != "part":
            pruned = self._store_usage().bound(limit, keep=result.digest)
            if pruned.removed:
                log.info("store over --store-max-bytes %d: removed %d least recently used entr(ies), %d bytes",
                         limit, len(pruned.removed), pruned.freed_bytes)
        return agent_pb2.UploadReply(digest=result.digest, size=result.size, bytes_received=result.bytes_received,
                                     already_present=result.already_present)

    @unary_edge
    def QueryUpload(self, request: agent_pb2.QueryUploadRequest,
                    context: grpc.ServicerContext) -> agent_pb2.QueryUploadReply:
        state = self.store.query(request.digest)
        return agent_pb2.QueryUploadReply(digest=state.digest, complete=state.complete,
                                          committed_offset=state.committed_offset, size=state.size)

    @unary_edge
    def FindMissingBlobs(self, request: agent_pb2.FindMissingBlobsRequest,
                         context: grpc.ServicerContext) -> agent_pb2.FindMissingBlobsReply:
        from .parts import MAX_FIND_DIGESTS, missing

        if len(request.digests) > MAX_FIND_DIGESTS:
            raise InvalidInput(f"FindMissingBlobs asks about {len(request.digests)} digests; at most "
                               f"{MAX_FIND_DIGESTS} per call")
        return agent_pb2.FindMissingBlobsReply(missing=missing(self.store, request.digests))

    # ------------------------------------------------ engines (device_agent/engine_service.py, cache_rpcs.py)
    @stream_edge
    def Build(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        yield from self._engines().Build(request, context)

    @unary_edge
    def Run(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._engines().Run(request, context)

    @stream_edge
    def Benchmark(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        yield from self._engines().Benchmark(request, context)

    @unary_edge
    def ListEngines(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._engines().cache_rpcs.ListEngines(request, context)

    @stream_edge
    def FetchEngine(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        yield from self._engines().cache_rpcs.FetchEngine(request, context)

    @unary_edge
    def PutEngine(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        return self._engines().cache_rpcs.PutEngine(request_iterator, context)

    @stream_edge
    def TimingCacheFetch(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        yield from self._engines().cache_rpcs.TimingCacheFetch(request, context)

    @unary_edge
    def TimingCachePut(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        return self._engines().cache_rpcs.TimingCachePut(request_iterator, context)

    @unary_edge
    def Prune(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._engines().cache_rpcs.Prune(request, context)

    # ---------------------------------------------------------------- store disk use (device_agent/store_usage.py)
    def _store_usage(self) -> Any:
        from .store_usage import StoreUsage

        unpacked = getattr(self.engines, "unpacked", None)
        pinned = (lambda: self.models.repo.pinned()[0]) if self.models is not None else set
        readable = self.trust.verified if self.trust is not None else (lambda _d: True)
        return StoreUsage(self.store, unpacked, self.settings.data_dir / "bundles", pinned, readable)

    # ---------------------------------------------------------------- models (device_agent/model_service.py)
    def _models(self) -> Any:
        self._engines()
        return self.models

    @unary_edge
    def RegisterVersion(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._models().RegisterVersion(request, context)

    @unary_edge
    def ListModels(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._models().ListModels(request, context)

    @unary_edge
    def Activate(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._models().Activate(request, context)

    @unary_edge
    def Rollback(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._models().Rollback(request, context)

    @unary_edge
    def Deactivate(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._models().Deactivate(request, context)

    @unary_edge
    def ListStore(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._store_usage().list()

    @unary_edge
    def PruneStore(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._store_usage().prune(request)

    # ---------------------------------------------------------------- registry (device_agent/registry_pull.py)
    @unary_edge
    def Pull(self, request: agent_pb2.PullRequest, context: grpc.ServicerContext) -> agent_pb2.PullReply:
        from .registry_pull import Puller, client_from_settings

        client = client_from_settings(self.settings)
        if client is None:
            raise PreconditionFailed("this agent has no registry; start it with --registry HOST/REPO")
        r = Puller(client, self.store, self._engines()).pull(request.bundle_digest, request.engines_reference)
        return agent_pb2.PullReply(bundle_digest=r.bundle_digest, bundle_present=r.bundle_present,
                                   engine_keys=r.engine_keys, engines_pulled=r.engines_pulled,
                                   engines_present=r.engines_present, bytes_pulled=r.bytes_pulled,
                                   retries=r.retries, timing_cache_pulled=r.timing_cache_pulled,
                                   timing_cache_digest=r.timing_cache_digest,
                                   timing_cache_refused=r.timing_cache_refused)


def server_options(settings: AgentSettings) -> list[tuple[str, Any]]:
    """Chosen so that no call and no connection outlives a dead peer by much (docs/reliability.md):

    - messages up to 64 MiB (Run's tensors; upload chunks are at most 4 x --chunk-bytes);
    - the agent pings every 30 s and drops a client that does not answer in 10 s, so an upload whose client
      vanished (link down, host asleep) ends within about 40 s, commits what arrived and frees its digest;
    - clients ping every 30 s, also during a quiet build; pings 20 s apart or more are welcome (gRPC's default
      would answer a third ping within 5 minutes with GOAWAY "too_many_pings" and break the build stream).
    """
    return [
        ("grpc.max_receive_message_length", max(MAX_MESSAGE_BYTES, 8 * settings.chunk_bytes)),
        ("grpc.max_send_message_length", max(MAX_MESSAGE_BYTES, 8 * settings.chunk_bytes)),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 20_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", 0),
    ]


MAX_CONCURRENT_RPCS = 1024


class AgentServer:
    """A running agent: the gRPC server, health and reflection, and the idle watchdog."""

    def __init__(self, settings: AgentSettings) -> None:
        auth.check_listen_policy(settings)
        limit = int(settings.max_concurrent_rpcs)
        if not 1 <= limit <= MAX_CONCURRENT_RPCS:
            raise InvalidInput(f"--max-concurrent-rpcs {limit} must be between 1 and {MAX_CONCURRENT_RPCS}")
        self.settings = settings
        self.metrics: Optional[Any] = None
        if settings.metrics_listen:
            from .metrics import check_metrics_policy

            check_metrics_policy(settings)
        if settings.registry_poll_s:
            from .registry_poll import check_poll_settings

            check_poll_settings(settings)
        self.service = DeviceAgentService(settings)
        # request ids and the one log line per call first, so they see calls the token check refuses too
        observers: list = [RequestLogInterceptor()]
        if settings.metrics_listen:
            from .metrics import AgentMetrics, MetricsInterceptor

            self.metrics = AgentMetrics(self.service)
            observers.append(MetricsInterceptor(self.metrics))
        # one thread per admitted call: a call past the bound is refused at once (RESOURCE_EXHAUSTED), never
        # queued without a deadline behind busy threads
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max(settings.max_workers, limit)),
                                  interceptors=observers + auth.interceptors(settings),
                                  options=server_options(settings), maximum_concurrent_rpcs=limit)
        agent_pb2_grpc.add_DeviceAgentServicer_to_server(self.service, self.server)
        if self.service.models is not None:  # the Open Inference Protocol for active models (device_agent/oip.py)
            from .oip import InferenceService, add_to_server

            add_to_server(InferenceService(self.service.models, self.service.activity,
                                           self.service.facts.agent_version), self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            # the OIP service is not listed: its messages are ours (deploy.oip), its name the protocol's
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server)
        credentials = auth.server_credentials(settings)
        if credentials is None:
            self.port = self.server.add_insecure_port(settings.listen)
        else:
            self.port = self.server.add_secure_port(settings.listen, credentials)
        if self.port == 0:
            raise InvalidInput(f"cannot listen on {settings.listen}: address in use or not valid")
        self.metrics_url = self.metrics.serve(settings) if self.metrics is not None else ""
        self._stopped = threading.Event()
        self.poller: Optional[Any] = None  # device_agent/registry_poll.py, with --registry-poll-s

    @property
    def address(self) -> str:
        host = auth.listen_host(self.settings.listen)
        return f"{host}:{self.port}"

    def start(self) -> None:
        self.server.start()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        if self.settings.idle_exit_s > 0:
            threading.Thread(target=self._idle_watch, name="idle-watch", daemon=True).start()
        if self.settings.registry and self.settings.registry_poll_s > 0 and self.service.engines is not None:
            from .registry_poll import ClassPoller

            self.poller = ClassPoller(self.settings, self.service.store, self.service.engines,
                                      self.settings.registry_poll_s, self.service.models)
            self.poller.start()

    def _idle_watch(self) -> None:
        while not self._stopped.wait(min(5.0, self.settings.idle_exit_s / 4)):
            if self.service.activity.idle_for() >= self.settings.idle_exit_s:
                log.info("idle for %.0f s, exiting", self.settings.idle_exit_s)
                self.stop(grace=1.0)
                return

    def stop(self, grace: float = 2.0) -> None:
        if self.poller is not None:
            self.poller.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self.metrics is not None:
            self.metrics.stop()
        self._stopped.set()

    def wait(self) -> None:
        self.server.wait_for_termination()
