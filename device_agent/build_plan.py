"""What a segment's engine is, before anything is built or loaded: options, build spec, cache key, batch.

The planner answers "which engine does this bundle need here, under which key" for the agent's Build and Run and for
an application's process alike (`loaded.LoadedModels`): one place decides the options (request, else operator, else
bundle, else default), the batch a request may use, the key's device-class facts, and the multi-engine mode-0 rule
(one engine per segment, rebuilt for a larger batch, that covers every smaller one).
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from . import engines
from .bundle import Bundle
from .cache import SCHEMA, CacheEntry, EngineCache, cache_key
from .engines.base import Backend, BuildSpec, ProfileShape, TensorMeta
from .engines.model import batch_of, has_dynamic_batch, profile_max_batch, profiles_for
from .errors import InvalidInput
from .manifest import Segment
from .shape_profiles import bundle_bounds, check_feeds
from .timing_cache import TimingCaches

MAX_BATCH = 4096


@dataclass
class Options:
    """A request's build options, resolved (see `Planner.options`)."""

    backend: Backend
    fp16: bool
    workspace: int
    mode: int  # 0: one engine, rebuilt for a larger batch; 1: one engine per batch size
    batch: int  # 0: the bundle's own (its reference samples, else 1)
    force: bool  # Build only: build even when the cache holds the engine


@dataclass(frozen=True)
class SegmentPlan:
    """A segment's engine as it is built and looked up: the backend's spec, the cache-key parts and the key."""

    spec: BuildSpec
    parts: Dict[str, Any]
    key: str


def check_batch_limit(batch: int) -> int:
    if batch > MAX_BATCH:
        raise InvalidInput(f"batch {batch} is above this agent's limit of {MAX_BATCH}")
    return batch


def check_batch(bundle: Bundle, batch: int) -> int:
    """A batch outside the range the bundle was compiled for (``--batch-range MIN:OPT:MAX``) is refused."""
    rng = bundle.manifest.options.get("batch")
    if isinstance(rng, list) and len(rng) == 3 and not rng[0] <= batch <= rng[2]:
        raise InvalidInput(f"batch {batch} is outside the range {rng[0]}..{rng[2]} this bundle was compiled "
                           f"for; recompile with --batch-range {rng[0]}:{rng[1]}:{max(batch, rng[2])}")
    return check_batch_limit(batch)


def feeds_batch(bundle: Bundle, feeds: Dict[str, Any]) -> int:
    """The batch of a run's inputs, checked against the bundle's range and the agent's limit; inputs outside every
    optimization profile of a ranged bundle are refused here, before any engine is looked up or built."""
    if check_feeds(bundle.manifest.options, feeds) is not None:
        return 1  # a ranged bundle: one engine holds every shape in its profiles, the batch among them
    return check_batch(bundle, batch_of(bundle.manifest.inputs, feeds))


def mode0_max_batch(entry: CacheEntry, like: Dict[str, Any]) -> Optional[int]:
    """The largest batch of a mode-0 engine (its range starts at 1) built like `like` in all but its profiles."""
    rng = profile_max_batch(entry.parts.get("profiles", []))
    if not rng or rng[0] != 1:
        return None
    if any(entry.parts.get(k) != v for k, v in like.items() if k != "profiles"):
        return None
    return rng[1]


