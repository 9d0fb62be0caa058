"""Fleet engine-cache warming: build once per device class, copy the engines to the rest of the class.

Building a TensorRT engine takes minutes on a Jetson; every device of one class (same backend version, GPU,
L4T, profile) would build the same bytes. So per class one healthy device builds, the host fetches its
engines once (digest checked) and puts them on every other device of the class, whose agent checks again
that the engine's class is its own. Devices that already hold the engines are skipped after one listing;
a device that cannot be reached is reported and simply gets its engines on the next run.
"""
from __future__ import annotations

import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import grpc

from device_agent import __version__ as host_version_text
from device_agent.archive import archive_digest, read_manifest_from_archive
from device_agent.bundle import Bundle
from device_agent.errors import BuildFailed, InvalidInput, PreconditionFailed, ResourceExhausted
from device_agent.manifest import Manifest
from host.client.agent import AgentClient, upload_timeout
from host.client.errors import AgentError
from host.fleet import engine_fetch
from host.fleet.classes import DeviceClass, classify, group
from host.fleet.engine_fetch import bare
from host.fleet.fanout import (DEFAULT_CONCURRENCY, Limiter, NotStarted, RetryPolicy, fan_out, first_line,
                               is_unreachable, retrying)
from host.fleet.states import failure_state, short_state
from host.fleet.timing import TimingCopy
from host.fleet.timing import fetch as fetch_timing
from host.fleet.timing import put as put_timing
from host.inventory import Device
from host.pipeline.build_stream import BuildHooks, build_bundle
from host.pipeline.build_stream import progress_text  # what push's live view shows for the same event
from host.pipeline.observer import SegmentState
from protos import agent_pb2

FETCH_CHUNK_BYTES = 1024 * 1024
PROGRESS_EVERY_S = 2.0  # at most one build_progress event per builder this often (a new segment or phase: at once)


# ---------------------------------------------------------------- results


@dataclass
class Failure:
    device: str
    reason: str
    unreachable: bool = False
    state: str = ""  # the short state of host.fleet.states: "down: refused", "failed: build", ...
    request_id: str = ""  # of the failed call, as the device's agent logged it

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "reason": self.reason, "unreachable": self.unreachable,
                "state": self.state or ("down: unreachable" if self.unreachable else "failed"),
                "request_id": self.request_id or None}


@dataclass
class ClassResult:
    """What happened to one device class."""

    device_class: DeviceClass
    devices: list[str]
    bundle_digest: str = ""
    built_on: Optional[str] = None
    source: Optional[str] = None          # the device the engines were copied from
    copied_to: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # already warm
    failed: list[Failure] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)  # the run stopped first (--max-failures)
    builds: int = 0
    build_s: float = 0.0                  # the builder's own parse + build seconds
    engines: list[str] = field(default_factory=list)
    timing_cache: Optional[str] = None    # digest of the builder's timing cache, if it had one
    timing_copied_to: list[str] = field(default_factory=list)
    timing_refused: dict[str, str] = field(default_factory=dict)  # device -> why its agent refused it
    published: Optional[str] = None       # the engines artifact's tag, when a registry was given
    plan_error: Optional[BaseException] = field(default=None, repr=False)  # no bundle could be made

    @property
    def unreachable(self) -> list[str]:
        return [f.device for f in self.failed if f.unreachable]

    @property
    def failed_or_not_started(self) -> set[str]:
        """Devices already settled as not warmed: nothing more is tried on them, and none is reported twice."""
        return {f.device for f in self.failed} | set(self.not_started)

    @property
    def warm(self) -> list[str]:
        done = set(self.copied_to) | set(self.skipped) | ({self.built_on} if self.built_on else set())
        return [d for d in self.devices if d in done]

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.device_class.label,
            "facts": self.device_class.to_dict(),
            "devices": list(self.devices),
            "bundle_digest": self.bundle_digest,
            "built_on": self.built_on,
            "source": self.source,
            "copied_to": list(self.copied_to),
            "skipped": list(self.skipped),
            "unreachable": self.unreachable,
            "failed": [f.to_dict() for f in self.failed],
            "not_started": list(self.not_started),
            "builds": self.builds,
            "build_s": round(self.build_s, 3),
            "engines": list(self.engines),
            "timing_cache": {"digest": self.timing_cache, "copied_to": list(self.timing_copied_to),
                             "refused": dict(self.timing_refused)},
            "published": self.published,
        }


