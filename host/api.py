"""The Python API for notebooks and scripts: what `deploy compile/push/bench/run/fleet warm` do, as functions.

Each returns the same data as the command's `--json` (plain dicts and lists), and raises the project's own
exception types (`device_agent.errors.DeployError` subclasses, `host.client.errors.AgentError`), so a script
can tell bad input from an unreachable device. `docs/api.md` has runnable examples. The CLI commands are thin
layers over these functions and add only progress views and output formatting.
"""
from __future__ import annotations

from dataclasses import asdict

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

if TYPE_CHECKING:
    import numpy as np

    from host.pipeline.observer import Observer

PathLike = Union[str, "os.PathLike[str]"]


def compile(model: PathLike, output: PathLike, **options: Any) -> dict[str, Any]:  # noqa: A001 - the verb
    """Compile an ONNX model into a bundle in ``output``; ``options`` are `CompileOptions` fields
    (``profile``, ``trt_version``, ``input_shapes``, ``sample_inputs``, ``exclude_ops``, ``fp16``, ...)."""
    from host.compiler.api import compile_model

    return compile_model(model, output, **options).to_json()


def _push_options(**kw: Any):
    from device_agent.errors import InvalidInput
    from host.pipeline.push import PushOptions

    if kw.get("iterations") and kw.get("duration_s"):
        raise InvalidInput("give iterations or duration_s, not both")
    if kw.get("registry"):  # a bad address is refused before any work
        from device_agent.registry import RegistryRef

        RegistryRef.parse(kw["registry"])
    return PushOptions.from_flat(**kw)


def push(source: PathLike, device: str = "local", *, observer: Optional["Observer"] = None, retry_for: float = 0,
         on_retry: Any = None, **options: Any) -> dict[str, Any]:
    """Compile (or reuse) for the device, upload, build, verify, optionally benchmark (``bench=True``).

    ``options`` are flat (`PushOptions.from_flat`): `host.pipeline.push.PushOptions`' own fields and the
    `host.compiler.options.CompileOptions` fields (``batch_range`` for its ``batch``); ``device`` an inventory name,
    ``local`` or HOST:PORT."""
    from host.client.agent import connect
    from host.pipeline.push import check_source, push as run_push

    source = Path(source)
    check_source(source)
    opts = _push_options(**options)
    with connect(device, retry_for=retry_for, on_retry=on_retry) as client:
        return run_push(client, source, opts, observer).to_json()


def bench_one(source: Path, device: str, options: Any, observer: Optional["Observer"] = None,
              retry_for: float = 0, on_retry: Any = None) -> dict[str, Any]:
    """One device's row of `deploy bench` (with the raw samples under ``samples_ms``)."""
    from host.client.agent import connect
    from host.pipeline import push as pipeline

    with connect(device, retry_for=retry_for, on_retry=on_retry) as client:
        ready = pipeline.make_ready(client, source, options, observer)
        shape_rows = _bench_at_shapes(client, ready, options, observer)
        if shape_rows:  # `--shape` / `--shapes`: one row per shape; the device's summary is the first row's
            return {"device": device, "address": client.address, "bundle_digest": ready.prepared.digest,
                    "cache_hits": ready.build.cache_hits, "segments": len(ready.build.segments),
                    **{k: v for k, v in shape_rows[0].items() if k not in ("shape", "shapes", "first_call_ms")},
                    "shapes": shape_rows}
        result = pipeline.benchmark(client, ready.prepared.digest, ready.build_options, options, observer)
    if result.layers is not None:
        from host.pipeline.layers import name_by_model

        result.layers = name_by_model(result.layers, source, ready.prepared.bundle_dir, ready.prepared.manifest)
    return {"device": device, "address": client.address, "bundle_digest": ready.prepared.digest,
            "cache_hits": ready.build.cache_hits, "segments": len(ready.build.segments),
            **result.to_json(samples=True)}


def _bench_at_shapes(client: Any, ready: Any, options: Any, observer: Any) -> list[dict[str, Any]]:
    """`bench --shape` / `--shapes` rows (host/pipeline/bench_shapes.py), or [] when neither was given."""
    if not options.bench_shape and not options.bench_points:
        return []
    from device_agent.bundle import Bundle
    from host.pipeline.bench_shapes import bench_rows, choose

    prepared = ready.prepared
    choices = choose(prepared.manifest, options.bench_shape, options.bench_points)
    bundle = Bundle.open(prepared.bundle_dir) if prepared.bundle_dir else None
    return bench_rows(client, prepared.digest, ready.build_options, options, bundle, prepared.manifest, choices,
                      observer)


