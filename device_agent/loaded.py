"""Loaded engines: a bundle's segment engines opened from the engine cache and composed into one runner.

This is the seam the device runtime (issue 23) is built on; it needs no gRPC context and no RPC class::

    from device_agent.config import AgentSettings
    from device_agent.loaded import LoadedModels

    models = LoadedModels.from_settings(AgentSettings(store=Path("/var/lib/deploy/store")))  # never builds
    model = models.open("sha256:...")          # loads every segment's cached engine now
    outputs = model.run({"images": x})         # Dict[str, np.ndarray]

`LoadedModels(planner, bundles, ensure=None)` with no `ensure` never builds: a segment whose engine is not in the
cache raises `errors.EngineMissing` (a `PreconditionFailed`) naming the segment, the key and what to do. The agent
passes `ensure=SegmentBuilder.ensure`, so its Run and Benchmark build a missing engine once, as before.

Engines are kept per cache key (the LOADED_ENGINES most recently used) and composed runners per bundle and key
set; `forget(key)` drops both when an engine leaves the cache. Loading one key is done by one thread at a time
(a per-key lock that exists only while someone holds or waits for it); a run holding a dropped engine finishes,
then the garbage collector frees it.
"""
from __future__ import annotations

import collections
import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from . import engines
from .build_plan import Options, Planner, SegmentPlan, feeds_batch
from .bundle import Bundle
from .cache import CacheEntry, EngineCache
from .compat import check_target
from .engines.base import Backend, BuildSpec, Engine
from .engines.model import ModelRunner, compose
from .errors import Aborted, EngineMissing
from .manifest import Segment, TensorSpec
from .timing_cache import TimingCaches
from .unpacked import UnpackedBundles

MAX_RUN_BYTES = 256 * 1024 * 1024
LOADED_ENGINES = 16
LOAD_WAIT_S = 600.0  # a run waits this long for another thread's load of the same engine, then ABORTED

#: Gets a segment's plan when the cache may lack it: (digest, bundle, segment, options, plan, batch) -> (entry, plan
#: bytes), built now if need be (`SegmentBuilder.ensure`).
EnsureEngine = Callable[[str, Bundle, Segment, Options, SegmentPlan, int], Tuple[CacheEntry, bytes]]


def configure_backends(settings: Any) -> None:
    """Backend settings of the agent's configuration, applied to the process-wide backends before any load."""
    # checked by config.from_namespace; settings made in code (tests) fall back to onnxruntime's default
    engines.get("onnxruntime-cuda").conv_algo_search = getattr(settings, "cudnn_conv_algo_search", "EXHAUSTIVE")
    for name in ("onnxruntime", "onnxruntime-cuda"):
        engines.get(name).spin = bool(getattr(settings, "onnxruntime_spin", False))


@dataclass
class _KeyLock:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0  # calls holding or waiting for `lock`; the entry is removed when it drops to 0