MOVED_KEYS = ("bytes_total", "bytes_sent", "parts_total", "parts_sent")


@dataclass
class WarmResult:
    classes: list[ClassResult] = field(default_factory=list)
    unreachable: list[Failure] = field(default_factory=list)   # not even queried: class unknown
    wall_s: float = 0.0
    stopped: Optional[str] = None  # why devices were left not started (--max-failures), or None
    # what moved to devices as bundles (host/client/parts.py): the bundles' bytes and parts, what travelled
    moved: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MOVED_KEYS, 0))

    @property
    def builds(self) -> int:
        return sum(c.builds for c in self.classes)

    @property
    def build_s(self) -> float:
        return sum(c.build_s for c in self.classes)

    @property
    def ok(self) -> bool:
        return not self.unreachable and all(not c.failed_or_not_started for c in self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": [c.to_dict() for c in self.classes],
            "builds": self.builds,
            "build_s": round(self.build_s, 3),
            "unreachable": [f.to_dict() for f in self.unreachable],
            "wall_s": round(self.wall_s, 3),
            "stopped": self.stopped,
            "ok": self.ok,
            **self.moved,
        }


@dataclass
class WarmEvent:
    """Progress, for the CLI's status lines and for tests that act at a given moment."""

    kind: str            # queried, unreachable, skipped, uploading, building, build_started, build_progress,
    device: str          # built, builder_lost, fetched, copied, failed, not_started, retrying
    device_class: Optional[DeviceClass] = None
    detail: str = ""


@dataclass
class ClassPlan:
    """What to put on a class: the bundle archive and the build options (the same a `deploy push` would use)."""

    archive: Path
    options: agent_pb2.BuildOptions = field(default_factory=agent_pb2.BuildOptions)
    bundle_dir: Optional[Path] = None  # the bundle's directory: it goes to each device as parts (host/client/parts.py)


EventFn = Callable[[WarmEvent], None]
#: The plan for a class, given one of its devices (compiling if need be); raises DeployError when it cannot.
PlanFor = Callable[[DeviceClass, agent_pb2.DeviceInfo, Device], ClassPlan]


# ---------------------------------------------------------------- the algorithm


@dataclass
class _Member:
    device: Device
    info: agent_pb2.DeviceInfo

    @property
    def name(self) -> str:
        return self.device.name or self.device.address


@dataclass
class _Bundle:
    path: Path
    digest: str
    manifest: Manifest
    options: agent_pb2.BuildOptions
    bundle_dir: Optional[Path] = None  # set: sent as parts, `digest` is the manifest's; None: the archive's

    @property
    def segment_digests(self) -> list[str]:
        return [s.digest for s in self.manifest.segments]


def failure_bound(spec: Optional[str], devices: int) -> Optional[int]:
    """`--max-failures N` or `P%` (of the devices in the run, rounded down) as a count; None: no bound."""
    if spec is None or str(spec).strip() == "":
        return None
    text = str(spec).strip()
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if not 0 <= percent <= 100:
                raise ValueError
            return int(devices * percent / 100.0)
        count = int(text)
        if count < 0:
            raise ValueError
        return count
    except ValueError:
        raise InvalidInput(f"--max-failures {text!r}: give a count (e.g. 3) or a percentage of the devices "
                           "(e.g. 10%)") from None


