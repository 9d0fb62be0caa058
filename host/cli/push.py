"""`deploy push`, `bench`, `run` and `cache`: thin adapters over `host.pipeline`.

Errors propagate to the CLI edge (`_errors.handle`), KeyboardInterrupt included, so Ctrl-C exits 130 after the
pipeline's streams have cancelled the remote work.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from device_agent.errors import InvalidInput
from host.client.agent import connect
from host.client.retry import DEFAULT_RETRY_FOR_S

from ._options import (
    BatchRangeOpt, CalibrationOpt, CalibratorOpt, DeviceOpt, DevicesOpt, Fp16Opt, InputsOpt, Int8Opt, JsonOpt,
    MinCosineOpt, NoOffloadOpt, ProfileOpt, RegistryOpt, RetryForOpt, SampleOpt, ShapeOpt, ShapeProfilesOpt,
    ShapeRangeOpt, TrtOpt, ValidationOpt, VerboseOpt, WorkspaceOpt, retry_lines, shape_profiles,
)
from .output import Output
from .push_view import latency_table, layers_heading, layers_table, mib, observer_for, render_push, shapes_table

if TYPE_CHECKING:
    from host.pipeline.push import PushOptions

SourceArg = Annotated[Path, typer.Argument(help="ONNX model, bundle directory (deploy compile) or bundle archive.")]
BackendOpt = Annotated[Optional[str], typer.Option("--backend", help="Segment backend on the device (default: "
                                                   "its TensorRT, else onnxruntime-cuda on a GPU, else onnxruntime).")]
IterOpt = Annotated[int, typer.Option("--iterations", "-n", min=0, show_default=False,
                                     help="Timed iterations (default 100).")]
DurationOpt = Annotated[float, typer.Option("--duration", min=0.0, help="Benchmark for this many seconds instead.")]
WarmupOpt = Annotated[int, typer.Option("--warmup", min=0, help="Untimed iterations first.")]
BatchOpt = Annotated[int, typer.Option("--batch", min=0, show_default=False,
                                      help="Batch size to build and run (dynamic-batch bundles; default: OPT).")]


def _shapes(items: list[str]) -> dict[str, list[int]]:
    if not items:
        return {}
    from host.compiler.shape_ranges import parse_input_shape

    return dict(parse_input_shape(s) for s in items)


def _samples(npz: Optional[Path], items: list[str]) -> dict[str, Any]:
    if npz is None and not items:  # no numpy to import for a push without sample inputs
        return {}
    from host.pipeline.tensors import read_samples

    return read_samples(npz, items)


def _options(**kw: Any) -> "PushOptions":
    from host.pipeline.push import PushOptions

    if kw.get("iterations") and kw.get("duration_s"):
        raise InvalidInput("give --iterations or --duration, not both")
    return PushOptions.from_flat(**kw)


def push(
    source: SourceArg,
    device: DeviceOpt = "local",
    retry_for: RetryForOpt = DEFAULT_RETRY_FOR_S,
    fp16: Fp16Opt = False,
    int8: Int8Opt = False,
    calibration: CalibrationOpt = None,
    calibrator: CalibratorOpt = "minmax",
    validation: ValidationOpt = None,
    min_cosine: MinCosineOpt = None,
    bench: Annotated[bool, typer.Option("--bench", help="Benchmark after the build.")] = False,
    iterations: IterOpt = 0,
    duration: DurationOpt = 0.0,
    warmup: WarmupOpt = 10,
    batch: BatchOpt = 0,
    backend: BackendOpt = None,
    profile: ProfileOpt = None,
    trt_version: TrtOpt = None,
    input_shape: ShapeOpt = [],
    inputs: InputsOpt = None,
    input: SampleOpt = [],
    no_offload: NoOffloadOpt = [],
    batch_range: BatchRangeOpt = None,
    shape_range: ShapeRangeOpt = [],
    profiles_file: ShapeProfilesOpt = None,
    force_rebuild: Annotated[bool, typer.Option("--force-rebuild", help="Rebuild engines even if cached.")] = False,
    max_workspace_size: WorkspaceOpt = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the check against reference outputs.")] = False,
    max_rel_err: Annotated[Optional[float], typer.Option("--max-rel-err", min=0.0, help="Fail above this relative error "
                                                         "(default 1e-3 for FP32, 5e-2 for FP16/INT8); with --int8 "
                                                         "it also bounds INT8 against FP32 on the host.")] = None,
    registry: RegistryOpt = None,
    name: Annotated[Optional[str], typer.Option("--name", help="The model's name on the device: the push records a "
                                                "new version of it (default: the file's stem).")] = None,
    activate: Annotated[bool, typer.Option("--activate", help="Make the new version the one the device serves "
                                           "(deploy activate).")] = False,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Compile MODEL for the device's TensorRT (or reuse), upload, build, verify and optionally benchmark."""
    from host import api
    from host.pipeline.int8 import int8_options
    from host.pipeline.push import check_source

    check_source(source)
    out = Output(json, verbose)
    quant = int8_options(int8, calibration, calibrator, validation, max_rel_err, min_cosine)
    options = dict(fp16=fp16, int8=quant, profile=profile, trt_version=trt_version, backend=backend,
                   input_shapes=_shapes(input_shape), batch_range=batch_range,
                   shape_profiles=shape_profiles(shape_range, profiles_file, batch_range),
                   force_rebuild=force_rebuild,
                   sample_inputs=_samples(inputs, input), exclude_ops=list(no_offload),
                   verify=not no_verify, max_rel_err=max_rel_err, bench=bench, warmup=warmup,
                   iterations=iterations, duration_s=duration, batch=batch, registry=registry,
                   max_workspace_size=max_workspace_size, name=name, activate=activate)
    observer, live = observer_for(out, f"deploy push {source.name} --device {device}")
    with live:
        data = api.push(source, device, observer=observer, retry_for=retry_for, on_retry=retry_lines(out),
                        **options)
    out.result(data, lambda c: render_push(data, c))


