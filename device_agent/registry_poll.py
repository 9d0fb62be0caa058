"""An agent that polls its registry for what its device class should hold: for devices the host cannot reach.

`fleet warm --registry` publishes, per class, an artifact tagged `class_tag(device class)` whose annotations name
the bundle and the class's engines artifact (host/registry/publish.py, `publish_class`). An agent started with
`--registry-poll-s S` reads that tag every S seconds (a GET of a small manifest; the registry or a mirror answers)
and, when it names something new, pulls it with the same `Puller` as the Pull RPC: every digest and class checked,
each artifact committed atomically. So a device behind NAT gets its engines without any host connection to it.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from .errors import DeployError, InvalidInput, NotFound
from .registry import (ANN_BUNDLE, ANN_CLASS, ANN_ENGINES, CLASS_ARTIFACT, RegistryRef, RetryPolicy, check_digest,
                       class_tag)
from .registry_pull import PullResult, Puller, client_from_settings

log = logging.getLogger(__name__)


def check_poll_settings(settings: Any) -> None:
    """At start, not at the first poll: --registry-poll-s needs a registry that parses, and a positive period."""
    if settings.registry_poll_s < 0:
        raise InvalidInput(f"--registry-poll-s {settings.registry_poll_s}: give seconds > 0 (0: do not poll)")
    if not settings.registry:
        raise InvalidInput("--registry-poll-s needs --registry [https://]HOST[:PORT]/REPO to poll")
    RegistryRef.parse(settings.registry)


class ClassPoller:
    """A daemon thread: poll at start, then every `interval_s`; errors are a warning and the next poll tries again."""

    def __init__(self, settings: Any, store: Any, engines: Any, interval_s: float) -> None:
        self.settings = settings
        self.store = store
        self.engines = engines  # EngineService
        self.interval_s = max(0.05, float(interval_s))
        self.applied = ""  # digest of the class artifact last pulled in full
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-poll", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def my_class(self) -> str:
        from . import engines
        from .cache import device_class

        backend = engines.select("", self.settings.backend).name
        return device_class(self.engines.device_parts(backend))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except DeployError as exc:
                log.warning("registry poll: %s; trying again in %.0f s", exc, self.interval_s)
            except Exception:  # noqa: BLE001 - a poll never takes the agent down
                log.exception("registry poll failed; trying again in %.0f s", self.interval_s)
            self._stop.wait(self.interval_s)

    def poll_once(self) -> Optional[PullResult]:
        """Pull what the class artifact names if it changed since the last full pull; None when nothing to do."""
        client = client_from_settings(self.settings)
        if client is None:
            return None
        client.retry = RetryPolicy(attempts=2)
        mine = self.my_class()
        tag = class_tag(mine)
        try:
            doc, digest = client.manifest(tag)
        except NotFound:
            return None
        if digest == self.applied:
            return None
        ann = doc.get("annotations") or {}
        if doc.get("artifactType") != CLASS_ARTIFACT or ann.get(ANN_CLASS) != mine:
            log.warning("registry poll: %s is not this class's artifact (%s); ignored", tag, ann.get(ANN_CLASS, "?"))
            self.applied = digest
            return None
        bundle = check_digest(str(ann.get(ANN_BUNDLE, "")))
        result = Puller(client, self.store, self.engines).pull(bundle, str(ann.get(ANN_ENGINES, "")))
        self.applied = digest
        log.info("registry poll: holds bundle %s and %d engine(s) of its class (%d pulled, %d bytes)", bundle,
                 len(result.engine_keys), result.engines_pulled, result.bytes_pulled)
        return result
