"""The model RPCs (RegisterVersion, ListModels, Activate, Rollback) and the models the device serves.

The repository (`models.py`) keeps names, versions and the active pointer; this module decides what a version is
when it is recorded (the engines the options build to, checked in the cache; the agent's own verify against the
bundle's reference) and whether it can be activated now (`state_of`: built for this device's backend version and
GPU, every engine still cached, verified). It also holds one runtime `Model` per name for the Open Inference
Protocol endpoint, over the agent's own loaded engines, so the agent and an application on the device run a
version the same way (`device_agent/runtime`).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from protos import agent_pb2

from .cache import DEVICE_CLASS_FIELDS
from .engines.model import compare
from .errors import InvalidInput, PreconditionFailed
from .models import (FAILED_VERIFY, MISSING, STALE, UNVERIFIED, VERIFIED, EngineRef, ModelRepository,
                     VersionRecord, VersionView, check_name)
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
        for note in self.repo.recover():
            log.warning("%s", note)
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
        bundle = self.engines.unpacked.get(digest)
        opts = self.engines.request_options(request.options, bundle)
        batch = self.engines.planner.segment_batch(bundle, opts)
        engines: List[EngineRef] = []
        for seg in bundle.manifest.segments:
            key = self.engines.planner.plan(seg, opts, batch).key
            if self.engines.cache.get(key) is None:
                raise PreconditionFailed(f"segment {seg.id} of bundle {digest[:19]}... has no engine on this device "
                                         f"for these options (key {key[:16]}...); build it first (deploy push)")
            engines.append(EngineRef(seg.id, key))
        build = dict(self.engines.planner.device_parts(opts.backend.name))
        build["precision"] = ("int8" if any(s.calibration for s in bundle.manifest.segments)
                              else "fp16" if opts.fp16 else "fp32")
        verify = None if request.skip_verify else self._verify(digest, bundle, opts, request.tolerance)
        newest = self._newest(name)
        if newest is not None and newest.bundle_digest == digest and newest.engines == engines \
                and newest.verify == verify and newest.options == options_json(opts):
            return agent_pb2.RegisterVersionReply(version=self._version_pb(newest), created=False)
        rec = self.repo.add_version(name, digest, engines, build, options_json(opts), verify)
        return agent_pb2.RegisterVersionReply(version=self._version_pb(rec), created=True)

    def _verify(self, digest: str, bundle: Any, opts: Any, tolerance: float) -> Dict[str, Any]:
        feeds, want = bundle.read_reference()
        if not feeds or not want:
            raise PreconditionFailed("this bundle carries no reference samples to verify against; recompile it "
                                     "with reference samples, or record the version with --no-verify")
        runner = self.loaded.runner(digest, bundle, opts, self.engines.planner.segment_batch(bundle, opts))
        rel, abs_ = compare(runner.run(feeds), want)
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
        rec, before = self.repo.activate(request.name, version, self.state_of)
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
