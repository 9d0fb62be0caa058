"""Building a segment's engine and committing it to the engine cache: the only code that builds.

The bundle's digest travels with the bundle (never rebuilt from its directory's name), because the segment's bytes
are checked against that digest's unpacked copy before every build. A mode-0 build drops the smaller engines it
supersedes, from the cache and from the loaded engines (through `forget`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Tuple

from . import engines
from .build_plan import Options, Planner, SegmentPlan
from .build_progress import Steps, finish, run_with_progress
from .bundle import Bundle
from .cache import CacheEntry, EngineCache
from .engines.base import BuildOutput
from .manifest import Segment
from .memory_guard import check_build_fits
from .timing_cache import build_note
from .unpacked import UnpackedBundles


@dataclass(frozen=True)
class BuiltEngine:
    """A build's result, committed: its cache entry and what the backend reported (plan, times, messages)."""

    entry: CacheEntry
    output: BuildOutput


class SegmentBuilder:
    """Builds segments with the chosen backend into the cache; `forget(key)` drops a loaded engine it replaced."""

    def __init__(self, planner: Planner, cache: EngineCache, unpacked: UnpackedBundles, settings: Any,
                 forget: Callable[[str], None]) -> None:
        self.planner = planner
        self.cache = cache
        self.unpacked = unpacked
        self.settings = settings
        self.forget = forget

    def build(self, digest: str, bundle: Bundle, seg: Segment, opts: Options, plan: SegmentPlan, batch: int,
              heartbeat_s: float) -> Steps[BuiltEngine]:
        """Build and commit (the caller holds the key's lock), yielding progress while the backend builds."""
        onnx = self.unpacked.segment_bytes(digest, bundle, seg)  # never build changed bytes
        onnx = self.unpacked.inline_weights(digest, bundle, seg, onnx)  # weights kept beside the graph, checked
        # the workspace is TensorRT's builder scratch; onnxruntime's builds take none
        workspace = opts.workspace if opts.backend.name in engines.TENSORRT_FAMILY else 0
        check_build_fits(seg.id, workspace, len(onnx), int(getattr(self.settings, "memory_limit_bytes", 0)))
        output = yield from run_with_progress(lambda sp: opts.backend.build(onnx, sp), plan.spec, heartbeat_s)
        return self._commit(seg, opts, plan, batch, output)

    def ensure(self, digest: str, bundle: Bundle, seg: Segment, opts: Options, plan: SegmentPlan,
               batch: int) -> Tuple[CacheEntry, bytes]:
        """The segment's plan for a run: cached (hashed as it is read) or built now, once, under the key's lock."""
        with self.cache.lock(plan.key):
            found = self.cache.read(plan.key)
            if found is not None:
                return found
            built = finish(self.build(digest, bundle, seg, opts, plan, batch, heartbeat_s=0))
            return built.entry, built.output.plan

    def timing_note(self, opts: Options) -> str:
        """What a build will do with this device class's TensorRT timing cache, for the CACHE_MISS event."""
        trt = opts.backend.name in engines.TENSORRT_FAMILY  # others: the tensorrt class's cache, which they skip
        info = self.planner.timing.info(self.planner.device_parts(opts.backend.name if trt else "tensorrt"))
        return build_note(info, opts.backend.name, trt)

    def _commit(self, seg: Segment, opts: Options, plan: SegmentPlan, batch: int,
                output: BuildOutput) -> BuiltEngine:
        entry = self.cache.put(plan.parts, output.plan)
        for old in self.planner.superseded(seg, opts, plan, batch):  # mode 0: one engine per segment
            self.cache.remove(old.key)
            self.forget(old.key)
        return BuiltEngine(entry, output)
