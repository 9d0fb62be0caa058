"""The model RPCs (RegisterVersion, ListModels, Activate, Rollback, Deactivate) and the models the device serves.

The repository (`models.py`) keeps names, versions and the active pointer; this module decides what a version is
when it is recorded (the engines the options build to, checked in the cache; the agent's own verify against the
bundle's reference) and whether it can be activated now (`state_of`: built for this device's backend version and
GPU, every engine still cached, verified). It also holds one runtime `Model` per name for the Open Inference
Protocol endpoint, over the agent's own loaded engines, so the agent and an application on the device run a
version the same way (`device_agent/runtime`). `apply_target` is what a registry poller does with the model its class
artifact names (device_agent/registry_poll.py): RegisterVersion and Activate in-process, each only when needed.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from protos import agent_pb2

from .cache import DEVICE_CLASS_FIELDS
from .engines.model import compare, reference_samples, shape_samples
from .errors import InvalidInput, NotFound, PreconditionFailed
from .models import (ACTIVATION, FAILED_VERIFY, MISSING, REFUSED, STALE, UNVERIFIED, VERIFIED, EngineRef, ModelEvent,
                     ModelRepository, VersionRecord, VersionView, check_name)
from .runtime import Model
from .runtime.load import options_json, version_loader

log = logging.getLogger(__name__)


class ModelService:
    def __init__(self, settings: Any, engines: Any) -> None:
        self.engines = engines  # EngineService: its planner, cache, unpacked bundles and loaded engines
        cache = engines.cache
        self.repo = ModelRepository(Path(settings.data_dir) / "models", int(settings.keep_versions),
                                    settings.health_cmd, float(settings.health_timeout_s),
                                    engine_path=lambda key: cache.entries_dir / key / "plan")
        self.loaded = engines.loaded.without_builds()  # the agent's loaded engines; a missing one is an error
        self._load = version_loader(models=self.loaded)
        self._served: Dict[str, Model] = {}
        self._lock = threading.Lock()
        # what recovery did before anyone could observe the repository: the metrics count it when they attach
        self.events_at_start: List[ModelEvent] = []
        self.repo.observe(self.events_at_start.append)
        try:
            for note in self.repo.recover():
                log.warning("%s", note)
        finally:
            self.repo.unobserve(self.events_at_start.append)
        cache.pinned = lambda: self.repo.pinned()[1]

    # ---------------------------------------------------------------- what a version is now
    def state_of(self, rec: VersionRecord) -> Tuple[str, str]:
        backend = rec.build.get("backend", "")
        now = self.engines.planner.device_parts(backend)
        changed = [f for f in DEVICE_CLASS_FIELDS if rec.build.get(f, "") != now.get(f, "")]
        if changed:
            was = ", ".join(f"{f} {rec.build.get(f) or '-'}" for f in changed)
            has = ", ".join(f"{f} {now.get(f) or '-'}" for f in changed)
            return STALE, (f"built for {was}; this device now has {has}: push it again to rebuild its engines")
        for e in rec.engines:
            if self.engines.cache.get(e.key) is None:
                return MISSING, (f"the engine of segment {e.segment_id} (key {e.key[:16]}...) is no longer in the "
                                 "cache: push it again")
        if rec.verify is None:
            return UNVERIFIED, "not verified on this device (pushed with --no-verify): push it again with verify"
        if not rec.verify.get("passed"):
            return FAILED_VERIFY, (f"failed verify on this device (max rel err {rec.verify.get('max_rel_err'):.3g} "
                                   f"> tolerance {rec.verify.get('tolerance'):.3g})")
        return VERIFIED, ""

    # ---------------------------------------------------------------- RPCs
    def RegisterVersion(self, request: agent_pb2.RegisterVersionRequest, context: Any
                        ) -> agent_pb2.RegisterVersionReply:
        name = request.name
        check_name(name)  # a bad name is refused before any work
        if not request.skip_verify and not request.tolerance > 0:
            raise InvalidInput("tolerance must be above 0 (the largest relative error verify accepts), or set "
                               "skip_verify")
        digest = request.bundle_digest
        bundle, opts, engines = self._engines_of(digest, request.options)
        verify = None if request.skip_verify else self._verify(digest, bundle, opts, request.tolerance)
        newest = self._newest(name)
        if newest is not None and newest.bundle_digest == digest and newest.engines == engines \
                and newest.verify == verify and newest.options == options_json(opts):
            return agent_pb2.RegisterVersionReply(version=self._version_pb(newest), created=False)
        rec = self._add(name, digest, bundle, opts, engines, verify)
        return agent_pb2.RegisterVersionReply(version=self._version_pb(rec), created=True)

    def _engines_of(self, digest: str, options: agent_pb2.BuildOptions) -> Tuple[Any, Any, List[EngineRef]]:
        """(bundle, resolved options, the engine of each segment): every engine must be in the cache."""
        bundle = self.engines.unpacked.get(digest)
        opts = self.engines.request_options(options, bundle)
        batch = self.engines.planner.segment_batch(bundle, opts)
        engines: List[EngineRef] = []
        for seg in bundle.manifest.segments:
            key = self.engines.planner.plan(seg, opts, batch).key
            if self.engines.cache.get(key) is None:
                raise PreconditionFailed(f"segment {seg.id} of bundle {digest[:19]}... has no engine on this device "
                                         f"for these options (key {key[:16]}...); build it first (deploy push)")
            engines.append(EngineRef(seg.id, key))
        return bundle, opts, engines

    def _add(self, name: str, digest: str, bundle: Any, opts: Any, engines: List[EngineRef],
             verify: Optional[Dict[str, Any]]) -> VersionRecord:
        build = dict(self.engines.planner.device_parts(opts.backend.name))
        build["precision"] = ("int8" if any(s.calibration for s in bundle.manifest.segments)
                              else "fp16" if opts.fp16 else "fp32")
        return self.repo.add_version(name, digest, engines, build, options_json(opts), verify)

    def apply_target(self, name: str, digest: str, tolerance: float,
                     options: Optional[agent_pb2.BuildOptions] = None) -> Tuple[VersionRecord, bool, bool]:
        """Make NAME's active version the one of bundle `digest` (its engines in the cache, built with `options`),
        as RegisterVersion + Activate would, each step only when needed: a kept version of that bundle with these
        engines and options, verified with this tolerance, is used again (no new number, no verify); else a new
        version is recorded after the agent's own verify. Activation is gated and health-checked as Activate's
        (a failure rolls back by itself and raises). Returns (the version, created, switched)."""
        check_name(name)
        if not tolerance > 0:
            raise InvalidInput(f"model {name!r}: tolerance {tolerance!r} must be above 0")
        try:
            bundle, opts, engines = self._engines_of(digest, options or agent_pb2.BuildOptions())
        except PreconditionFailed:  # the gate, before any version exists: counted as a refused activation
            st = self.repo.state(name)
            self.repo.emit(ModelEvent(name, ACTIVATION, REFUSED, None, st.active))
            raise
        rec = self._kept(name, digest, engines, options_json(opts), float(tolerance))
        created = rec is None
        if rec is None:
            rec = self._add(name, digest, bundle, opts, engines, self._verify(digest, bundle, opts, tolerance))
        st = self.repo.state(name)
        if st.active == rec.version and st.pending is None:
            return rec, created, False
        rec, _before = self.repo.activate(name, rec.version, self.state_of)
        return rec, created, True

    def _kept(self, name: str, digest: str, engines: List[EngineRef], options: Dict[str, Any],
              tolerance: float) -> Optional[VersionRecord]:
        """The newest kept version of NAME that is this bundle with these engines and options, verified (passed
        or not) with this tolerance."""
        for v in reversed(self.repo.versions(name)):
            try:
                rec = self.repo.record(name, v)
            except NotFound:  # released meanwhile
                continue
            if rec.bundle_digest == digest and rec.engines == engines and rec.options == options \
                    and rec.verify is not None and float(rec.verify.get("tolerance", -1.0)) == tolerance:
                return rec
        return None

    def _verify(self, digest: str, bundle: Any, opts: Any, tolerance: float) -> Dict[str, Any]:
        feeds, want = reference_samples(bundle, "recompile it with reference samples, or record the version "
                                                "with --no-verify")
        runner = self.loaded.runner(digest, bundle, opts, self.engines.planner.segment_batch(bundle, opts))
        rel, abs_ = compare(runner.run(feeds), want)
        for more, more_want in shape_samples(bundle):  # a ranged bundle: MIN, OPT, MAX of each profile
            r, a = compare(runner.run(more), more_want)
            rel, abs_ = max(rel, r), max(abs_, a)
        return {"passed": bool(rel <= tolerance), "max_rel_err": float(rel), "max_abs_err": float(abs_),
                "tolerance": float(tolerance)}

    def _newest(self, name: str) -> Optional[VersionRecord]:
        versions = self.repo.versions(name)
        return self.repo.record(name, versions[-1]) if versions else None

    def ListModels(self, request: agent_pb2.ListModelsRequest, context: Any) -> agent_pb2.ListModelsReply:
        names = [request.name] if request.name else self.repo.names()
        reply = agent_pb2.ListModelsReply()
        for name in names:
            view = self.repo.view(name, self.state_of)
            if request.name and not view.versions and view.active is None:
                self.repo.record(name, 0)  # raises NotFound naming the model
            info = reply.models.add(name=name, versions=[self._view_pb(v) for v in view.versions],
                                    active_path=str(self.repo.root / name / "active"))
            if view.active is not None:
                info.active = view.active
            if view.previous is not None:
                info.previous = view.previous
        return reply

    def Activate(self, request: agent_pb2.ActivateRequest, context: Any) -> agent_pb2.ActivateReply:
        t0 = time.perf_counter()
        version = request.version if request.HasField("version") else None
        rec, before = self.repo.activate(request.name, version, self.state_of, wanted=context.is_active)
        return self._activation(rec, before, time.perf_counter() - t0)

    def Rollback(self, request: agent_pb2.RollbackRequest, context: Any) -> agent_pb2.ActivateReply:
        t0 = time.perf_counter()
        rec, left = self.repo.rollback(request.name, self.state_of)
        return self._activation(rec, left, time.perf_counter() - t0)

    def Deactivate(self, request: agent_pb2.DeactivateRequest, context: Any) -> agent_pb2.ActivateReply:
        t0 = time.perf_counter()
        was = self.repo.deactivate(request.name)
        reply = agent_pb2.ActivateReply(seconds=time.perf_counter() - t0)
        if was is not None:
            reply.previous = was
        return reply

    def _activation(self, rec: VersionRecord, before: Optional[int], seconds: float) -> agent_pb2.ActivateReply:
        reply = agent_pb2.ActivateReply(active=self._version_pb(rec), seconds=seconds)
        if before is not None:
            reply.previous = before
        return reply

    # ---------------------------------------------------------------- replies
    def _version_pb(self, rec: VersionRecord) -> agent_pb2.ModelVersion:
        state, why = self.state_of(rec)
        return self._view_pb(VersionView(rec, state, why, [str(self.repo.plan_path(e.key)) for e in rec.engines]))

    @staticmethod
    def _view_pb(v: VersionView) -> agent_pb2.ModelVersion:
        rec = v.record
        o = rec.options
        pb = agent_pb2.ModelVersion(
            name=rec.name, version=rec.version, bundle_digest=rec.bundle_digest, state=v.state, why=v.why,
            engine_keys=[e.key for e in rec.engines], segment_ids=[e.segment_id for e in rec.engines],
            engine_paths=v.engine_paths, build=rec.build, created=rec.created,
            options=agent_pb2.BuildOptions(backend=o["backend"], fp16=o["fp16"], max_workspace_bytes=o["workspace"],
                                           multi_engine_mode=o["mode"], batch=o.get("batch", 0)))
        if rec.verify is not None:
            pb.verify_passed = bool(rec.verify.get("passed"))
            pb.max_rel_err = float(rec.verify.get("max_rel_err", 0.0))
            pb.tolerance = float(rec.verify.get("tolerance", 0.0))
        return pb

    # ---------------------------------------------------------------- served models (OIP)
    def model(self, name: str) -> Model:
        """NAME's active version, opened once and then following activations."""
        with self._lock:
            m = self._served.get(name)
        if m is not None:
            return m
        m = Model(name, self.repo, self._load)
        with self._lock:
            existing = self._served.setdefault(name, m)
        if existing is not m:
            m.close()
        return existing

    def index(self) -> List[Tuple[str, Optional[int], str]]:
        out = []
        for name in self.repo.names():
            st = self.repo.state(name)
            out.append((name, st.active, "" if st.active is not None else "no active version"))
        return out


__all__ = ["ModelService"]