class LoadedModels:
    """Runners of bundles over engines from the cache, shared by every caller in this process."""

    def __init__(self, planner: Planner, bundles: UnpackedBundles, ensure: Optional[EnsureEngine] = None) -> None:
        self.planner = planner
        self.cache: EngineCache = planner.cache
        self.bundles = bundles
        self.ensure = ensure
        self._loaded: "collections.OrderedDict[str, Engine]" = collections.OrderedDict()
        self._models: "collections.OrderedDict[tuple, ModelRunner]" = collections.OrderedDict()
        self._lock = threading.RLock()
        self._key_locks: Dict[str, _KeyLock] = {}  # guarded by _lock

    @classmethod
    def from_settings(cls, settings: Any, facts: Any = None) -> "LoadedModels":
        """Over the store and engine cache the agent with `settings` uses (an `AgentSettings`); never builds.

        `facts` (an `info.DeviceFacts`) default to this device's: they are part of every engine's key."""
        from .info import probe_device
        from .store import Store

        configure_backends(settings)
        cache_dir = Path(settings.cache_dir)
        cache = EngineCache(cache_dir, int(settings.cache_max_bytes))
        store = Store(settings.store, settings.max_upload_bytes, 4 * settings.chunk_bytes)
        planner = Planner(settings, cache, TimingCaches(cache_dir / "timing"),
                          facts if facts is not None else probe_device())
        return cls(planner, UnpackedBundles(store, Path(settings.data_dir) / "bundles"))

    def without_builds(self) -> "LoadedModels":
        """The same loaded engines and runners (shared, not copied: a device has memory for one of each), for callers
        that must never build: the runtime and the OIP endpoint serve only versions whose engines are cached."""
        view = LoadedModels.__new__(LoadedModels)
        view.__dict__.update(self.__dict__)
        view.ensure = None
        return view

    def open(self, digest: str, opts: Optional[Options] = None) -> "BundleModel":
        """The stored bundle `digest` with its engines loaded for its own batch (the one Build builds for)."""
        bundle = self.bundles.get(digest)
        opts = opts if opts is not None else self.planner.options(bundle)
        self.runner(digest, bundle, opts, self.planner.segment_batch(bundle, opts))
        return BundleModel(self, digest, bundle, opts)

    def runner(self, digest: str, bundle: Bundle, opts: Options, batch: int) -> ModelRunner:
        """The bundle's runner for `batch`: every segment's engine loaded (from memory, else the cache)."""
        check_target(bundle, opts.backend, self.planner.gpu[1] or None)
        seg_engines: Dict[str, Engine] = {}
        keys: List[str] = []
        for seg in bundle.manifest.segments:
            plan = self.planner.plan(seg, opts, batch)
            key = plan.key
            with self._lock:
                eng = self._loaded.get(key)
                if eng is not None:
                    self._loaded.move_to_end(key)
            if eng is not None and self.cache.get(key) is not None:  # loaded already: no re-read of the plan
                self.cache.touch(key)
            else:
                entry, plan_bytes = self._plan_bytes(digest, bundle, seg, opts, plan, batch)
                eng, key = self._engine(entry, plan_bytes, plan.spec, opts.backend), entry.key
            seg_engines[seg.id] = eng
            keys.append(key)
        mkey = (bundle.manifest.source_digest, str(bundle.root), *keys)
        with self._lock:
            if mkey in self._models:
                return self._models[mkey]
        runner = compose(bundle, seg_engines, opts.backend.name, self.planner.arch, bool(self.planner.gpu[0]))
        with self._lock:
            self._models[mkey] = runner
            while len(self._models) > LOADED_ENGINES:
                self._models.popitem(last=False)
        return runner

    def forget(self, key: str) -> None:
        """Drop a loaded engine and the models using it; a run holding it finishes, then GC frees it."""
        with self._lock:
            self._loaded.pop(key, None)
            for mk in [mk for mk in self._models if key in mk]:
                self._models.pop(mk)

    def _plan_bytes(self, digest: str, bundle: Bundle, seg: Segment, opts: Options, plan: SegmentPlan,
                    batch: int) -> Tuple[CacheEntry, bytes]:
        if self.ensure is not None:
            return self.ensure(digest, bundle, seg, opts, plan, batch)
        found = self.cache.read(plan.key)
        if found is None:
            raise EngineMissing(
                f"no engine in the cache {self.cache.root} for segment {seg.id} of bundle {digest[:19]}... "
                f"(backend {opts.backend.name}, batch {batch}, key {plan.key[:16]}...); nothing is built here: "
                "build it first (deploy push to this device)")
        return found

    def _engine(self, entry: CacheEntry, plan: bytes, spec: BuildSpec, backend: Backend) -> Engine:
        with self._lock:
            if entry.key in self._loaded:
                self._loaded.move_to_end(entry.key)
                return self._loaded[entry.key]
        with self._loading(entry.key):
            with self._lock:
                if entry.key in self._loaded:
                    return self._loaded[entry.key]
            eng = backend.load(plan, spec)
            eng.max_run_bytes = MAX_RUN_BYTES
            with self._lock:
                self._loaded[entry.key] = eng
                stale = list(self._loaded)[:-LOADED_ENGINES] if len(self._loaded) > LOADED_ENGINES else []
            for k in stale:
                self.forget(k)
            return eng

    @contextlib.contextmanager
    def _loading(self, key: str) -> Iterator[None]:
        """One loader per key; the key's lock exists only while a call holds or waits for it."""
        with self._lock:
            slot = self._key_locks.setdefault(key, _KeyLock())
            slot.users += 1
        try:
            if not slot.lock.acquire(timeout=LOAD_WAIT_S):
                raise Aborted(f"another call has been loading engine {key[:16]}... for {LOAD_WAIT_S:.0f} s; "
                              "retry later")
            try:
                yield
            finally:
                slot.lock.release()
        finally:
            with self._lock:
                slot.users -= 1
                if slot.users == 0:
                    del self._key_locks[key]


class BundleModel:
    """One bundle as an application calls it: `run(feeds)` takes the engines for the feeds' batch."""

    def __init__(self, models: LoadedModels, digest: str, bundle: Bundle, opts: Options) -> None:
        self.models = models
        self.digest = digest
        self.bundle = bundle
        self.options = opts

    @property
    def inputs(self) -> List[TensorSpec]:
        return list(self.bundle.manifest.inputs)

    @property
    def outputs(self) -> List[TensorSpec]:
        return list(self.bundle.manifest.outputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        batch = feeds_batch(self.bundle, dict(feeds))
        return self.models.runner(self.digest, self.bundle, self.options, batch).run(feeds)
