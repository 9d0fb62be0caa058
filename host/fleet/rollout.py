"""Fleet rollouts: a new version of a named model activated wave by wave, stopped and taken back when devices fail.

A rollout warms every device class first (`host.fleet.warm`: one build per class, engines copied), which changes
nothing a device serves. Then, wave by wave (cumulative counts or percentages of the fleet, classes interleaved so
each class meets the new version early), every device records the class's bundle as a new version of NAME (its
agent verifies it against the bundle's reference) and activates it (its agent runs its health command and takes
the switch back by itself when that fails). Past `--max-failures` no new device starts and every device the rollout
switched goes back to the version it had. Each step is written to the record (`host.fleet.rollout_db`) before it
is taken, so a rollout whose host died is finished or taken back by `--resume`, and a device found on the new
version after a crash is never switched a second time: a step found started is settled by asking the agent first.

With a registry (`--registry`), warming also publishes each class's bundle and engines (`PublishingWarmer`), and a
rollout whose forward pass ends within the failure bound (DONE or INCOMPLETE) then publishes each class's model
target (`publish_model_target`): agents polling the registry, which the host never calls, activate the version
themselves. They are the last wave: a rollout that stopped and took its devices back publishes nothing.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import grpc

from device_agent.archive import read_manifest_from_archive
from device_agent.errors import InvalidInput, PreconditionFailed
from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.fleet import rollout_db as rdb
from host.fleet.classes import DeviceClass
from host.fleet.fanout import DEFAULT_CONCURRENCY, first_line, is_unreachable
from host.fleet.rollout_db import RolloutDB, Step
from host.fleet.warm import ClassPlan, PlanFor, WarmEvent, Warmer, failure_bound, model_plans
from host.inventory import Device
from protos import agent_pb2

DEFAULT_WAVES = "1,10%,50%,100%"
DEFAULT_MAX_FAILURES = "0"
DEFAULT_HEALTH_TIMEOUT_S = 120.0


# ---------------------------------------------------------------- waves


@dataclass(frozen=True)
class WaveSpec:
    """One entry of `--waves`: a cumulative device count, or a cumulative percentage of the fleet."""

    value: float
    percent: bool

    def count(self, devices: int) -> int:
        """Devices covered once this wave is done (a percentage rounds up: 10% of 5 devices is 1, not 0)."""
        if not self.percent:
            return min(int(self.value), devices)
        return min(devices, math.ceil(devices * self.value / 100.0 - 1e-9))

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{int(self.value)}"


def parse_waves(spec: str) -> list[WaveSpec]:
    """`1,10%,50%,100%`: cumulative, increasing, ending at 100%; anything else is one InvalidInput line."""
    hint = "give cumulative counts or percentages that increase and end at 100%, e.g. 1,10%,50%,100%"
    parts = [p.strip() for p in str(spec).split(",")]
    if not parts or any(not p for p in parts):
        raise InvalidInput(f"--waves {spec!r}: an empty entry; {hint}")
    waves: list[WaveSpec] = []
    for p in parts:
        try:
            wave = WaveSpec(float(p[:-1]), True) if p.endswith("%") else WaveSpec(float(int(p)), False)
        except ValueError:
            raise InvalidInput(f"--waves {spec!r}: {p!r} is not a count or a percentage; {hint}") from None
        if wave.value <= 0 or (wave.percent and wave.value > 100):
            raise InvalidInput(f"--waves {spec!r}: {p!r} is out of range; {hint}")
        same_kind = [w for w in waves if w.percent == wave.percent]
        if same_kind and wave.value <= same_kind[-1].value:
            raise InvalidInput(f"--waves {spec!r}: {p} does not increase on {same_kind[-1]}; {hint}")
        waves.append(wave)
    if not (waves[-1].percent and waves[-1].value == 100):
        raise InvalidInput(f"--waves {spec!r}: the last wave must be 100% (every device); {hint}")
    return waves


def wave_sizes(waves: Sequence[WaveSpec], devices: int) -> list[int]:
    """Devices per wave for a fleet of `devices` (waves that add no device are dropped); InvalidInput when the
    cumulative counts go down for this fleet (e.g. `10,50%` over 12 devices)."""
    sizes: list[int] = []
    covered = 0
    for w in waves:
        n = w.count(devices)
        if n < covered:
            raise InvalidInput(f"--waves {','.join(map(str, waves))}: {w} is {n} of {devices} device(s), fewer "
                               f"than the {covered} before it; the waves must increase")
        if n > covered:
            sizes.append(n - covered)
            covered = n
    return sizes


def interleave(classes: Sequence[Sequence[str]]) -> list[str]:
    """Devices class by class in turn (the first of each class, then the second, ...), so early waves reach every
    class: a version that fails on one class stops at a small wave."""
    out: list[str] = []
    for i in range(max((len(c) for c in classes), default=0)):
        out += [c[i] for c in classes if i < len(c)]
    return out


# ---------------------------------------------------------------- options, events, the registry seam


@dataclass(frozen=True)
class RolloutOptions:
    waves: str = DEFAULT_WAVES
    max_failures: str = DEFAULT_MAX_FAILURES
    health_timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S
    concurrency: int = DEFAULT_CONCURRENCY
    max_rel_err: Optional[float] = None  # the agent's verify bound; None: `deploy push`'s default for the bundle
    tags: tuple[str, ...] = ()
    registry: Optional[str] = None  # [https://]HOST[:PORT]/REPO: publish each class's model target there at the end

    def to_dict(self) -> dict[str, Any]:
        return {"waves": self.waves, "max_failures": self.max_failures, "health_timeout_s": self.health_timeout_s,
                "concurrency": self.concurrency, "max_rel_err": self.max_rel_err, "tags": list(self.tags),
                "registry": self.registry}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RolloutOptions":
        return cls(str(d.get("waves", DEFAULT_WAVES)), str(d.get("max_failures", DEFAULT_MAX_FAILURES)),
                   float(d.get("health_timeout_s", DEFAULT_HEALTH_TIMEOUT_S)),
                   int(d.get("concurrency", DEFAULT_CONCURRENCY)), d.get("max_rel_err"), tuple(d.get("tags", ())),
                   d.get("registry") or None)


@dataclass
class RolloutEvent:
    """One progress event: a device step that ended (kind "step"), a wave starting, the stop, warming news."""

    kind: str                 # step, wave, warm, stopped, settled, publish
    device: str = ""
    wave: int = 0
    step: str = ""            # register, activate, rollback
    state: str = ""           # done, failed, unreachable
    version: Optional[int] = None
    previous: Optional[int] = None
    detail: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, "device": self.device or None, "wave": self.wave or None,
                "step": self.step or None, "state": self.state or None, "version": self.version,
                "previous": self.previous, "detail": self.detail or None, "seconds": round(self.seconds, 3)}

    def line(self) -> str:
        """The plain progress line the CLI prints on stderr."""
        if self.kind in ("rollout", "wave", "resume"):
            return self.detail
        if self.kind != "step":
            who = f" {self.device}" if self.device else ""
            return f"{self.kind}{who}: {self.detail}" if self.detail else f"{self.kind}{who}"
        what = ""
        if self.state == rdb.STEP_DONE and self.step == rdb.ROLLBACK:
            what = " back to " + ("no version" if self.version is None else f"version {self.version}")
        elif self.state == rdb.STEP_DONE and self.version is not None:
            was = "none" if self.previous is None else str(self.previous)
            what = f" version {self.version}" + (f" (was {was})" if self.step == rdb.ACTIVATE else "")
        detail = f": {self.detail}" if self.detail else ""
        wave = f"wave {self.wave} " if self.wave else ""
        return f"{wave}{self.device} {self.step} {self.state}{what}{detail} ({self.seconds:.2f} s)"


@dataclass
class ClassTarget:
    """What one device class should run once this rollout is through: the seam for devices the host cannot reach
    (agents polling a registry take the version to activate from their class's artifact)."""

    rollout_id: int
    name: str
    device_class: DeviceClass
    bundle_digest: str
    options: agent_pb2.BuildOptions
    tolerance: Optional[float]
    devices: list[str]


#: Called once per warmed class, before the first wave; raising stops the rollout before any activation.
ClassHook = Callable[[ClassTarget], None]


def no_class_hook(target: ClassTarget) -> None:
    """The default: devices the host reaches directly are all there is (the registry path plugs in here)."""


EventFn = Callable[[RolloutEvent], None]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a rollout: in-flight steps finished and were recorded; `--resume ID` goes on."""

    def __init__(self, rollout_id: int) -> None:
        super().__init__(f"rollout {rollout_id} interrupted; `deploy fleet rollout --resume {rollout_id}` goes on")
        self.rollout_id = rollout_id


# ---------------------------------------------------------------- the run


class _StepFailed(Exception):
    """A device's step ended in failure (recorded already); `unreachable` failures are counted apart."""

    def __init__(self, reason: str, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.unreachable = unreachable


@dataclass
class _ClassInfo:
    label: str
    device_class: DeviceClass
    digest: str
    options: agent_pb2.BuildOptions
    tolerance: Optional[float]
    engines: str = ""  # the engines artifact warming published (with --registry): what the model target names


def validate(name: str, devices: Sequence[Device], options: RolloutOptions) -> list[int]:
    """Every check on the input that needs no device; returns the wave sizes. Raises InvalidInput (exit 2)."""
    from device_agent.models import check_name

    try:
        check_name(name)
    except Exception as exc:  # noqa: BLE001 - the agent's own name rule, as one input line
        raise InvalidInput(f"--name {name!r}: {exc}") from None
    failure_bound(options.max_failures, len(devices))
    if not options.health_timeout_s > 0:
        raise InvalidInput(f"--health-timeout {options.health_timeout_s:g}: give seconds above 0")
    if options.max_rel_err is not None and not options.max_rel_err > 0:
        raise InvalidInput(f"--max-rel-err {options.max_rel_err:g}: give a bound above 0")
    if options.registry:  # a bad address or credential file is refused before anything is recorded
        from host.registry.credentials import registry_client

        registry_client(options.registry)
    return wave_sizes(parse_waves(options.waves), len(devices))


class Rollout:
    """One rollout's run (a first run or a resume) over its record; `run()` returns the summary dict.

    `plan_for` defaults to compiling the record's source as `deploy push` would (`host.fleet.warm.model_plans`);
    `on_class_warmed` is the registry path's seam (`no_class_hook` by default).
    """

    def __init__(self, db: RolloutDB, rollout_id: int, devices: Sequence[Device], *,
                 on_event: Optional[EventFn] = None, on_class_warmed: ClassHook = no_class_hook,
                 plan_for: Optional[PlanFor] = None) -> None:
        self.db = db
        self.id = rollout_id
        self.record = db.rollout(rollout_id)
        self.name = self.record.name
        self.options = RolloutOptions.from_dict(self.record.options)
        self.devices = {d.name or d.address: d for d in devices}
        self.on_event = on_event
        self.on_class_warmed = on_class_warmed
        self._plan_for = plan_for
        self.bound = failure_bound(self.options.max_failures, len(db.targets(rollout_id)))
        self._lock = threading.Lock()
        self._clients: dict[str, AgentClient] = {}
        self._classes: dict[str, _ClassInfo] = {}     # device -> its class's bundle, options, tolerance
        self._warm_failed: dict[str, tuple[str, bool]] = {}  # device -> (reason, unreachable)
        self._interrupted = False
        self._published: list[dict[str, Any]] = []  # the model targets published (with --registry)
        self._registry: Any = None
        self._failed = self._failed_in_record()  # kept in memory: the bound is checked before every device

    # -- starting
    @classmethod
    def start(cls, db: RolloutDB, name: str, source: Path, devices: Sequence[Device], options: RolloutOptions,
              **kwargs: Any) -> "Rollout":
        """Validate everything (nothing recorded or started on bad input), then record a new rollout."""
        source = Path(source)
        if not source.exists():
            raise InvalidInput(f"{source}: no such file or directory; pass an ONNX model or a bundle")
        validate(name, devices, options)
        rid = db.create(name, str(source.resolve()), options.to_dict(), [d.name or d.address for d in devices])
        return cls(db, rid, devices, **kwargs)

    # -- plumbing
    def _emit(self, event: RolloutEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _client(self, device: str) -> AgentClient:
        with self._lock:
            if device not in self._clients:
                self._clients[device] = AgentClient(self.devices[device])
            return self._clients[device]

    def _device_client(self, device: Device) -> AgentClient:
        return self._client(device.name or device.address)

    def _close(self) -> None:
        with self._lock:
            for c in self._clients.values():
                c.close()
            self._clients.clear()

    def _failed_in_record(self) -> set[str]:
        """Devices whose register or activation failed, per the record (read once a run; `_step` adds to it)."""
        return {device for device, steps in self.db.device_steps(self.id).items()
                if rdb.FAILED in (getattr(steps.get(rdb.REGISTER), "state", None),
                                  getattr(steps.get(rdb.ACTIVATE), "state", None))}

    def _count_failure(self, device: str, step: str) -> None:
        if step in (rdb.REGISTER, rdb.ACTIVATE):
            with self._lock:
                self._failed.add(device)

    def _past_bound(self) -> Optional[str]:
        if self.bound is None:
            return None
        with self._lock:
            failed = len(self._failed)
        if failed <= self.bound:
            return None
        spec = self.options.max_failures
        of = f" ({self.bound} of {len(self.db.targets(self.id))})" if spec.endswith("%") else ""
        return f"{failed} device(s) failed, more than --max-failures {spec}{of}"

    # -- the whole run
    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            with self.db.running(self.id):
                state = self.db.rollout(self.id).state
                if state in rdb.RESUMABLE:
                    if state != rdb.STOPPING:
                        self._forward()
                        if self.options.registry and self.db.rollout(self.id).state in rdb.WENT_FORWARD:
                            self._publish_targets()
                    if self.db.rollout(self.id).state == rdb.STOPPING:
                        self._roll_back()
        except Interrupted:
            raise
        except KeyboardInterrupt:  # while warming or taking back: the record says where it stood
            raise Interrupted(self.id) from None
        finally:
            self._close()
        return self.summary(time.perf_counter() - started)

    def _forward(self) -> None:
        total = len(self.db.targets(self.id))
        self._emit(RolloutEvent("rollout", detail=f"rollout {self.id} of {self.name} over {total} device(s); "
                                f"`deploy fleet rollout --resume {self.id}` goes on after a crash or Ctrl-C"))
        pending = self._pending()
        if pending:
            self._warm(pending)
            if self.db.rollout(self.id).state == rdb.PLANNING:
                self._plan()
            self.db.set_state(self.id, rdb.RUNNING)
            targets = self.db.targets(self.id)
            waves = sorted({t.wave for t in targets})
            for wave in waves:
                if self._past_bound():
                    break
                left = set(self._pending())
                todo = [t.device for t in targets if t.wave == wave and t.device in left]
                if todo:
                    self._emit(RolloutEvent("wave", wave=wave, detail=f"wave {wave} of {len(waves)}: "
                                                                      f"{len(todo)} device(s)"))
                    self._wave(wave, todo)
        why = self._past_bound()
        if why:
            self.db.set_state(self.id, rdb.STOPPING, f"stopped: {why}")
            self._emit(RolloutEvent("stopped", detail=f"{why}; taking back every device this rollout switched"))
            return
        left = self._pending()
        if left:
            self.db.set_state(self.id, rdb.INCOMPLETE, f"{len(left)} device(s) not reached (unreachable): "
                                                       f"`deploy fleet rollout --resume {self.id}` reaches them")
        else:
            self.db.set_state(self.id, rdb.DONE, "")

    def _pending(self) -> list[str]:
        """Devices still to activate: no register or activate step failed or done."""
        steps = self.db.device_steps(self.id)
        out = []
        for t in self.db.targets(self.id):
            mine = steps.get(t.device, {})
            act, reg = mine.get(rdb.ACTIVATE), mine.get(rdb.REGISTER)
            if act is not None and act.state in (rdb.STEP_DONE, rdb.FAILED):
                continue
            if reg is not None and reg.state == rdb.FAILED:
                continue
            out.append(t.device)
        return out

    # -- warming
    def _warm(self, pending: list[str]) -> None:
        """Warm the pending devices' classes; record each class's bundle; call the class hook."""
        missing = [d for d in pending if d not in self.devices]
        for d in missing:  # the inventory lost it since the rollout started: nothing to talk to
            self._warm_failed[d] = (f"{d} is no longer in the inventory", True)
        from host.pipeline.push import PushOptions, default_tolerance

        push_opts = PushOptions(max_rel_err=self.options.max_rel_err)
        base = self._plan_for or model_plans(Path(self.record.source), push_opts)
        plans: dict[DeviceClass, ClassPlan] = {}

        def plan_for(dc: DeviceClass, info: agent_pb2.DeviceInfo, device: Device) -> ClassPlan:
            plan = base(dc, info, device)
            plans[dc] = plan
            return plan

        def warm_event(e: WarmEvent) -> None:
            if e.kind in ("copied", "built", "failed", "unreachable", "builder_lost"):
                self._emit(RolloutEvent("warm", e.device, detail=f"{e.kind}{': ' + e.detail if e.detail else ''}"))

        reached = [self.devices[d] for d in pending if d in self.devices]
        if self.options.registry:  # gRPC copies as without, and each class's bundle and engines published
            from host.fleet.via_registry import PublishingWarmer

            warmer: Warmer = PublishingWarmer(reached, plan_for, registry=self._registry_client(),
                                              concurrency=self.options.concurrency, on_event=warm_event,
                                              client_for=self._device_client)
        else:  # one channel per device for the whole rollout: warming's clients are the waves' clients
            warmer = Warmer(reached, plan_for, concurrency=self.options.concurrency, on_event=warm_event,
                            client_for=self._device_client)
        result = warmer.run()
        errors = [c.plan_error for c in result.classes if c.plan_error is not None]
        if errors and isinstance(errors[0], InvalidInput):
            raise errors[0]  # the model itself is bad: nothing activated anywhere
        recorded = self.db.rollout(self.id).bundles
        placed = {t.device: t.wave for t in self.db.targets(self.id) if t.wave}
        placements: list[tuple[str, int, str, str]] = []
        for u in result.unreachable:
            self._warm_failed[u.device] = (f"warm: {u.reason}", u.unreachable)
        for c in result.classes:
            label = c.device_class.label
            for f in c.failed:
                self._warm_failed[f.device] = (f"warm: {f.reason}", f.unreachable)
            if not c.bundle_digest:
                continue
            if recorded.get(label, c.bundle_digest) != c.bundle_digest:
                raise PreconditionFailed(
                    f"rollout {self.id}: {self.record.source} now gives class {label} bundle "
                    f"{c.bundle_digest[:19]}..., not the {recorded[label][:19]}... the rollout started with; "
                    "restore the model, or start a new rollout")
            plan = plans.get(c.device_class)
            tolerance: Optional[float] = self.options.max_rel_err
            options = plan.options if plan is not None else agent_pb2.BuildOptions()
            if tolerance is None and plan is not None:
                manifest = read_manifest_from_archive(plan.archive)
                spread = (manifest.reference or {}).get("fp32_spread", 0.0) or 0.0
                tolerance = default_tolerance(bool(options.fp16), "int8" in (manifest.options or {}), spread)
            info = _ClassInfo(label, c.device_class, c.bundle_digest, options, tolerance, c.published or "")
            self.db.set_bundle(self.id, label, c.bundle_digest)
            for d in c.devices:
                self._classes[d] = info
                if d in placed:
                    placements.append((d, placed[d], label, c.bundle_digest))
            self.on_class_warmed(ClassTarget(self.id, self.name, c.device_class, c.bundle_digest, options,
                                             tolerance, list(c.devices)))
        self.db.place_all(self.id, placements)

    def _plan(self) -> None:
        """Waves over the fleet: classes interleaved, devices whose class is unknown (not reached) last."""
        targets = [t.device for t in self.db.targets(self.id)]
        by_class: dict[str, list[str]] = {}
        for d in targets:
            if d in self._classes:
                by_class.setdefault(self._classes[d].label, []).append(d)
        order = interleave([by_class[k] for k in sorted(by_class)])
        order += [d for d in targets if d not in order]
        sizes = wave_sizes(parse_waves(self.options.waves), len(order))
        pos = 0
        placements = []
        for wave, size in enumerate(sizes, start=1):
            for d in order[pos:pos + size]:
                info = self._classes.get(d)
                placements.append((d, wave, info.label if info else "", info.digest if info else ""))
            pos += size
        self.db.place_all(self.id, placements)

    # -- the registry: devices the host cannot reach follow the reachable ones
    def _registry_client(self) -> Any:
        if self._registry is None:
            from host.registry.credentials import registry_client

            self._registry = registry_client(str(self.options.registry))
        return self._registry

    def _publish_targets(self) -> None:
        """Each warmed class whose reachable devices activated the version: its class artifact now names NAME's
        version, so its polling agents record, verify and activate it under their own health check."""
        from host.registry.publish import publish_model_target

        activated = set(rollout_summary(self.db, self.id)["activated"])
        classes: dict[str, tuple[_ClassInfo, list[str]]] = {}
        for device, info in self._classes.items():
            classes.setdefault(info.label, (info, []))[1].append(device)
        for label, (info, devices) in sorted(classes.items()):
            t0 = time.perf_counter()
            why = ""
            if not activated.intersection(devices):
                why = "no device of the class activated the version: its polling agents are left as they are"
            elif not info.engines:
                why = "warming published no engines for the class"
            elif info.tolerance is None:
                why = "no verify tolerance for the class's bundle (give --max-rel-err)"
            if why:
                self._emit(RolloutEvent("publish", state="skipped", detail=f"class {label}: {why}"))
                continue
            try:
                pub = publish_model_target(self._registry_client(), info.engines, self.name, info.digest,
                                           float(info.tolerance), info.options)
            except Exception as exc:  # noqa: BLE001 - reported; the devices already switched stay switched
                self._published.append({"class": label, "reference": None, "error": first_line(exc)})
                self._emit(RolloutEvent("publish", state=rdb.FAILED, detail=f"class {label}: {first_line(exc)}",
                                        seconds=time.perf_counter() - t0))
                continue
            self._published.append({"class": label, "reference": pub.reference,
                                    "manifest_digest": pub.manifest_digest, "engines": info.engines,
                                    "bundle_digest": info.digest, "error": None})
            self._emit(RolloutEvent("publish", state=rdb.STEP_DONE, detail=f"class {label}: {pub.reference} names "
                                    f"{self.name} bundle {info.digest[:19]}...: its polling agents activate it",
                                    seconds=time.perf_counter() - t0))

    # -- a wave
    def _wave(self, wave: int, devices: list[str]) -> None:
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.options.concurrency, len(devices))),
                                  thread_name_prefix=f"rollout-w{wave}")
        futures: list[Future] = [pool.submit(self._device, wave, d) for d in devices]
        try:
            pending = set(futures)
            while pending:
                _done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        except KeyboardInterrupt:
            self._interrupted = True  # devices not yet started see it; those in flight finish and are recorded
            pool.shutdown(wait=True, cancel_futures=True)
            raise Interrupted(self.id) from None
        pool.shutdown(wait=True)
        for f in futures:
            f.result()  # a bug in a worker is a crash, not a silent skip

    def _device(self, wave: int, device: str) -> None:
        if self._interrupted or self._past_bound():
            return  # not started: a later --resume (or nobody, once stopped) deals with it
        try:
            self._advance(wave, device)
        except _StepFailed:
            pass  # recorded and emitted where it happened

    def _step(self, wave: int, device: str, step: str, fn: Callable[[], tuple[Optional[int], str]],
              version: Optional[int] = None, previous: Optional[int] = None) -> Optional[int]:
        """Record `step` started, run it, record how it ended; returns the version it reports."""
        t0 = time.perf_counter()
        self.db.start_step(self.id, device, wave, step, version, previous)
        try:
            got, detail = fn()
        except Exception as exc:  # noqa: BLE001 - a device's failure is a result
            unreachable = is_unreachable(exc) and not _deadline(exc, step)
            state = rdb.UNREACHABLE if unreachable else rdb.FAILED
            reason = _reason(exc, step, self.options.health_timeout_s)
            self.db.end_step(self.id, device, step, state, detail=reason)
            if state == rdb.FAILED:
                self._count_failure(device, step)
            self._emit(RolloutEvent("step", device, wave, step, state, version, previous, reason,
                                    time.perf_counter() - t0))
            raise _StepFailed(reason, unreachable) from exc
        self.db.end_step(self.id, device, step, rdb.STEP_DONE, version=got, detail=detail)
        self._emit(RolloutEvent("step", device, wave, step, rdb.STEP_DONE, got if got is not None else version,
                                previous, detail, time.perf_counter() - t0))
        return got

    def _record_failure(self, wave: int, device: str, step: str, reason: str, unreachable: bool) -> None:
        self.db.start_step(self.id, device, wave, step)
        state = rdb.UNREACHABLE if unreachable else rdb.FAILED
        self.db.end_step(self.id, device, step, state, detail=reason)
        if state == rdb.FAILED:
            self._count_failure(device, step)
        self._emit(RolloutEvent("step", device, wave, step, state, detail=reason))
        raise _StepFailed(reason, unreachable)

    def _advance(self, wave: int, device: str) -> None:
        """Register the class's bundle as a version of NAME, then activate it; each step settled first when an
        earlier run left it started (resume), so nothing is switched twice."""
        if device in self._warm_failed:
            reason, unreachable = self._warm_failed[device]
            self._record_failure(wave, device, rdb.REGISTER, reason, unreachable)
        info = self._classes.get(device)
        if info is None:
            self._record_failure(wave, device, rdb.REGISTER, "its class was not warmed (not reached)", True)
        client = self._client(device)
        mine = self.db.steps_of(self.id, device)
        reg = mine.get(rdb.REGISTER)
        version = reg.version if reg is not None and reg.state == rdb.STEP_DONE else None
        if version is None:
            def register() -> tuple[Optional[int], str]:
                request = agent_pb2.RegisterVersionRequest(
                    name=self.name, bundle_digest=info.digest, options=info.options,
                    tolerance=info.tolerance or 0.0, skip_verify=info.tolerance is None)
                reply = client.register_version(request)
                v = reply.version
                if v.state != "verified":
                    raise PreconditionFailed(f"version {v.version} is {v.state}: {v.why}")
                return int(v.version), "" if reply.created else "unchanged"

            version = self._step(wave, device, rdb.REGISTER, register)
        assert version is not None
        act = mine.get(rdb.ACTIVATE)
        active, _ = self._active(client)
        if act is not None:  # an earlier run started this activation: what did it leave?
            previous = act.previous
            active = self._settled(client, act)
            if active == version:
                self._step(wave, device, rdb.ACTIVATE, lambda: (version, "found active: the activation begun "
                           "before the host stopped took; not switched again"), version, previous)
                return
            if active != previous:
                self._record_failure(wave, device, rdb.ACTIVATE, f"version {active} is active, neither the "
                                     f"rollout's {version} nor the {previous} it had: changed outside this "
                                     "rollout; left alone", False)
        else:
            previous = active
            if active == version:
                self._step(wave, device, rdb.ACTIVATE, lambda: (version, "already active"), version, previous)
                return

        def activate() -> tuple[Optional[int], str]:
            reply = client.activate(self.name, version, timeout=self.options.health_timeout_s)
            return int(reply.active.version), ""

        try:
            self._step(wave, device, rdb.ACTIVATE, activate, version, previous)
        except _StepFailed as exc:
            if not exc.unreachable:
                self._take_back_if_switched(wave, device)
            raise

    def _active(self, client: AgentClient) -> tuple[Optional[int], Optional[int]]:
        """(active, previous) version of NAME on the device."""
        models = client.list_models(self.name).models
        if not models:
            return None, None
        m = models[0]
        return (int(m.active) if m.HasField("active") else None,
                int(m.previous) if m.HasField("previous") else None)

    def _settled(self, client: AgentClient, step: Step) -> Optional[int]:
        """What is active once an activation begun at `step.time` can no longer be pending: its health command
        runs under the agent's own bound, which --health-timeout covers, so past that window the answer holds."""
        wait_s = step.time + self.options.health_timeout_s - time.time()
        if step.state == rdb.STARTED and wait_s > 0:  # a row still `started` holds the time it was begun
            self._emit(RolloutEvent("settling", step.device, step.wave, detail=f"an activation begun before the "
                                    f"host stopped may still be checking its health: waiting {wait_s:.0f} s"))
            time.sleep(wait_s)
        return self._active(client)[0]

    def _take_back_if_switched(self, wave: int, device: str) -> None:
        """An activation that failed by the host's deadline may still pass on the agent: put the device back."""
        step = self.db.steps_of(self.id, device).get(rdb.ACTIVATE)
        if step is None or not step.detail.startswith("no answer within"):
            return  # the agent's own health failure already took it back
        try:
            self._roll_back_device(device)
        except _StepFailed:
            pass

    # -- taking back
    def _roll_back(self) -> None:
        """Every device this rollout switched (or may have: a step found started) goes back to what it had."""
        todo = []
        for device, mine in self.db.device_steps(self.id).items():
            act, back = mine.get(rdb.ACTIVATE), mine.get(rdb.ROLLBACK)
            if act is None or act.state == rdb.FAILED or (back is not None and back.state == rdb.STEP_DONE):
                continue
            if device not in self.devices:
                self.db.start_step(self.id, device, act.wave, rdb.ROLLBACK, act.previous, act.version)
                self.db.end_step(self.id, device, rdb.ROLLBACK, rdb.UNREACHABLE, detail="no longer in the inventory")
                continue
            todo.append(device)
        if todo:
            with ThreadPoolExecutor(max_workers=max(1, min(self.options.concurrency, len(todo))),
                                    thread_name_prefix="rollout-back") as pool:
                list(pool.map(self._roll_back_quietly, todo))
        left = [d for d, mine in self.db.device_steps(self.id).items()
                if rdb.ROLLBACK in mine and mine[rdb.ROLLBACK].state != rdb.STEP_DONE]
        detail = self.db.rollout(self.id).detail.split("; ")[0]
        if left:
            self.db.set_state(self.id, rdb.STOPPING, f"{detail}; {len(left)} device(s) not yet taken back: "
                                                     f"`deploy fleet rollout --resume {self.id}` finishes")
        else:
            self.db.set_state(self.id, rdb.ROLLED_BACK, detail)

    def _roll_back_quietly(self, device: str) -> None:
        try:
            self._roll_back_device(device)
        except _StepFailed:
            pass

    def _roll_back_device(self, device: str) -> None:
        act = self.db.steps_of(self.id, device)[rdb.ACTIVATE]
        version, previous = act.version, act.previous
        client = self._client(device)

        def back() -> tuple[Optional[int], str]:
            active = self._settled(client, act)  # idempotent either way: Activate(previous), Deactivate
            if active == previous:
                return previous, "already on the version it had"
            if active != version:
                raise PreconditionFailed(f"version {active} is active, not the rollout's {version}: changed "
                                         "outside this rollout; left alone")
            if previous is None:
                client.deactivate(self.name)
                return None, "no version active, as before"
            reply = client.activate(self.name, previous, timeout=self.options.health_timeout_s)
            return int(reply.active.version), ""

        self._step(act.wave, device, rdb.ROLLBACK, back, previous, version)

    # -- the result
    def summary(self, wall_s: float = 0.0) -> dict[str, Any]:
        """The documented `deploy fleet rollout --json` object, from the record; `published`: the model targets
        this run published to --registry (one per class; `reference` None and `error` set when one failed)."""
        data = rollout_summary(self.db, self.id, wall_s)
        failed = any(p["error"] for p in self._published)
        return {**data, "published": list(self._published), "ok": data["ok"] and not failed}