def bench_summary(source: Path, runs: list[dict[str, Any]], report: Optional[PathLike] = None,
                  top: int = 15) -> dict[str, Any]:
    """`deploy bench --json` from the rows; writes the report (Markdown + PNGs) when ``report`` is a directory
    (with the ``top`` slowest layers charted where the rows have a layer profile)."""
    from host.pipeline.report import write_report

    files = write_report(Path(report), str(source), runs, top=top) if report is not None else None
    return {"source": str(source), "devices": [{k: v for k, v in r.items() if k != "samples_ms"} for r in runs],
            "report": files}


def bench(source: PathLike, devices: Sequence[str] = ("local",), *, report: Optional[PathLike] = None,
          retry_for: float = 0, top: int = 15, **options: Any) -> dict[str, Any]:
    """Benchmark on each device in turn (so they do not compete); ``options`` as for `push` (``layers=True``: a
    per-layer profile per device)."""
    from host.pipeline.push import check_source
    from host.pipeline.report import require_matplotlib

    source = Path(source)
    check_source(source)
    if report is not None:
        require_matplotlib()
    opts = _push_options(verify=False, bench=True, **options)
    runs = [bench_one(source, d, opts, retry_for=retry_for) for d in dict.fromkeys(devices)]
    return bench_summary(source, runs, report, top=top)


def run_once(source: Path, device: str, inputs: dict[str, "np.ndarray"], options: Any,
             observer: Optional["Observer"] = None, retry_for: float = 0, on_retry: Any = None):
    """Make the model ready on the device and run it once: (its `--json` data without ``output``, output arrays)."""
    from host.client.agent import connect
    from host.pipeline import push as pipeline
    from host.pipeline.observer import Observer
    from host.pipeline.tensors import to_arrays, to_tensors
    from protos import agent_pb2

    observer = observer or Observer()
    with connect(device, retry_for=retry_for, on_retry=on_retry) as client:
        ready = pipeline.make_ready(client, source, options, observer,
                                    check=lambda prepared: check_inputs(prepared.manifest, inputs))
        observer.phase("run", f"{len(inputs)} input(s)")
        reply = client.run(agent_pb2.RunRequest(bundle_digest=ready.prepared.digest, options=ready.build_options,
                                                inputs=to_tensors(inputs)))
        observer.phase_done("run", reply.latency_ms / 1e3, f"{reply.latency_ms:.2f} ms on {reply.backend}")
    outputs = to_arrays(reply.outputs)
    data = {"device": device, "address": client.address, "bundle_digest": ready.prepared.digest,
            "latency_ms": reply.latency_ms, "backend": reply.backend, "upload": asdict(ready.upload),
            "outputs": [{"name": k, "dtype": v.dtype.name, "shape": list(v.shape)} for k, v in outputs.items()]}
    return data, outputs


def run(source: PathLike, inputs: dict[str, "np.ndarray"], device: str = "local", *, retry_for: float = 0,
        **options: Any) -> dict[str, Any]:
    """Run once with ``inputs`` (name -> array); the `--json` data plus ``arrays``: the outputs by name.

    A model compiled here takes the inputs as its sample inputs too (they bind symbolic dims)."""
    from host.pipeline.push import check_source

    source = Path(source)
    check_source(source)
    opts = _push_options(verify=False, sample_inputs=dict(inputs), **options)
    data, outputs = run_once(source, device, dict(inputs), opts, retry_for=retry_for)
    return {**data, "arrays": outputs}


def check_inputs(manifest: Any, arrays: dict[str, Any]) -> None:
    """Every model input given once, nothing else: one line naming what is missing or unknown."""
    from device_agent.errors import InvalidInput

    wanted = [t.name for t in manifest.inputs]
    missing = [n for n in wanted if n not in arrays]
    unknown = [n for n in arrays if n not in wanted]
    if unknown or missing:
        raise InvalidInput(f"the model's inputs are {wanted}; "
                           + (f"unknown --input {unknown}" if unknown else f"missing --input for {missing}")
                           + "; pass --input NAME=FILE.npy for each")