class Planner:
    """Options, specs and keys of one device (its GPU and arch from `facts`, the agent's settings)."""

    def __init__(self, settings: Any, cache: EngineCache, timing: TimingCaches, facts: Any = None) -> None:
        self.settings = settings
        self.cache = cache
        self.timing = timing
        self.facts = facts

    # ---------------------------------------------------------------- device facts (part of every key)
    @property
    def gpu(self) -> Tuple[str, str]:
        """(name, compute capability) of the device's first GPU, or ("", "")."""
        gpus = getattr(self.facts, "gpus", None) or []
        return (gpus[0].name, gpus[0].compute_capability) if gpus else ("", "")

    @property
    def arch(self) -> str:
        return getattr(self.facts, "arch", None) or platform.machine()

    def device_parts(self, backend_name: str) -> Dict[str, str]:
        """The device-class fields of an engine key for `backend_name` on this device."""
        probe = engines.get(backend_name).probe() if backend_name in engines.BACKENDS else None
        gpu, cc = self.gpu
        return {"backend": backend_name, "backend_version": probe.version if probe and probe.available else "",
                "gpu": gpu, "cc": cc, "l4t": getattr(self.facts, "l4t_release", None) or "", "arch": self.arch}

    # ---------------------------------------------------------------- options and batch
    def options(self, bundle: Optional[Bundle] = None, backend: str = "", fp16: Optional[bool] = None,
                workspace: Optional[int] = None, mode: Optional[int] = None, batch: int = 0,
                force: bool = False) -> Options:
        """The build options: the request's (None: not given), else this agent's where its operator set them,
        else the bundle's (its workspace), else this agent's defaults."""
        s = self.settings
        chosen = engines.select(backend, s.backend)
        mode = s.multi_engine_mode if mode is None else mode
        if mode not in (0, 1):
            raise InvalidInput(f"multi_engine_mode {mode} is not 0 (one engine, rebuilt for a larger batch) "
                               "or 1 (one engine per batch size)")
        if workspace is None:
            if _source(s, "max_workspace_bytes") != "default":  # --max-workspace-bytes or the seed's variable
                workspace = s.max_workspace_bytes
            else:  # the compiler writes the profile's default workspace (256 MiB on a Nano) into the manifest
                workspace = manifest_workspace(bundle) or s.max_workspace_bytes
        check_batch_limit(batch)
        return Options(chosen, bool(s.fp16) if fp16 is None else fp16, int(workspace), int(mode), int(batch),
                       bool(force))

    def segment_batch(self, bundle: Bundle, opts: Options) -> int:
        """The batch Build builds for: the request's, else the reference samples', else 1."""
        if opts.batch:
            return check_batch(bundle, opts.batch)
        if has_dynamic_batch(bundle.manifest.inputs) and not bundle_bounds(bundle.manifest.options):
            ref_in, _ = bundle.read_reference()
            return batch_of(bundle.manifest.inputs, ref_in) if ref_in else 1
        return 1

    # ---------------------------------------------------------------- specs and keys
    def plan(self, seg: Segment, opts: Options, batch: int) -> SegmentPlan:
        spec = self._spec(seg, opts, batch)
        parts = self._parts(seg, opts, spec)
        return SegmentPlan(spec, parts, cache_key(parts))

    def superseded(self, seg: Segment, opts: Options, plan: SegmentPlan, batch: int) -> List[CacheEntry]:
        """Mode 0 keeps one engine: the smaller ones a new engine for `batch` covers."""
        if opts.mode != 0 or not plan.spec.profiles or seg.profiles:
            return []
        smaller = []
        for e in self.cache.list(seg.digest):
            largest = mode0_max_batch(e, plan.parts)
            if e.key != plan.key and largest is not None and largest < batch:
                smaller.append(e)
        return smaller

    def _spec(self, seg: Segment, opts: Options, batch: int) -> BuildSpec:
        strict = opts.backend.name in engines.TENSORRT_FAMILY
        if seg.profiles:  # a ranged bundle: the compiler's profiles, one engine for every shape in them
            profiles = [[ProfileShape(p["name"], tuple(p["min"]), tuple(p["opt"]), tuple(p["max"])) for p in prof]
                        for prof in seg.profiles]
        else:
            profiles = profiles_for(seg.inputs, batch, opts.mode, strict)
        if profiles and opts.mode == 0 and not seg.profiles:
            profiles = self._mode0_profiles(seg, opts, batch, strict) or profiles
        meta = lambda ts: [TensorMeta(t.name, t.dtype, tuple(d if isinstance(d, int) else None for d in t.shape))
                           for t in ts]
        return BuildSpec(fp16=opts.fp16, int8=bool(seg.calibration), calibration=seg.calibration,
                         max_workspace_bytes=opts.workspace, profiles=profiles,
                         timing_cache_path=str(self.timing.path_for(self.device_parts(opts.backend.name)))
                         if strict else None,
                         inputs=meta(seg.inputs), outputs=meta(seg.outputs))

    def _mode0_profiles(self, seg: Segment, opts: Options, batch: int,
                        strict: bool) -> Optional[List[List[ProfileShape]]]:
        """Mode 0: reuse the cached engine whose batch range covers ``batch`` (the largest built so far)."""
        like = self._parts(seg, opts, BuildSpec(fp16=opts.fp16, int8=bool(seg.calibration),
                                                calibration=seg.calibration, max_workspace_bytes=opts.workspace))
        sizes = [m for m in (mode0_max_batch(e, like) for e in self.cache.list(seg.digest)) if m and m >= batch]
        return profiles_for(seg.inputs, max(sizes), 0, strict) if sizes else None

    def _parts(self, seg: Segment, opts: Options, spec: BuildSpec) -> Dict[str, Any]:
        parts: Dict[str, Any] = {"schema": SCHEMA, "segment": seg.digest}
        parts.update(self.device_parts(opts.backend.name))
        parts.update(spec.key_parts())
        return parts


def _source(settings: Any, name: str) -> str:
    """Where a setting came from ("default", "flag", an environment variable); settings without sources: default."""
    source = getattr(settings, "source", None)
    return source(name) if callable(source) else "default"


def manifest_workspace(bundle: Optional[Bundle]) -> int:
    """The bundle manifest's ``max_workspace_size`` (the compile profile's default or the user's), or 0."""
    value = bundle.manifest.options.get("max_workspace_size") if bundle is not None else None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return 0
    return int(value)
