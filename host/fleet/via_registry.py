"""`deploy fleet warm --via-registry`: one build per class as before, but the copies go through an OCI registry.

The host publishes each class's bundle once and, after the class's build, its engines once (host/registry/
publish.py); every other device of the class is told to `Pull` them itself (bounded concurrency, the same
fan-out, retries and report as `Warmer`). So the host sends one bundle and one set of engines per class, not per
device; a mirror or pull-through cache near the devices is just the registry address the agents were given.
Agents must have been started with `--registry` pointing at the same repository (or a mirror of it).
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
from host.registry.publish import class_of, publish_bundle, publish_engines
from protos import agent_pb2


class RegistryWarmer(Warmer):
    """A `Warmer` whose bundle uploads and engine copies are agent pulls from `registry`."""

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
            self._count(publish_bundle(self.registry, bundle.path, bundle.digest).bytes_sent)
            with self._lock:
                self._done.add(bundle.digest)
                self.payload_bytes += bundle.path.stat().st_size

    def _send_bundle(self, m: _Member, bundle: _Bundle) -> None:
        self._bundle_in_registry(bundle)
        self._client(m.device).pull(bundle.digest)

    def _publish(self, res: ClassResult, bundle: _Bundle, plans: list[tuple[agent_pb2.EngineEntry, Path]]) -> None:
        published = publish_engines(self.registry, bundle.digest, class_of([e for e, _ in plans]), plans)
        self._count(published.bytes_sent)
        tag = published.reference
        with self._lock:
            self._tags[(bundle.digest, res.device_class)] = tag
            self.payload_bytes += sum(path.stat().st_size for _e, path in plans)
        self._emit("published", res.built_on or res.source or "", res.device_class, tag)

    def _copy(self, m: _Member, cls: DeviceClass, bundle: _Bundle, plans: list[tuple[agent_pb2.EngineEntry, Path]],
              held: dict[str, agent_pb2.EngineEntry], timing: Optional[TimingCopy] = None,
              res: Optional[ClassResult] = None) -> int:
        self._bundle_in_registry(bundle)
        with self._lock:
            tag = self._tags[(bundle.digest, cls)]
        client = self._client(m.device)
        reply = client.pull(bundle.digest, tag)
        self._copy_timing(client, m, timing, res)  # timing caches are not registry layers yet
        self._emit("copied", m.name, cls, f"{reply.engines_pulled} engine(s) pulled from the registry")
        return reply.engines_pulled