def fleet_warm(source: PathLike, tags: Sequence[str] = (), *, concurrency: Optional[int] = None,
               max_failures: Optional[str] = None, retry_for: float = 0, on_event: Any = None,
               registry: Optional[str] = None, via_registry: bool = False,
               shape_profiles: Sequence[dict] = ()) -> dict[str, Any]:
    """Build once per device class of the inventory's devices (those with every tag), copy to the rest.

    With ``registry`` each class's bundle, engines and timing cache are also published there; with ``via_registry``
    the copies go through it too (devices pull; docs/fleet.md). The result's ``ok``
    is False when a device failed; the per-class ``failed`` lists say why."""
    from device_agent.errors import InvalidInput
    from host.fleet.warm import DEFAULT_CONCURRENCY, Warmer, failure_bound, model_plans

    source = Path(source)
    if not source.exists():
        raise InvalidInput(f"{source}: no such file or directory; pass an ONNX model or a bundle")
    devices = select_devices(tags)
    failure_bound(max_failures, len(devices))
    plans = model_plans(source, _ranged_options(shape_profiles))
    kwargs: dict[str, Any] = dict(concurrency=concurrency or DEFAULT_CONCURRENCY, on_event=on_event,
                                  retry_for=retry_for, max_failures=max_failures)
    if via_registry and not registry:
        raise InvalidInput("--via-registry needs --registry [https://]HOST[:PORT]/REPO to copy through")
    if registry:
        from host.fleet.via_registry import PublishingWarmer, RegistryWarmer
        from host.registry.credentials import registry_client

        kind = RegistryWarmer if via_registry else PublishingWarmer  # pulls, or gRPC copies + publish
        warmer: Warmer = kind(devices, plans, registry=registry_client(registry), **kwargs)
    else:
        warmer = Warmer(devices, plans, **kwargs)
    result = warmer.run()
    errors = [c.plan_error for c in result.classes]
    if errors and all(isinstance(e, InvalidInput) for e in errors):
        raise errors[0]  # the model itself is bad: one error, not a table of identical failures
    return result.to_dict()


def _ranged_options(shape_profiles: Sequence[dict]) -> Any:
    """`fleet warm`'s compile options: the default push's, with the shape profiles given (None: the default)."""
    if not shape_profiles:
        return None
    from host.pipeline.push import PushOptions

    return PushOptions.from_flat(shape_profiles=list(shape_profiles))


def fleet_rollout(source: Optional[PathLike], name: Optional[str] = None, tags: Sequence[str] = (), *,
                  waves: Optional[str] = None, max_failures: Optional[str] = None,
                  health_timeout: Optional[float] = None, concurrency: Optional[int] = None,
                  max_rel_err: Optional[float] = None, resume: Optional[int] = None,
                  on_event: Any = None, registry: Optional[str] = None) -> dict[str, Any]:
    """Activate `source` as NAME on the inventory's devices (those with every tag) wave by wave, stopping and
    taking every switched device back past ``max_failures``; or ``resume`` a recorded rollout (docs/fleet.md).
    With ``registry`` warming also publishes there, and a rollout that went forward publishes each class's model
    target: agents polling that registry activate the version last (``published`` in the result)."""
    from host.fleet.rollout import RolloutOptions, run_rollout

    defaults = RolloutOptions()
    options = RolloutOptions(waves=waves or defaults.waves,
                             max_failures=defaults.max_failures if max_failures is None else str(max_failures),
                             health_timeout_s=defaults.health_timeout_s if health_timeout is None
                             else float(health_timeout),
                             concurrency=concurrency or defaults.concurrency, max_rel_err=max_rel_err,
                             tags=tuple(tags), registry=registry or None)
    return run_rollout(Path(source) if source is not None else None, name, tags, options, resume=resume,
                       on_event=on_event)


def fleet_status(name: str, tags: Sequence[str] = ()) -> dict[str, Any]:
    """Per device of the inventory (with every tag): NAME's active and previous version, its bundle, the last
    rollout step, and drift from what its class should serve per the last rollout that went forward."""
    from host.fleet.fleet_status import fleet_status as status
    from host.fleet.rollout_db import RolloutDB

    devices = select_devices(tags)
    with RolloutDB() as db:
        return status(name, devices, db)


def select_devices(tags: Sequence[str] = ()) -> list:
    """The inventory's devices with every tag; none is one line saying where to add them."""
    from device_agent.errors import InvalidInput
    from host.inventory import load

    inventory = load()
    devices = inventory.select(list(tags))
    if not devices:
        which = f" with tag(s) {', '.join(tags)}" if tags else ""
        raise InvalidInput(f"no devices{which} in the inventory {inventory.path}; add [devices.NAME] entries "
                           "(address, profile, tags) to deploy.toml")
    return devices


def models(device: str = "local", name: str = "") -> dict[str, Any]:
    """`deploy models ls --json`: each name's kept versions, which is active and previous, each version's state."""
    from host.client.agent import connect
    from host.models import list_models

    with connect(device) as client:
        return list_models(client, name)


def activate(name: str, version: Optional[int] = None, device: str = "local") -> dict[str, Any]:
    """`deploy activate --json`: make `version` (default the newest) the one the device serves."""
    from host.client.agent import connect
    from host.models import activate as do_activate

    with connect(device) as client:
        return do_activate(client, name, version)


def rollback(name: str, device: str = "local") -> dict[str, Any]:
    """`deploy rollback --json`: the previous active version again."""
    from host.client.agent import connect
    from host.models import rollback as do_rollback

    with connect(device) as client:
        return do_rollback(client, name)
