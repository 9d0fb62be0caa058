"""An agent that polls its registry for what its device class should hold: for devices the host cannot reach.

`fleet warm --registry` publishes, per class, an artifact tagged `class_tag(device class)` whose annotations name
the bundle and the class's engines artifact (host/registry/publish.py, `publish_class`). An agent started with
`--registry-poll-s S` reads that tag every S seconds (a GET of a small manifest; the registry or a mirror answers)
and, when it names something new, pulls it with the same `Puller` as the Pull RPC: every digest and class checked,
each artifact committed atomically. So a device behind NAT gets its engines without any host connection to it.

When the class artifact also names a model (`ModelTarget`: name, verify tolerance, build options; host side
`publish_model_target`), the agent then makes that bundle NAME's active version itself with
`ModelService.apply_target`: a new version only when no kept one is that bundle already, its own verify, the gated
activation under its own --health-cmd, which rolls back by itself. A target of no active version
(`publish_no_model_active`) deactivates NAME. The outcome is logged and counted in the model metrics. Each class
artifact is applied once: a refused or unhealthy target is not tried again until the artifact changes (or the agent
restarts).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from .errors import DeployError, InvalidInput, NotFound
from .registry import (ANN_BUNDLE, ANN_CLASS, ANN_ENGINES, CLASS_ARTIFACT, ModelTarget, RegistryRef, RetryPolicy,
                       check_digest, class_tag)
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

    def __init__(self, settings: Any, store: Any, engines: Any, interval_s: float, models: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.engines = engines  # EngineService
        self.models = models  # ModelService: applies the model a class artifact names
        self.model_outcome = ""  # what the last model target came to (a log line's words)
        self.interval_s = max(0.05, float(interval_s))
        self.applied = ""  # digest of the class artifact last pulled in full (and its model target applied)
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
        try:
            target = ModelTarget.from_annotations(ann)
        except InvalidInput as exc:
            log.warning("registry poll: %s names a model that does not parse (%s); ignored", tag, exc)
            self.applied = digest
            return None
        result = Puller(client, self.store, self.engines).pull(bundle, str(ann.get(ANN_ENGINES, "")))
        log.info("registry poll: holds bundle %s and %d engine(s) of its class (%d pulled, %d bytes)", bundle,
                 len(result.engine_keys), result.engines_pulled, result.bytes_pulled)
        if target is not None and self.models is not None:
            self._apply(target, bundle)
        self.applied = digest
        return result

    def _apply(self, target: ModelTarget, bundle: str) -> None:
        """Make `bundle` the target's name's active version; a refusal or a failed health check is logged (and
        counted by the metrics) and not tried again for this artifact. Other errors raise: the next poll retries."""
        from protos import agent_pb2

        from .models import HealthCheckFailed

        name = target.name
        if not target.active:
            self._deactivate(name)
            return
        try:
            rec, created, switched = self.models.apply_target(name, bundle, target.tolerance,
                                                              agent_pb2.BuildOptions(**target.options))
        except HealthCheckFailed as exc:
            self.model_outcome = f"health_failed: {exc}"
            log.warning("registry poll: model %r, bundle %s: %s", name, bundle, exc,
                        extra={"fields": {"event": "model_target", "model": name, "result": "health_failed"}})
            return
        except DeployError as exc:
            self.model_outcome = f"refused: {exc}"
            log.warning("registry poll: model %r, bundle %s not activated: %s", name, bundle, exc,
                        extra={"fields": {"event": "model_target", "model": name, "result": "refused"}})
            return
        did = ("activated" if switched else "already active") + (", recorded now" if created else "")
        self.model_outcome = f"version {rec.version} {did}"
        log.info("registry poll: model %r version %d (bundle %s) %s", name, rec.version, bundle, did,
                 extra={"fields": {"event": "model_target", "model": name, "version": rec.version,
                                   "result": "ok" if switched else "unchanged"}})

    def _deactivate(self, name: str) -> None:
        repo = self.models.repo
        was = repo.deactivate(name) if name in repo.names() else None
        self.model_outcome = "none active" + (f" (was version {was})" if was is not None else "")
        log.info("registry poll: model %r: %s", name, self.model_outcome,
                 extra={"fields": {"event": "model_target", "model": name,
                                   "result": "deactivated" if was is not None else "unchanged"}})