class Warmer:
    """One `warm` run over a set of devices; `run()` returns the result, failures included.

    `retry_for`: each device's calls are retried this long after it went away (0, the default: not at all; the CLI
    passes --retry-for). `max_failures` ("N" or "P%"): once more devices than that have failed, no new device is
    started (in-flight ones finish); the rest are reported `not_started`. A failed device keeps what it had: its
    cache and store are only ever added to, and each addition is atomic.
    """

    def __init__(self, devices: Sequence[Device], plan_for: PlanFor, *,
                 concurrency: int = DEFAULT_CONCURRENCY, policy: Optional[RetryPolicy] = None,
                 on_event: Optional[EventFn] = None, workdir: Optional[Path] = None, retry_for: float = 0.0,
                 max_failures: Optional[str] = None,
                 client_for: Optional[Callable[[Device], AgentClient]] = None) -> None:
        names = [d.name or d.address for d in devices]
        if len(set(names)) != len(names):
            raise ValueError("device names must be unique")
        self.devices = list(devices)
        self.plan_for = plan_for
        self.concurrency = max(1, int(concurrency))
        self.limiter = Limiter(self.concurrency)
        self.policy = policy or RetryPolicy()
        self.on_event = on_event
        self.workdir = workdir
        self.retry_for = retry_for
        self.max_failures = None if max_failures is None else str(max_failures)
        self.bound = failure_bound(self.max_failures, len(self.devices))
        self._failed_devices: set[str] = set()
        self._clients: dict[str, AgentClient] = {}
        # the caller's clients (a rollout goes on with the same channels after warming); it closes them
        self._client_for = client_for
        self._lock = threading.Lock()
        self._manifests: dict[Path, tuple[str, Manifest]] = {}
        self.bytes_sent = 0  # payload bytes the host sent (bundles, engines), for scripts/bench/fleet.py
        self.moved = dict.fromkeys(MOVED_KEYS, 0)  # bundles sent to devices: totals against what travelled

    # -- plumbing
    def _emit(self, kind: str, device: str, cls: Optional[DeviceClass] = None, detail: str = "") -> None:
        if self.on_event is not None:
            self.on_event(WarmEvent(kind, device, cls, detail))

    def _client(self, device: Device) -> AgentClient:
        if self._client_for is not None:
            return self._client_for(device)
        name = device.name or device.address
        with self._lock:
            if name not in self._clients:
                self._clients[name] = AgentClient(
                    device, retry_for=self.retry_for,
                    on_retry=lambda line, n=name: self._emit("retrying", n, None, line))
            return self._clients[name]

    # -- the failure bound
    def _note_failure(self, name: str) -> None:
        with self._lock:
            self._failed_devices.add(name)

    def _stopped(self) -> Optional[str]:
        """Why no new device may start, or None."""
        if self.bound is None:
            return None
        with self._lock:
            failed = len(self._failed_devices)
        if failed <= self.bound:
            return None
        return (f"not started: {failed} device(s) failed, more than --max-failures {self.max_failures}"
                + (f" ({self.bound} of {len(self.devices)})" if self.max_failures and
                   self.max_failures.endswith("%") else ""))

    def _noted(self, out: Any) -> None:
        """fan_out's on_done: a device whose step failed counts against the bound at once."""
        if out.error is not None and not isinstance(out.error, NotStarted):
            self._note_failure(out.item.name)

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def _bundle(self, cls: DeviceClass, first: _Member) -> _Bundle:
        plan = self.plan_for(cls, first.info, first.device)
        path = Path(plan.archive)
        with self._lock:
            if path not in self._manifests:
                self._manifests[path] = (archive_digest(path), read_manifest_from_archive(path))
            digest, manifest = self._manifests[path]
        if plan.bundle_dir is not None:  # by parts (and through a registry, as part layers): the manifest's digest
            return _Bundle(path, Bundle.open(plan.bundle_dir).manifest_digest, manifest, plan.options,
                           plan.bundle_dir)
        return _Bundle(path, digest, manifest, plan.options)

    # -- the run
    def run(self) -> WarmResult:
        started = time.perf_counter()
        result = WarmResult()
        try:
            queried = fan_out(self.devices, lambda d: self._client(d).info(), concurrency=self.concurrency,
                              policy=self.policy)
            members: list[tuple[_Member, DeviceClass]] = []
            for out in queried:
                name = out.item.name or out.item.address
                if out.ok:
                    member = _Member(out.item, out.value)
                    members.append((member, classify(out.value, out.item)))
                    self._emit("queried", name, members[-1][1])
                else:
                    result.unreachable.append(Failure(name, first_line(out.error), is_unreachable(out.error),
                                                      short_state(out.error),
                                                      getattr(out.error, "request_id", "")))
                    self._note_failure(name)
                    self._emit("unreachable", name, None, first_line(out.error))
            grouped = group(members)
            with ThreadPoolExecutor(max_workers=max(1, len(grouped)), thread_name_prefix="warm-class") as pool:
                result.classes = list(pool.map(lambda kv: self._warm_class(kv[0], kv[1]), grouped.items()))
        finally:
            self.close()
        if any(c.not_started for c in result.classes):
            result.stopped = self._stopped()
        result.wall_s = time.perf_counter() - started
        result.moved = dict(self.moved)
        return result

    def _warm_class(self, cls: DeviceClass, members: list[_Member]) -> ClassResult:
        res = ClassResult(cls, [m.name for m in members])
        try:
            bundle = self._bundle(cls, members[0])
        except Exception as exc:  # noqa: BLE001 - a compile error fails this class, not the whole fleet
            res.plan_error = exc
            res.failed = [Failure(m.name, f"no bundle for this class: {first_line(exc)}", state="failed: compile")
                          for m in members]
            return res
        res.bundle_digest = bundle.digest
        # 1. one query per device: which engines it holds (and whether it has the bundle)
        states = fan_out(members, lambda m: self._held(m, cls, bundle), limiter=self.limiter,
                         concurrency=self.concurrency, policy=self.policy, stopped=self._stopped,
                         on_done=self._noted)
        pending: list[_Member] = []
        holders: dict[str, dict[str, agent_pb2.EngineEntry]] = {}
        for out in states:
            m = out.item
            if not out.ok:
                self._fail(res, m.name, out.error, "query")
                continue
            engines, has_bundle = out.value
            if engines is not None:
                holders[m.name] = engines
            if engines is not None and has_bundle:
                res.skipped.append(m.name)
                self._emit("skipped", m.name, cls, "already warm")
            else:
                pending.append(m)
        if not pending:
            res.engines = sorted({e.key for engines in holders.values() for e in engines.values()})
            return res
        # 2. a source of engines: a device that holds them already, else one build on the best builder;
        #    meanwhile the bundle goes to the devices that will only receive engines (a build takes minutes)
        size = bundle.path.stat().st_size
        candidates = sorted(pending, key=lambda m: (m.info.store_free_bytes < 2 * size,
                                                    -m.info.memory_available_bytes, m.name))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm-upload") as background:
            uploads = None
            if not holders:
                uploads = background.submit(fan_out, candidates[1:], lambda m: self._send_bundle(m, bundle),
                    limiter=self.limiter,
                    concurrency=self.concurrency, policy=self.policy, stopped=self._stopped,
                    on_done=self._noted)
            source, entries = self._source(res, bundle, holders, members, candidates, uploads)
        if uploads is not None:
            self._record_uploads(res, uploads)
        if source is None:
            return res
        res.source = source.name
        res.engines = [e.key for e in entries]
        done = res.failed_or_not_started | ({source.name} if source.name == res.built_on else set())
        pending = [m for m in pending if m.name not in done]
        # 3. fetch once, put everywhere else
        with tempfile.TemporaryDirectory(prefix="deploy-warm-", dir=self.workdir) as tmp:
            try:
                plans = [self._fetch(source, entry, Path(tmp)) for entry in entries]
            except Exception as exc:  # noqa: BLE001 - reported per device below
                for m in pending:
                    self._fail(res, m.name, exc, f"fetching engines from {source.name}")
                return res
            self._emit("fetched", source.name, cls, f"{len(plans)} engine(s)")
            try:
                timing = fetch_timing(self._client(source.device), cls.backend)
            except Exception as exc:  # noqa: BLE001 - a speed-up only: the engines still move
                timing = None
                self._emit("timing_cache_failed", source.name, cls, first_line(exc))
            res.timing_cache = timing.info.digest if timing else None
            try:
                self._publish(res, bundle, plans, timing)
            except Exception as exc:  # noqa: BLE001 - reported per device below
                for m in pending:
                    self._fail(res, m.name, exc, "publish")
                return res
            copies = fan_out(pending, lambda m: self._copy(m, cls, bundle, plans, holders.get(m.name, {}),
                                                           timing, res),
                             limiter=self.limiter, concurrency=self.concurrency, policy=self.policy,
                             stopped=self._stopped, on_done=self._noted)
        for out in copies:
            if out.ok:
                res.copied_to.append(out.item.name)
            else:
                self._fail(res, out.item.name, out.error, "copy")
        return res

    def _record_uploads(self, res: ClassResult, uploads: Future) -> None:
        """The background uploads' failures into `res` (once each), waiting for them to end."""
        for out in uploads.result():
            if not out.ok and out.item.name not in res.failed_or_not_started and out.item.name != res.built_on:
                self._fail(res, out.item.name, out.error, "upload")

    def _fail(self, res: ClassResult, name: str, exc: BaseException, stage: str) -> None:
        if isinstance(exc, NotStarted):
            if name not in res.not_started:
                res.not_started.append(name)
                self._emit("not_started", name, res.device_class, str(exc))
            return
        self._note_failure(name)
        unreachable = is_unreachable(exc)
        reason = f"{stage}: {'unreachable: ' if unreachable else ''}{first_line(exc)}"
        res.failed.append(Failure(name, reason, unreachable, failure_state(exc, stage),
                                  getattr(exc, "request_id", "")))
        self._emit("failed", name, res.device_class, reason)

    # -- steps
    def _state(self, m: _Member, cls: DeviceClass,
               bundle: _Bundle) -> tuple[Optional[dict[str, agent_pb2.EngineEntry]], bool]:
        """(engines by segment digest if it holds one for every segment, else None; has the bundle)."""
        client = self._client(m.device)
        found = engine_fetch.select(client.list_engines().engines, bundle.segment_digests, cls.backend,
                                    cls.backend_version, engine_fetch.precision_of(bundle.options))
        if not found.complete:
            return None, False
        return found.found, client.query_upload(bundle.digest).complete

    def _held(self, m: _Member, cls: DeviceClass,
              bundle: _Bundle) -> tuple[Optional[dict[str, agent_pb2.EngineEntry]], bool]:
        """`_state`; and where the device holds everything while this host signs, its manifest sent again with the
        fleet's metadata: an agent given its trust root after it got the bundle never verified it and would refuse
        to use it, though it holds every byte (send_bundle sends a held manifest anew when it carries metadata)."""
        from host.security.signing import keys_present

        engines, has_bundle = self._state(m, cls, bundle)
        if engines is not None and has_bundle and bundle.bundle_dir is not None and keys_present():
            self._send_bundle(m, bundle)
        return engines, has_bundle

    def _source(self, res: ClassResult, bundle: _Bundle, holders: dict[str, dict[str, agent_pb2.EngineEntry]],
                members: list[_Member], candidates: list[_Member],
                uploads: Optional[Future]) -> tuple[Optional[_Member], list[agent_pb2.EngineEntry]]:
        by_name = {m.name: m for m in members}
        for name in res.skipped + sorted(holders):
            if name in holders:
                return by_name[name], [holders[name][bare(d)] for d in bundle.segment_digests]
        for n, builder in enumerate(candidates):
            if n and uploads is not None:
                uploads.result()  # a replacement builder must not race the background upload to it
            try:
                entries = self._build(res, builder, bundle)
            except Exception as exc:  # noqa: BLE001
                if isinstance(exc, NotStarted):
                    if uploads is not None:  # a device whose upload failed failed; it was not "not started"
                        self._record_uploads(res, uploads)
                    for m in candidates[n:]:
                        if m.name not in res.failed_or_not_started:
                            self._fail(res, m.name, exc, "build")
                    return None, []
                if _out_of_resources(exc):  # this device's disk or memory, not the model: try another
                    self._fail(res, builder.name, exc, "builder out of resources")
                    continue
                if self._alive(builder):
                    # the device is fine, the build is not: another device of the class would fail alike
                    for m in candidates:
                        if m.name not in res.failed_or_not_started:
                            why = "" if m is builder else f" (on {builder.name})"
                            self._fail(res, m.name, exc, "build" + why)
                    return None, []
                self._fail(res, builder.name, exc, "builder lost")
                self._emit("builder_lost", builder.name, res.device_class, first_line(exc))
                continue
            res.built_on = builder.name
            return builder, entries
        return None, []

    def _alive(self, m: _Member) -> bool:
        """One GetInfo without retries: the build's own calls already had the whole retry window."""
        try:
            with AgentClient(m.device) as client:
                client.info(timeout=5.0)
            return True
        except Exception:  # noqa: BLE001
            return False

    def _build(self, res: ClassResult, builder: _Member, bundle: _Bundle) -> list[agent_pb2.EngineEntry]:
        """Upload and build on `builder`; the entries of the engines it now holds for the bundle's segments."""
        with self.limiter:
            why = self._stopped()  # checked once this builder has its turn
            if why:
                raise NotStarted(why)
            try:
                return self._build_in_slot(res, builder, bundle)
            except Exception:
                # counted before the slot is free, so with one slot no device starts once the bound is passed
                self._note_failure(builder.name)
                raise

    def _build_in_slot(self, res: ClassResult, builder: _Member, bundle: _Bundle) -> list[agent_pb2.EngineEntry]:
        cls = res.device_class
        self._emit("uploading", builder.name, cls, bundle.digest)
        retrying(lambda: self._send_bundle(builder, bundle), self.policy)
        self._emit("building", builder.name, cls, bundle.digest)
        progress = _ProgressLimiter(lambda text: self._emit("build_progress", builder.name, cls, text))
        started: list[str] = []

        def segment(_state: SegmentState, seg: agent_pb2.SegmentEvent) -> None:
            if not started:
                started.append(seg.segment_id)
                self._emit("build_started", builder.name, cls, seg.segment_id)
            if seg.stage == agent_pb2.SegmentEvent.PROGRESS:
                progress.event(seg)

        def resend(exc: AgentError) -> None:  # the builder's disk changed its copy of the bundle; the agent dropped it
            nonlocal progress
            self._emit("retrying", builder.name, cls, f"{first_line(exc)}; sending the bundle again")
            started.clear()
            progress = _ProgressLimiter(progress.emit)
            retrying(lambda: self._send_bundle(builder, bundle), self.policy)

        streamed = build_bundle(self._client(builder.device), bundle.digest, bundle.options,
                                BuildHooks(segment=segment, resend=resend), device=builder.name)
        if streamed.built:
            res.builds += 1
            res.build_s += streamed.built_s
        self._emit("built", builder.name, cls, f"{streamed.built} segment(s) built in {streamed.built_s:.2f} s")
        (found, _has), _attempts = retrying(lambda: self._state(builder, cls, bundle), self.policy)
        if found is None:
            raise BuildFailed(f"{builder.name} built the bundle but lists no engine for every segment; "
                              "is its engine cache too small (cache_max_bytes)?")
        return [found[bare(d)] for d in bundle.segment_digests]

    def _send_bundle(self, m: _Member, bundle: _Bundle) -> None:
        """The bundle onto one device: the parts it lacks (host/fleet/via_registry.py: through the registry)."""
        from host.security.signing import metadata_for

        client = self._client(m.device)
        if bundle.bundle_dir is None:
            summary = client.upload(bundle.path, digest=bundle.digest, kind="bundle", trust=metadata_for(bundle.path))
            self._count(summary.bytes_sent)
            self._moved(summary.size, summary.bytes_sent, 1, int(summary.bytes_sent > 0))
            return
        from host.client.parts import NoParts, send_bundle

        try:
            parts = send_bundle(client, bundle.bundle_dir, trust=metadata_for(bundle.bundle_dir))  # signed by parts
        except NoParts:
            raise PreconditionFailed(
                f"the agent of {m.name} (deploy-agent {m.info.agent_version}) predates bundles by parts, which "
                f"this host (deploy {host_version_text}) sends to a fleet; upgrade it (deploy agent install "
                "USER@HOST) or warm through a registry (--via-registry)") from None
        self._count(parts.bytes_sent)
        self._moved(parts.bytes_total, parts.bytes_sent, parts.parts_total, parts.parts_sent)

    def _moved(self, bytes_total: int, bytes_sent: int, parts_total: int, parts_sent: int) -> None:
        with self._lock:
            for key, n in zip(MOVED_KEYS, (bytes_total, bytes_sent, parts_total, parts_sent)):
                self.moved[key] += n

    def _publish(self, res: ClassResult, bundle: _Bundle, plans: list[tuple[agent_pb2.EngineEntry, Path]],
                 timing: Optional[TimingCopy] = None) -> None:
        """Hook once a class's engines (and timing cache) are on the host; the registry paths publish them here."""

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n

    def _fetch(self, source: _Member, entry: agent_pb2.EngineEntry, tmp: Path) -> tuple[agent_pb2.EngineEntry, Path]:
        """One engine from `source` to a host file (host/fleet/engine_fetch.py: capped, digest-checked, retried)."""
        with self.limiter:
            return engine_fetch.fetch(self._client(source.device), entry, tmp, source.name, self.policy)

    def _copy(self, m: _Member, cls: DeviceClass, bundle: _Bundle, plans: list[tuple[agent_pb2.EngineEntry, Path]],
              held: dict[str, agent_pb2.EngineEntry], timing: Optional[TimingCopy] = None,
              res: Optional[ClassResult] = None) -> int:
        """Bundle, every missing engine and the class's timing cache onto one device; returns the engines sent."""
        client = self._client(m.device)
        self._send_bundle(m, bundle)
        have = {e.key for e in held.values()}
        sent = 0
        for entry, path in plans:
            if entry.key in have:
                continue
            reply = client.put_engine(_chunks(entry, path), timeout=upload_timeout(path.stat().st_size))
            self._count(reply.bytes_received)
            sent += 1
        self._copy_timing(client, m, timing, res)
        self._emit("copied", m.name, cls, f"{sent} engine(s)")
        return sent

    @staticmethod
    def _copy_timing(client: AgentClient, m: _Member, timing: Optional[TimingCopy],
                     res: Optional[ClassResult]) -> None:
        """The class's timing cache onto one device of that class (over gRPC on both warm paths)."""
        if timing is None or res is None:
            return
        refused = put_timing(client, timing)  # list appends: atomic under the GIL across fan_out threads
        if refused:
            res.timing_refused[m.name] = refused
        else:
            res.timing_copied_to.append(m.name)