def _deadline(exc: BaseException, step: str) -> bool:
    """An activation past --health-timeout is a failure of the device (a hanging health check), not a lost link."""
    return step == rdb.ACTIVATE and isinstance(exc, AgentError) and exc.code == grpc.StatusCode.DEADLINE_EXCEEDED


def _reason(exc: BaseException, step: str, health_timeout_s: float) -> str:
    if _deadline(exc, step):
        return f"no answer within --health-timeout {health_timeout_s:g} s (its health check may hang)"
    if isinstance(exc, AgentError):
        return (f"unreachable: {exc.detail}" if exc.unreachable else exc.message)
    return first_line(exc)


def rollout_summary(db: RolloutDB, rid: int, wall_s: float = 0.0) -> dict[str, Any]:
    """Per device its wave and last step, the lists the CLI prints, and the record's state."""
    rec = db.rollout(rid)
    steps = db.device_steps(rid)
    devices = []
    lists: dict[str, list[str]] = {"activated": [], "failed": [], "unreachable": [], "rolled_back": [],
                                   "not_started": []}
    for t in db.targets(rid):
        mine = steps.get(t.device, {})
        last = max(mine.values(), key=lambda s: (s.time, s.id)) if mine else None
        act, reg, back = mine.get(rdb.ACTIVATE), mine.get(rdb.REGISTER), mine.get(rdb.ROLLBACK)
        if rdb.FAILED in (getattr(act, "state", None), getattr(reg, "state", None)):
            outcome = "failed"  # a device put back after missing the deadline still failed
        elif back is not None and back.state == rdb.STEP_DONE:
            outcome = "rolled_back"
        elif act is not None and act.state == rdb.STEP_DONE:
            outcome = "activated"
        elif rdb.UNREACHABLE in (getattr(act, "state", None), getattr(reg, "state", None)) or (
                back is not None and back.state == rdb.UNREACHABLE):
            outcome = "unreachable"
        else:
            outcome = "not_started"
        lists[outcome].append(t.device)
        devices.append({"device": t.device, "wave": t.wave, "class": t.device_class or None,
                        "bundle_digest": t.bundle_digest or None, "outcome": outcome,
                        "version": act.version if act is not None else (reg.version if reg is not None else None),
                        "previous": act.previous if act is not None else None,
                        "last_step": last.to_dict() if last is not None else None})
    return {**rec.to_dict(), **lists, "devices": devices, "wall_s": round(wall_s, 3),
            "ok": rec.state == rdb.DONE and not lists["failed"]}