def bench(
    source: SourceArg,
    device: DevicesOpt = ["local"],
    retry_for: RetryForOpt = DEFAULT_RETRY_FOR_S,
    iterations: IterOpt = 0,
    duration: DurationOpt = 0.0,
    warmup: WarmupOpt = 10,
    batch: BatchOpt = 0,
    fp16: Fp16Opt = False,
    backend: BackendOpt = None,
    profile: ProfileOpt = None,
    trt_version: TrtOpt = None,
    input_shape: ShapeOpt = [],
    inputs: InputsOpt = None,
    input: SampleOpt = [],
    no_offload: NoOffloadOpt = [],
    batch_range: BatchRangeOpt = None,
    shape_range: ShapeRangeOpt = [],
    profiles_file: ShapeProfilesOpt = None,
    max_workspace_size: WorkspaceOpt = None,
    layers: Annotated[bool, typer.Option("--layers", help="Also profile each layer (the backend's profiler, on runs "
                                         "after the timed ones): a table of the slowest, `layers` in --json.")] = False,
    top: Annotated[int, typer.Option("--top", min=1, help="Layers shown in the table and the report's chart.")] = 15,
    shape: Annotated[list[str], typer.Option("--shape", metavar="NAME=DxD...", help="Benchmark a ranged bundle at "
                                             "this shape (repeat per input; default: OPT).")] = [],
    shapes: Annotated[Optional[str], typer.Option("--shapes", metavar="min,opt,max", help="Benchmark a ranged bundle "
                                                  "at these points of each profile, one row each.")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write a Markdown report with a latency "
                                                   "histogram and CDF (PNG) into this directory; with --layers "
                                                   "also a bar chart of the slowest layers.")] = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Benchmark on one or several devices (one after another, so they do not compete); a side-by-side table."""
    from host import api
    from host.pipeline import push as pipeline
    from host.pipeline.report import require_matplotlib

    pipeline.check_source(source)
    if report is not None:
        require_matplotlib()
    out = Output(json, verbose)
    options = _options(fp16=fp16, profile=profile, trt_version=trt_version, backend=backend,
                       input_shapes=_shapes(input_shape), batch_range=batch_range,
                       shape_profiles=shape_profiles(shape_range, profiles_file, batch_range), verify=False, bench=True,
                       sample_inputs=_samples(inputs, input), exclude_ops=list(no_offload),
                       warmup=warmup, iterations=iterations, duration_s=duration, batch=batch, layers=layers,
                       max_workspace_size=max_workspace_size, bench_shape=list(shape), bench_points=shapes)
    runs: list[dict[str, Any]] = []
    for name in dict.fromkeys(device):
        observer, live = observer_for(out, f"deploy bench {source.name} --device {name}", prefix=f"[{name}] ")
        with live:
            runs.append(api.bench_one(source, name, options, observer, retry_for=retry_for,
                                      on_retry=retry_lines(out, f"[{name}] ")))
    data = api.bench_summary(source, runs, report, top=top)
    files = data["report"]

    def render(c: Any) -> None:
        if any(r.get("shapes") for r in runs):
            c.print(shapes_table(runs))
            return
        c.print(latency_table({r["device"]: r for r in runs}))
        for r in runs:
            if r.get("layers") is not None:
                c.print(layers_heading(r, top))
                c.print(layers_table(r["layers"], top))
        if files:
            c.print(f"report: {files['report']}")

    out.result(data, render)


def run(
    source: SourceArg,
    device: DeviceOpt = "local",
    retry_for: RetryForOpt = DEFAULT_RETRY_FOR_S,
    input: Annotated[list[str], typer.Option("--input", "-i", help="NAME=FILE.npy, once per model input (a model "
                                             "compiled here takes them as its sample inputs too).")] = [],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the outputs (.npz).")] = Path("out.npz"),
    fp16: Fp16Opt = False,
    backend: BackendOpt = None,
    profile: ProfileOpt = None,
    trt_version: TrtOpt = None,
    input_shape: ShapeOpt = [],
    no_offload: NoOffloadOpt = [],
    batch_range: BatchRangeOpt = None,
    shape_range: ShapeRangeOpt = [],
    profiles_file: ShapeProfilesOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run the model once on the device with the given inputs; write its outputs to an .npz file."""
    from host import api
    from host.pipeline import push as pipeline
    from host.pipeline.tensors import read_inputs, write_npz

    pipeline.check_source(source)
    arrays = read_inputs(input)  # bad input fails before any device work
    if output.suffix != ".npz":
        raise InvalidInput(f"-o {output}: the output file must end in .npz")
    out = Output(json, verbose)
    options = _options(fp16=fp16, profile=profile, trt_version=trt_version, backend=backend,
                       input_shapes=_shapes(input_shape), batch_range=batch_range,
                       shape_profiles=shape_profiles(shape_range, profiles_file, batch_range), verify=False,
                       sample_inputs=arrays, exclude_ops=list(no_offload))
    observer, live = observer_for(out, f"deploy run {source.name} --device {device}")
    with live:
        ran, outputs = api.run_once(source, device, arrays, options, observer, retry_for=retry_for,
                                    on_retry=retry_lines(out))
    write_npz(output, outputs)
    data = {**{k: ran[k] for k in ("device", "address", "bundle_digest")}, "output": str(output),
            **{k: ran[k] for k in ("latency_ms", "backend", "outputs", "upload")}}
    out.result(data, lambda c: c.print(
        f"wrote {output}: " + ", ".join(f"{o['name']} {o['dtype']}{o['shape']}" for o in data["outputs"])
        + f"  ({data['latency_ms']:.2f} ms on {data['backend']})"))


