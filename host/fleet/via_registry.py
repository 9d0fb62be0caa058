"""Fleet warm with an OCI registry: publishing alongside the gRPC copies, or copying through it (--via-registry).

One build per class as before. `PublishingWarmer` (`--registry` alone) copies over gRPC as the default path does and
also publishes the class's bundle, engines and timing cache, so devices that come later (or that the host cannot
reach) can `Pull` them. `RegistryWarmer` (`--via-registry`) sends nothing per device: the host publishes each
class's bundle once and, after the class's build, its engines and timing cache once (host/registry/publish.py);
every other device of the class is told to `Pull` them itself (bounded concurrency, the same fan-out, retries and
report as `Warmer`). So the host sends one bundle and one set of engines per class, not per device; a mirror or
pull-through cache near the devices is just the registry address the agents were given. Agents must have been
started with `--registry` pointing at the same repository (or a mirror of it).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional, Sequence

from device_agent.registry import RegistryClient
from host.fleet.classes import DeviceClass
from host.fleet.timing import TimingCopy
from host.fleet.warm import ClassResult, PlanFor, Warmer, _Bundle, _Member
from host.inventory import Device
from host.registry.publish import class_of, publish_bundle, publish_bundle_parts, publish_class, publish_engines
from protos import agent_pb2


class PublishingWarmer(Warmer):
    """A `Warmer` (gRPC copies) that also publishes each class's bundle, engines and timing cache to `registry`."""

    def __init__(self, devices: Sequence[Device], plan_for: PlanFor, *, registry: RegistryClient,
                 **kwargs: Any) -> None:
        super().__init__(devices, plan_for, **kwargs)
        self.registry = registry
        self._published: dict[str, threading.Lock] = {}
        self._done: set[str] = set()
        self._tags: dict[tuple[str, DeviceClass], str] = {}
        self.payload_bytes = 0  # bundle + engine bytes it published, once each: the per-class floor of bytes_sent

    def _bundle_in_registry(self, bundle: _Bundle) -> None:
        with self._lock:
            lock = self._published.setdefault(bundle.digest, threading.Lock())
        with lock:
            if bundle.digest in self._done:
                return
            published = publish_bundle_parts(self.registry, bundle.bundle_dir) if bundle.bundle_dir is not None \
                else publish_bundle(self.registry, bundle.path, bundle.digest)
            self._count(published.bytes_sent)
            with self._lock:
                self._done.add(bundle.digest)
                self.payload_bytes += bundle.path.stat().st_size

    def _publish(self, res: ClassResult, bundle: _Bundle, plans: list[tuple[agent_pb2.EngineEntry, Path]],
                 timing: Optional[TimingCopy] = None) -> None:
        self._bundle_in_registry(bundle)
        engine_class = class_of([e for e, _ in plans])
        published = publish_engines(self.registry, bundle.digest, engine_class, plans, timing)
        tag = published.reference
        # then what the class should hold: agents polling the registry (--registry-poll-s) pull it themselves
        self._count(published.bytes_sent + publish_class(self.registry, engine_class, bundle.digest, tag).bytes_sent)
        with self._lock:
            self._tags[(bundle.digest, res.device_class)] = tag
            self.payload_bytes += sum(path.stat().st_size for _e, path in plans) + (len(timing.data) if timing else 0)
        res.published = tag
        self._emit("published", res.built_on or res.source or "", res.device_class, tag)


class RegistryWarmer(PublishingWarmer):
    """A `PublishingWarmer` whose bundle uploads and engine + timing-cache copies are agent pulls from `registry`."""

    def _send_bundle(self, m: _Member, bundle: _Bundle) -> None:
        self._bundle_in_registry(bundle)
        self._client(m.device).pull(bundle.digest)

    def _copy(self, m: _Member, cls: DeviceClass, bundle: _Bundle, plans: list[tuple[agent_pb2.EngineEntry, Path]],
              held: dict[str, agent_pb2.EngineEntry], timing: Optional[TimingCopy] = None,
              res: Optional[ClassResult] = None) -> int:
        self._bundle_in_registry(bundle)
        with self._lock:
            tag = self._tags[(bundle.digest, cls)]
        reply = self._client(m.device).pull(bundle.digest, tag)
        if res is not None and timing is not None:  # the same report as the gRPC path's puts
            if reply.timing_cache_refused:
                res.timing_refused[m.name] = reply.timing_cache_refused
            elif reply.timing_cache_digest == timing.info.digest:
                res.timing_copied_to.append(m.name)
        self._emit("copied", m.name, cls, f"{reply.engines_pulled} engine(s) pulled from the registry"
                   + (", timing cache" if reply.timing_cache_pulled else ""))
        return reply.engines_pulled