def run_rollout(source: Optional[Path], name: Optional[str], tags: Sequence[str], options: RolloutOptions, *,
                resume: Optional[int] = None, on_event: Optional[EventFn] = None,
                on_class_warmed: ClassHook = no_class_hook, db: Optional[RolloutDB] = None) -> dict[str, Any]:
    """A new rollout of `source` as NAME over the inventory's devices with every tag, or `resume` one from the
    record (its model, name, devices and options are the record's). Bad input raises before anything starts."""
    from host.inventory import load

    own = db is None
    db = db or RolloutDB()
    try:
        if resume is not None:
            rec = db.rollout(resume)
            inventory = load()
            devices = [inventory.devices[t.device] for t in db.targets(resume) if t.device in inventory.devices]
            rollout = Rollout(db, resume, devices, on_event=on_event, on_class_warmed=on_class_warmed)
            if rec.state not in rdb.RESUMABLE:
                rollout._emit(RolloutEvent("resume", detail=f"rollout {resume} is {rec.state}: nothing left to do"))
            return rollout.run()
        if source is None or not name:
            raise InvalidInput("give MODEL_OR_BUNDLE and --name NAME (or --resume ID to go on with a rollout)")
        from host.api import select_devices

        devices = select_devices(tags)
        return Rollout.start(db, name, Path(source), devices, options, on_event=on_event,
                             on_class_warmed=on_class_warmed).run()
    finally:
        if own:
            db.close()