# ---------------------------------------------------------------- the engine cache (`deploy devices`: devices.py)

cache_app = typer.Typer(help="The engine cache of a device: list and prune.", no_args_is_help=True)


@cache_app.command("ls")
def cache_ls(device: DeviceOpt = "local", json: JsonOpt = False) -> None:
    """List the engines cached on the device."""
    with connect(device) as client:
        reply = client.list_engines()
    rows = [{"key": e.key, "segment_digest": e.segment_digest, "backend": e.backend,
             "backend_version": e.backend_version, "size": e.size, "digest": e.digest, "created": e.created,
             "last_used": e.last_used, "device_class": e.device_class, "attributes": dict(e.attributes)}
            for e in reply.engines]
    timing = [{"device_class": t.device_class, "class_digest": t.class_digest, "size": t.size, "digest": t.digest,
               "updated": t.updated, "facts": dict(t.facts)} for t in reply.timing_caches]
    data = {"device": device, "engines": rows, "total_bytes": reply.total_bytes, "limit_bytes": reply.limit_bytes,
            "timing_caches": timing}

    def render(c: Any) -> None:
        from rich.table import Table

        table = Table(box=None, header_style="bold", padding=(0, 2))
        for col in ("key", "segment", "backend", "size", "last used"):
            table.add_column(col)
        import datetime as dt

        for r in rows:
            used = dt.datetime.fromtimestamp(r["last_used"]).strftime("%Y-%m-%d %H:%M") if r["last_used"] else "-"
            table.add_row(r["key"][:16], r["segment_digest"][:19], f"{r['backend']} {r['backend_version']}",
                          mib(r["size"]), used)
        c.print(table)
        c.print(f"{len(rows)} engine(s), {mib(reply.total_bytes)} of {mib(reply.limit_bytes)}")
        for t in timing:  # TensorRT timing caches, one per device class
            when = dt.datetime.fromtimestamp(t["updated"]).strftime("%Y-%m-%d %H:%M")
            c.print(f"timing cache {t['device_class']}: {mib(t['size'])} {t['digest'][:19]} updated {when}")

    Output(json).result(data, render)


