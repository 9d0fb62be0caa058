"""Prometheus metrics of one agent (`--metrics-listen`), so a fleet is watched the way node_exporter hosts are.

prometheus_client is optional (the `agent` extra) and imported only when metrics are asked for. Each agent owns
its own `CollectorRegistry`, so several agents in one process (tests) never share counters. Counters move in a
gRPC server interceptor that watches the messages of Build, Upload and Benchmark as they pass (the service code
is not touched); activations and rollbacks of models are heard through the model repository's observer hook
(`ModelRepository.observe`), whoever made them (an RPC, a registry poll, a health check, a restart); gauges of the
store, the engine cache, the device and the active model versions are read when Prometheus scrapes.
The names and what each means: docs/operations.md.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterator, Optional

import grpc

from .auth import LOOPBACK_HOSTS, is_loopback
from .config import AgentSettings
from .errors import DeployError, InvalidInput
from .logfmt import call_code, timed, wrap_handler

log = logging.getLogger(__name__)

PREFIX = "/deploy.v1.DeviceAgent/"
BUILD_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0)
RPC_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)
BENCH_STATS = ("min", "mean", "p50", "p90", "p95", "p99", "max")
INSTALL_HINT = ("--metrics-listen needs prometheus_client; install it with `pip install prometheus_client` "
                "(or the agent extra: `pip install 'jetson-deploy[agent]'`), or leave out --metrics-listen")


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise InvalidInput(INSTALL_HINT) from None
    return prometheus_client


def metrics_address(listen: str) -> tuple[str, int]:
    """`PORT`, `:PORT` or `HOST:PORT`; no host means loopback."""
    host, sep, port = listen.strip().rpartition(":")
    if not sep:
        host, port = "", listen.strip()
    try:
        number = int(port)
    except ValueError:
        raise InvalidInput(f"--metrics-listen {listen!r}: give HOST:PORT or PORT (e.g. 127.0.0.1:9311)") from None
    if not 0 <= number <= 65535:
        raise InvalidInput(f"--metrics-listen {listen!r}: port {number} is not between 0 and 65535")
    return (host.strip("[]") or "127.0.0.1"), number


def check_metrics_policy(settings: AgentSettings) -> None:
    """The gRPC port's rule: beyond loopback only with TLS (HTTPS with the agent's certificate), or --insecure."""
    host, port = metrics_address(settings.metrics_listen)
    tls = settings.tls_cert is not None and settings.tls_key is not None
    if tls or is_loopback(f"{host}:{port}") or host in LOOPBACK_HOSTS:
        return
    if not settings.insecure:
        raise InvalidInput(
            f"refusing to serve metrics on {host}:{port} without TLS; pass --tls-cert and --tls-key (then /metrics "
            "is HTTPS, with client certificates required when --tls-ca is given), listen on 127.0.0.1, or pass "
            "--insecure to let anyone who reaches the port read them")
    log.warning("serving metrics on %s:%s without TLS (--insecure)", host, port)


class AgentMetrics:
    """The agent's metrics and the HTTP(S) server that exposes them."""

    def __init__(self, service: Any) -> None:
        pc = _prometheus()

        self.service = service
        self.registry = r = pc.CollectorRegistry()
        self.rpcs = pc.Counter("deploy_agent_rpcs", "gRPC calls answered, by method and status code",
                               ["method", "code"], registry=r)
        self.rpc_seconds = pc.Histogram("deploy_agent_rpc_duration_seconds", "gRPC call duration, by method",
                                        ["method"], buckets=RPC_BUCKETS, registry=r)
        self.builds = pc.Counter("deploy_agent_builds", "Segment engine builds (Build), by backend and result "
                                 "(built, failed)", ["backend", "result"], registry=r)
        self.build_seconds = pc.Histogram("deploy_agent_build_duration_seconds", "Parse + build seconds of each "
                                          "built segment engine, by backend", ["backend"], buckets=BUILD_BUCKETS,
                                          registry=r)
        self.cache_hits = pc.Counter("deploy_agent_engine_cache_hits", "Segments of a Build found in the engine "
                                     "cache", ["backend"], registry=r)
        self.cache_misses = pc.Counter("deploy_agent_engine_cache_misses", "Segments of a Build not in the engine "
                                       "cache", ["backend"], registry=r)
        self.upload_bytes = pc.Counter("deploy_agent_upload_received_bytes", "Upload payload bytes received",
                                       registry=r)
        self.uploads = pc.Counter("deploy_agent_uploads", "Upload calls, by result (ok, failed)", ["result"],
                                  registry=r)
        self.upload_resumes = pc.Counter("deploy_agent_upload_resumes", "Uploads that resumed at a committed "
                                         "offset above 0", registry=r)
        self.upload_failures = pc.Counter("deploy_agent_upload_failures", "Upload calls that failed, by status "
                                          "code", ["code"], registry=r)
        self.bench_latency = pc.Gauge("deploy_agent_benchmark_latency_seconds", "Latency of the last benchmark, "
                                      "by statistic", ["stat"], registry=r)
        self.bench_throughput = pc.Gauge("deploy_agent_benchmark_throughput", "Inferences per second of the last "
                                         "benchmark", registry=r)
        self.model_activations = pc.Counter("deploy_agent_model_activations", "Model activations, by name and "
                                            "result (ok, refused: the gate failed, health_failed: rolled back)",
                                            ["name", "result"], registry=r)
        self.model_rollbacks = pc.Counter("deploy_agent_model_rollbacks", "Model rollbacks, by name and reason "
                                          "(request, health, restart, deactivate)", ["name", "reason"], registry=r)
        pc.ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        r.register(_ScrapeCollector(service))
        self.httpd: Any = None
        self.scheme = "http"
        models = getattr(service, "models", None)
        if models is not None:
            for event in models.events_at_start:  # rollbacks of activations pending at start
                self.model_event(event)
            models.repo.observe(self.model_event)

    # ---------------------------------------------------------------- the server
    def serve(self, settings: AgentSettings) -> str:
        """Start serving /metrics; returns its URL (port 0 picks a free one)."""
        pc = _prometheus()
        host, port = metrics_address(settings.metrics_listen)
        tls: dict[str, Any] = {}
        if settings.tls_cert is not None and settings.tls_key is not None:
            tls = {"certfile": str(settings.tls_cert), "keyfile": str(settings.tls_key)}
            if settings.tls_ca is not None:
                tls.update(client_cafile=str(settings.tls_ca), client_auth_required=True)
            self.scheme = "https"
        try:
            self.httpd, _thread = pc.start_http_server(port, addr=host, registry=self.registry, **tls)
        except OSError as exc:
            raise InvalidInput(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        shown = f"[{host}]" if ":" in host else host
        url = f"{self.scheme}://{shown}:{self.httpd.server_port}/metrics"
        log.info("metrics on %s", url, extra={"fields": {"event": "metrics_listening", "url": url}})
        return url

    def stop(self) -> None:
        models = getattr(self.service, "models", None)
        if models is not None:
            models.repo.unobserve(self.model_event)
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    # ---------------------------------------------------------------- what passes through the service
    def build_event(self, ev: Any) -> None:
        if ev.WhichOneof("event") != "segment":
            return
        seg = ev.segment
        stage = type(seg).Stage.Name(seg.stage)
        backend = seg.backend or "unknown"
        if stage == "CACHE_HIT":
            self.cache_hits.labels(backend).inc()
        elif stage == "CACHE_MISS":
            self.cache_misses.labels(backend).inc()
        elif stage == "BUILT":
            self.builds.labels(backend, "built").inc()
            self.build_seconds.labels(backend).observe(seg.parse_s + seg.build_s)
        elif stage == "FAILED":
            self.builds.labels(backend, "failed").inc()

    def upload_message(self, msg: Any) -> None:
        kind = msg.WhichOneof("msg")
        if kind == "chunk":
            self.upload_bytes.inc(len(msg.chunk))
        elif kind == "header" and msg.header.offset > 0:
            self.upload_resumes.inc()

    def benchmark_event(self, ev: Any) -> None:
        if ev.WhichOneof("event") != "result":
            return
        lat = ev.result.latency
        for stat in BENCH_STATS:
            self.bench_latency.labels(stat).set(getattr(lat, f"{stat}_ms") / 1000.0)
        self.bench_throughput.set(lat.throughput)

    def model_event(self, ev: Any) -> None:
        """A `models.ModelEvent`: an activation (ok, refused, health_failed) or a rollback (by its reason)."""
        if ev.kind == "activation":
            self.model_activations.labels(ev.name, ev.outcome).inc()
        elif ev.kind == "rollback":
            self.model_rollbacks.labels(ev.name, ev.outcome).inc()

    def call_ended(self, method: str, code: str, seconds: float) -> None:
        self.rpcs.labels(method, code).inc()
        self.rpc_seconds.labels(method).observe(seconds)
        if method == "Upload":
            self.uploads.labels("ok" if code == "OK" else "failed").inc()
            if code != "OK":
                self.upload_failures.labels(code).inc()


class _ScrapeCollector:
    """Gauges read when Prometheus scrapes: store free bytes, engine cache size and entries, evictions, facts."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def describe(self) -> list:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        from .info import disk_free

        svc = self.service
        yield GaugeMetricFamily("deploy_agent_store_free_bytes", "Free bytes on the store's filesystem",
                                value=disk_free(svc.store.root))
        cache = getattr(svc.engines, "cache", None)
        if cache is not None:
            entries = cache.list()
            yield GaugeMetricFamily("deploy_agent_engine_cache_bytes", "Bytes of engines in the cache",
                                    value=sum(e.size for e in entries))
            yield GaugeMetricFamily("deploy_agent_engine_cache_entries", "Engines in the cache", value=len(entries))
            yield GaugeMetricFamily("deploy_agent_engine_cache_limit_bytes", "--cache-max-bytes (0: unbounded)",
                                    value=cache.max_bytes)
            yield CounterMetricFamily("deploy_agent_engine_cache_evictions", "Engines removed to keep the cache "
                                      "within --cache-max-bytes", value=getattr(cache, "evictions", 0))
        trust = getattr(svc, "trust", None)
        if trust is not None:  # device_agent/trust.py: what the fleet's signatures did not vouch for
            refused = CounterMetricFamily("deploy_agent_trust_refusals", "Bundles and engines refused by signature "
                                          "verification, by what (bundle, engine) and reason", labels=["what", "reason"])
            for (what, reason), count in sorted(trust.refusals.items()):
                refused.add_metric([what, reason], count)
            yield refused
        yield InfoMetricFamily("deploy_agent_device", "What the agent reports about its device (GetInfo)",
                               value=device_labels(svc))
        models = getattr(svc, "models", None)
        if models is not None:
            active = GaugeMetricFamily("deploy_agent_model_active_version", "The active version of each model name "
                                       "(0: none active)", labels=["name"])
            for name in models.repo.names():
                try:
                    version = models.repo.state(name).active
                except DeployError:  # an unreadable state.json: ListModels says why; the scrape goes on
                    continue
                active.add_metric([name], float(version or 0))
            yield active


def device_labels(service: Any) -> dict[str, str]:
    """The device facts as labels of `deploy_agent_device_info`; backends once probed (empty before)."""
    facts, settings = service.facts, service.settings
    gpu = facts.gpus[0] if facts.gpus else None
    labels = {"hostname": facts.hostname, "arch": facts.arch, "agent_version": facts.agent_version,
              "profile": settings.profile, "jetson_model": facts.jetson_model or "",
              "l4t_release": facts.l4t_release or "", "cuda_version": facts.cuda_version or "",
              "gpu": gpu.name if gpu else "", "compute_capability": gpu.compute_capability if gpu else "",
              "default_backend": settings.backend}
    engines = service.engines
    probes = getattr(engines, "_probes", None) if engines is not None else None
    for p in probes or ():
        if p.available and p.name in ("tensorrt", "trtexec", "onnxruntime"):
            labels.setdefault(f"{p.name}_version", p.version)
    return {k: str(v) for k, v in labels.items()}


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts every call of the service (code, seconds) and watches the messages that move other counters."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or not details.method.startswith(PREFIX):
            return handler
        method = details.method[len(PREFIX):]
        m = self.metrics
        on_response: Optional[Callable[[Any], None]] = {"Build": m.build_event,
                                                        "Benchmark": m.benchmark_event}.get(method)

        def around(call: Callable[[], Any], context: Any, streaming: bool) -> Any:
            if streaming:
                return stream(call, context)
            return timed(call, lambda started, failed: m.call_ended(method, call_code(context, failed),
                                                                    time.perf_counter() - started))

        def stream(call: Callable[[], Any], context: Any) -> Iterator[Any]:
            started, failed = time.perf_counter(), True
            try:
                for msg in call():
                    if on_response is not None:
                        _safely(on_response, msg)
                    yield msg
                failed = False
            finally:
                m.call_ended(method, call_code(context, failed), time.perf_counter() - started)

        wrapped = wrap_handler(handler, around)
        if method == "Upload":  # count the chunks as they arrive, before the store sees them
            inner = wrapped.stream_unary

            def upload(request_iterator: Iterator[Any], context: Any) -> Any:
                return inner(_watched(request_iterator, m.upload_message), context)

            wrapped = grpc.stream_unary_rpc_method_handler(upload, handler.request_deserializer,
                                                           handler.response_serializer)
        return wrapped


def _watched(messages: Iterator[Any], see: Callable[[Any], None]) -> Iterator[Any]:
    for msg in messages:
        _safely(see, msg)
        yield msg


def _safely(fn: Callable[[Any], None], msg: Any) -> None:
    try:
        fn(msg)
    except Exception:  # noqa: BLE001 - a metrics slip must never fail a call
        log.exception("metrics: could not count a message")
