"""From a version record to something that runs: the agent's own loaded-engines seam (`device_agent/loaded.py`),
given no builder, so a version whose engine is missing fails in one line instead of building."""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Dict, Optional

import numpy as np

from device_agent.build_plan import Options, feeds_batch
from device_agent.engines.model import has_dynamic_batch
from device_agent.shape_profiles import bundle_bounds
from device_agent.errors import PreconditionFailed
from device_agent.loaded import LoadedModels
from device_agent.models import VersionRecord

from . import Loaded, Loader, PathLike


def settings_for(store: Optional[PathLike] = None, cache_dir: Optional[PathLike] = None,
                 backend: Optional[str] = None) -> Any:
    """The agent's settings as `deploy-agent` would read them here (its DEPLOY_AGENT_* variables, the seed's
    TVM_TENSORRT_CACHE_DIR), with what the caller names on top."""
    from device_agent.config import parse_args

    argv = []
    for flag, value in (("--store", store), ("--cache-dir", cache_dir), ("--backend", backend)):
        if value:
            argv += [flag, str(value)]
    return parse_args(argv)


def record_options(models: LoadedModels, record: VersionRecord, bundle: Any) -> Options:
    o = record.options
    return models.planner.options(bundle, backend=o["backend"], fp16=bool(o["fp16"]), workspace=int(o["workspace"]),
                                  mode=int(o["mode"]), batch=int(o.get("batch", 0)))


def options_json(opts: Options) -> Dict[str, Any]:
    """What a version record keeps of its options: enough to derive the same engine keys again."""
    return {"backend": opts.backend.name, "fp16": opts.fp16, "workspace": opts.workspace, "mode": opts.mode,
            "batch": opts.batch}


def version_loader(settings: Any = None, models: Optional[LoadedModels] = None) -> Loader:
    """A loader over `models` (default: this device's store and cache, as `settings` say); never builds."""
    models = models if models is not None else LoadedModels.from_settings(settings)
    in_use: Counter = Counter()  # engine key -> open versions using it (a key two versions share stays loaded)
    lock = threading.Lock()

    def load(record: VersionRecord) -> Loaded:
        bundle = models.bundles.get(record.bundle_digest)
        opts = record_options(models, record, bundle)
        batch = models.planner.segment_batch(bundle, opts)
        keys = [models.planner.plan(seg, opts, batch).key for seg in bundle.manifest.segments]
        if keys != [e.key for e in record.engines]:
            raise PreconditionFailed(f"model {record.name!r} version {record.version} was built for another "
                                     f"backend version or device than this one has now; push it again to rebuild")
        runners = {batch: models.runner(record.bundle_digest, bundle, opts, batch)}  # loads now; never builds
        with lock:
            in_use.update(keys)

        def any_batch(feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
            b = feeds_batch(bundle, feeds)
            runner = runners.get(b)
            if runner is None:  # another batch of a dynamic-batch model: its engines, from the cache only
                runner = runners.setdefault(b, models.runner(record.bundle_digest, bundle, opts, b))
            return runner.run(feeds)

        # one batch: the runner itself, no frame in between
        ranged = bool(bundle_bounds(bundle.manifest.options))  # feeds_batch checks the shape ranges
        run = any_batch if has_dynamic_batch(bundle.manifest.inputs) or ranged else runners[batch].run

        def close() -> None:
            runners.clear()
            with lock:
                in_use.subtract(keys)
                idle = [k for k in keys if in_use[k] <= 0]
            for k in idle:
                models.forget(k)

        return Loaded(record, list(bundle.manifest.inputs), list(bundle.manifest.outputs), run, close)

    return load