class _ProgressLimiter:
    """A builder's PROGRESS events as fleet events: a new segment or TensorRT phase at once, else at most one per
    PROGRESS_EVERY_S, so a fleet of heartbeating builds does not flood the terminal."""

    def __init__(self, emit: Callable[[str], None], every_s: float = 0.0) -> None:
        self.emit = emit
        self.every_s = every_s or PROGRESS_EVERY_S
        self._last = -float("inf")
        self._where: tuple[str, str] = ("", "")

    def event(self, seg: agent_pb2.SegmentEvent) -> None:
        now = time.monotonic()
        where = (seg.segment_id, seg.progress_phase if seg.progress_kind != "heartbeat" else "")
        if where == self._where and now - self._last < self.every_s:
            return
        self._where, self._last = where, now
        text = progress_text(seg)
        self.emit(f"{seg.segment_id} {text if where[1] else 'building ' + text}")


def _out_of_resources(exc: BaseException) -> bool:
    return isinstance(exc, ResourceExhausted) or (
        isinstance(exc, AgentError) and exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED)


def _chunks(entry: agent_pb2.EngineEntry, path: Path) -> Iterator[agent_pb2.EngineChunk]:
    yield agent_pb2.EngineChunk(entry=entry)
    with open(path, "rb") as f:
        while True:
            block = f.read(FETCH_CHUNK_BYTES)
            if not block:
                return
            yield agent_pb2.EngineChunk(chunk=block)


def warm(devices: Sequence[Device], plan_for: PlanFor, **kwargs: Any) -> WarmResult:
    """Warm the engine caches of `devices` with the bundle `plan_for` gives each class."""
    return Warmer(devices, plan_for, **kwargs).run()


def model_plans(source: Path, options: Any = None) -> PlanFor:
    """Plans that compile `source` (an ONNX model, bundle directory or archive) the way `deploy push` does.

    The target comes from the class's own GetInfo (`choose_target`), so a class with TensorRT 8.5 gets a bundle
    partitioned for 8.5; compiled bundles come from the host compile cache, so classes that share a target, and
    later runs, compile nothing. Compiles run one at a time: TVM is heavy, the host has few cores.
    """
    from host.pipeline.push import PushOptions, prepare
    from host.pipeline.target import choose_target

    opts = options if options is not None else PushOptions()
    lock = threading.Lock()

    def plan(cls: DeviceClass, info: agent_pb2.DeviceInfo, device: Device) -> ClassPlan:
        target = choose_target(info, device, opts.compile.profile, opts.compile.trt_version, opts.backend)
        with lock:
            prepared = prepare(Path(source), target, opts)
        return ClassPlan(Path(prepared.archive), opts.build_options(target), prepared.bundle_dir)

    return plan