@cache_app.command("prune")
def cache_prune(
    device: DeviceOpt = "local",
    max_bytes: Annotated[Optional[int], typer.Option("--max-bytes", min=0, help="Prune least recently used "
                                                     "engines down to this size.")] = None,
    key: Annotated[list[str], typer.Option("--key", help="Remove this entry (repeat).")] = [],
    all: Annotated[bool, typer.Option("--all", help="Remove every engine.")] = False,
    json: JsonOpt = False,
) -> None:
    """Remove engines from the device's cache: all, down to a size, or by key."""
    from protos import agent_pb2

    if sum([max_bytes is not None, bool(key), all]) != 1:
        raise InvalidInput("say what to prune: exactly one of --all, --max-bytes N or --key KEY")
    request = agent_pb2.PruneRequest(keys=key, all=all)
    if max_bytes is not None:
        request.max_bytes = max_bytes
    with connect(device) as client:
        reply = client.prune(request)
    data = {"device": device, "removed": list(reply.removed), "freed_bytes": reply.freed_bytes,
            "total_bytes": reply.total_bytes, "kept": list(reply.kept)}

    def render(c: Any) -> None:
        c.print(f"removed {len(reply.removed)} engine(s), freed {mib(reply.freed_bytes)}; "
                f"{mib(reply.total_bytes)} left")
        if reply.kept:
            c.print(f"left alone (engines of kept model versions, deploy models ls): {len(reply.kept)}")

    Output(json).result(data, render)


def register(app: typer.Typer) -> None:
    app.command("push")(push)
    app.command("bench")(bench)
    app.command("run")(run)
    app.add_typer(cache_app, name="cache")


__all__ = ["register"]
