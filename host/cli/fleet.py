"""`deploy fleet ls` and `deploy fleet warm`: the inventory grouped by device class, and engine-cache warming."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from host.client.agent import AgentClient
from host.client.retry import DEFAULT_RETRY_FOR_S
from host.fleet.classes import classify, group
from host.fleet.fanout import DEFAULT_CONCURRENCY, fan_out, first_line, is_unreachable
from host.fleet.prometheus import DEFAULT_METRICS_PORT
from host.fleet.states import short_state, summary_line
from host.inventory import Device
from protos import agent_pb2

from ._errors import EXIT_DEVICE, EXIT_UNREACHABLE
from ._options import (ConcurrencyOpt, DetailOpt, EventsOpt, HealthTimeoutOpt, JsonOpt, MaxFailuresOpt, ModelNameOpt,
                       RegistryOpt, ResumeOpt, RetryForOpt, ShapeProfilesOpt, ShapeRangeOpt, TagOpt, ViaRegistryOpt,
                       WavesOpt, shape_profiles)
from .output import Output

if TYPE_CHECKING:  # rich is imported where a table is drawn, so `--json` never loads it
    from rich.console import Console

fleet_app = typer.Typer(help="The fleet: devices grouped by class, engine caches warmed once per class, "
                        "versions rolled out wave by wave.", no_args_is_help=True)


def _devices(tags: Optional[list[str]]) -> list[Device]:
    from host.api import select_devices

    return select_devices(tags or [])


def _info(device: Device) -> agent_pb2.DeviceInfo:
    with AgentClient(device) as client:
        return client.info()


def fleet_listing(devices: list[Device], concurrency: int = DEFAULT_CONCURRENCY) -> dict[str, Any]:
    """The documented JSON shape of `deploy fleet ls --json`."""
    outcomes = fan_out(devices, _info, concurrency=concurrency)
    reachable = [((o.item, o.value), classify(o.value, o.item)) for o in outcomes if o.ok]
    classes = []
    for cls, members in group(reachable).items():
        classes.append({
            "class": cls.label,
            "facts": cls.to_dict(),
            "devices": [{"name": d.name, "address": d.address, "tags": list(d.tags),
                         "memory_available_bytes": info.memory_available_bytes,
                         "store_free_bytes": info.store_free_bytes} for d, info in members],
        })
    unreachable = [{"device": o.item.name, "address": o.item.address, "reason": first_line(o.error),
                    "unreachable": is_unreachable(o.error), "state": short_state(o.error),
                    "request_id": getattr(o.error, "request_id", "") or None}
                   for o in outcomes if not o.ok]
    return {"classes": classes, "unreachable": unreachable,
            "summary": summary_line([short_state(o.error) for o in outcomes])}


def _render_listing(data: dict[str, Any], console: Console, verbose: bool = False) -> None:
    from rich.table import Table

    table = Table(title=f"{sum(len(c['devices']) for c in data['classes'])} device(s) in "
                        f"{len(data['classes'])} class(es)")
    for col in ("class", "devices", "free memory (GiB)"):
        table.add_column(col)
    for c in data["classes"]:
        names = ", ".join(d["name"] for d in c["devices"])
        free = ", ".join(f"{d['memory_available_bytes'] / 2**30:.1f}" for d in c["devices"])
        table.add_row(c["class"], names, free)
    for u in data["unreachable"]:
        table.add_row(f"[red]{u['state']}[/red]", u["device"], "-")
    console.print(table)
    console.print(data["summary"], markup=False)
    for u in data["unreachable"] if verbose else ():
        console.print(f"  {u['device']}: {_why(u, True)}", markup=False)


@fleet_app.command("ls")
def ls(tag: TagOpt = [], concurrency: ConcurrencyOpt = DEFAULT_CONCURRENCY, verbose: DetailOpt = False,
       json: JsonOpt = False) -> None:
    """Ask every device for its facts and show the fleet grouped by device class."""
    data = fleet_listing(_devices(tag), concurrency)
    Output(json).result(data, lambda c: _render_listing(data, c, verbose))
    if data["unreachable"]:
        raise typer.Exit(EXIT_UNREACHABLE)


def _why(failure: dict[str, Any], verbose: bool) -> str:
    """The short state, or under -v the whole reason and the request id the device logged it under."""
    if not verbose:
        return failure["state"]
    rid = f" (request {failure['request_id']})" if failure.get("request_id") else ""
    return f"{failure['reason']}{rid}"


def _render_warm(data: dict[str, Any], console: Console, verbose: bool = False) -> None:
    from rich.table import Table

    table = Table(title=f"{data['builds']} build(s), {data['wall_s']:.1f} s")
    stopped = any(c["not_started"] for c in data["classes"])
    for col in ("class", "built on", "copied to", "already warm", "unreachable", "failed") + (
            ("not started",) if stopped else ()):
        table.add_column(col, overflow="fold")
    reasons = []
    for c in data["classes"]:
        failed = [f["device"] for f in c["failed"] if not f["unreachable"]]
        reasons += [f"{f['device']}: {_why(f, verbose)}" for f in c["failed"]]
        table.add_row(c["class"], c["built_on"] or (f"(from {c['source']})" if c["source"] else "-"),
                      ", ".join(c["copied_to"]) or "-", ", ".join(c["skipped"]) or "-",
                      ", ".join(c["unreachable"]) or "-", ", ".join(failed) or "-",
                      *((", ".join(c["not_started"]) or "-",) if stopped else ()))
    for u in data["unreachable"]:
        table.add_row("(unknown: not reachable)", "-", "-", "-", u["device"], "-", *(("-",) if stopped else ()))
        reasons.append(f"{u['device']}: {_why(u, verbose)}")
    console.print(table)
    if data.get("parts_total"):
        from host.pipeline.push import sent_text

        moved = sent_text(data["bytes_sent"], data["bytes_total"], data["parts_sent"], data["parts_total"])
        console.print(f"bundles to devices: {moved}", markup=False)
    for line in reasons:
        console.print(f"  {line}", markup=False)
    if reasons and not verbose:
        console.print("  (-v for the whole reasons)")
    if data.get("stopped"):
        console.print(f"Stopped: {data['stopped']}.", markup=False)
    if not data["ok"]:
        console.print("Devices not warmed get their engines on the next `deploy fleet warm`; a failed device keeps "
                      "serving the engines it had.")


LABELS = {"build_progress": "progress"}  # a running build: "progress a: trt_0 building 12 s"


@fleet_app.command("warm")
def warm(
    model_or_bundle: Annotated[Path, typer.Argument(help="ONNX model, bundle directory or bundle archive (.tar).")],
    tag: TagOpt = [],
    concurrency: ConcurrencyOpt = DEFAULT_CONCURRENCY,
    max_failures: MaxFailuresOpt = None,
    retry_for: RetryForOpt = DEFAULT_RETRY_FOR_S,
    registry: RegistryOpt = None,
    via_registry: ViaRegistryOpt = False,
    shape_range: ShapeRangeOpt = [],
    profiles_file: ShapeProfilesOpt = None,
    verbose: DetailOpt = False,
    json: JsonOpt = False,
) -> None:
    """Build engines once per device class and copy them to every other device of the class."""
    from rich.markup import escape

    from host import api
    from host.fleet.warm import WarmEvent

    out = Output(json)

    def show(event: WarmEvent) -> None:
        if event.kind in ("queried",):
            return
        detail = f": {event.detail}" if event.detail else ""
        kind = LABELS.get(event.kind, event.kind)
        out.status(escape(f"{kind:>13} {event.device}{detail}"))

    data = api.fleet_warm(model_or_bundle, tag, concurrency=concurrency, max_failures=max_failures,
                          retry_for=retry_for, on_event=show, registry=registry, via_registry=via_registry,
                          shape_profiles=shape_profiles(shape_range, profiles_file))
    out.result(data, lambda c: _render_warm(data, c, verbose))
    if not data["ok"]:
        failures = [f for c in data["classes"] for f in c["failed"]] + data["unreachable"]
        raise typer.Exit(EXIT_UNREACHABLE if all(f["unreachable"] for f in failures) else EXIT_DEVICE)


def _render_rollout(data: dict[str, Any], console: Console, verbose: bool = False) -> None:
    """A few lines: the outcome, each failed or unreachable device with its reason, and what to do next."""
    counts = ", ".join(f"{len(data[k])} {k.replace('_', ' ')}" for k in
                       ("activated", "failed", "unreachable", "rolled_back", "not_started") if data[k])
    console.print(f"rollout {data['id']} of {data['name']}: {data['state']}"
                  + (f" ({counts})" if counts else "") + f", {data['wall_s']:.1f} s", markup=False)
    for d in data["devices"]:
        step = d["last_step"]
        if d["outcome"] in ("failed", "unreachable") or (verbose and step and step["state"] != "done"):
            why = (step or {}).get("detail") or ""
            console.print(f"  {d['device']}: {d['outcome']}: {why if verbose else why[:100]}", markup=False)
    for p in data.get("published", ()):
        said = f"published {p['reference']} ({p['manifest_digest'][:19]}...)" if p["reference"] else \
            f"not published: {p['error']}"
        console.print(f"  class {p['class']}: {said}", markup=False)
    if data["detail"]:
        console.print(data["detail"], markup=False)


def _rollout_exit(data: dict[str, Any]) -> int:
    """0 done; 3 when only unreachable devices are left (--resume reaches them); 1 stopped or failed devices, or a
    model target --registry refused."""
    from ._errors import EXIT_OK

    if any(p["error"] for p in data.get("published", ())):
        return EXIT_DEVICE
    if data["state"] == "done" and not data["failed"]:
        return EXIT_OK
    if data["state"] == "incomplete" and not data["failed"]:
        return EXIT_UNREACHABLE
    return EXIT_DEVICE


@fleet_app.command("rollout")
def rollout(
    model_or_bundle: Annotated[Optional[Path], typer.Argument(
        help="ONNX model, bundle directory or bundle archive (.tar); not with --resume.")] = None,
    name: ModelNameOpt = None,
    tag: TagOpt = [],
    waves: WavesOpt = None,
    max_failures: MaxFailuresOpt = None,
    health_timeout: HealthTimeoutOpt = None,
    concurrency: ConcurrencyOpt = DEFAULT_CONCURRENCY,
    max_rel_err: Annotated[Optional[float], typer.Option(
        "--max-rel-err", help="The agents' verify bound (default: deploy push's for the bundle).")] = None,
    resume: ResumeOpt = None,
    registry: RegistryOpt = None,
    events: EventsOpt = False,
    verbose: DetailOpt = False,
    json: JsonOpt = False,
) -> None:
    """Activate a new version of NAME on the fleet wave by wave; past --max-failures (default 0), take every
    switched device back to the version it had. Each step is recorded first: --resume ID finishes or takes back
    after a crash. With --registry, agents polling it (--registry-poll-s) follow once the rollout went forward."""
    import json as _json
    import sys

    from rich.markup import escape

    from device_agent.errors import InvalidInput
    from host import api
    from host.fleet.rollout import Interrupted, RolloutEvent

    if resume is not None and (model_or_bundle is not None or name or tag or waves or max_failures is not None
                               or health_timeout is not None or max_rel_err is not None or registry):
        raise InvalidInput("--resume ID goes on with the recorded model, name, devices and options; "
                           "leave out MODEL_OR_BUNDLE, --name, --tag, --waves, --max-failures, --health-timeout, "
                           "--max-rel-err and --registry")
    out = Output(json)

    def show(event: RolloutEvent) -> None:
        if events:
            sys.stderr.write(_json.dumps(event.to_dict(), sort_keys=True) + "\n")
            sys.stderr.flush()
        elif not json:
            out.status(escape(event.line()))

    try:
        data = api.fleet_rollout(model_or_bundle, name, tag, waves=waves, max_failures=max_failures,
                                 health_timeout=health_timeout, concurrency=concurrency, max_rel_err=max_rel_err,
                                 resume=resume, on_event=show, registry=registry)
    except Interrupted as exc:
        print(f"error: interrupted: {exc}", file=sys.stderr)
        raise typer.Exit(130) from None
    out.result(data, lambda c: _render_rollout(data, c, verbose))
    raise typer.Exit(_rollout_exit(data))


def _render_status(data: dict[str, Any], console: Console, verbose: bool = False) -> None:
    """One line per device within 80 columns (cells cut, never wrapped), as `deploy devices`."""
    from rich.table import Table
    from rich.text import Text

    from host.fleet.fleet_status import short_digest

    table = Table(box=None, header_style="bold", padding=(0, 1), pad_edge=False)
    for col, floor, most in (("device", 6, 16), ("state", 5, 12), ("active", 6, 6), ("prev", 4, 4),
                             ("bundle", 6, 12), ("last rollout", 12, 18), ("drift", 5, 5)):
        table.add_column(col, no_wrap=True, overflow="ellipsis", min_width=floor, max_width=most)
    for r in data["devices"]:
        up = r["state"] == "up"
        last = r["last_rollout"]
        step = f"#{last['id']} {last['step']} {last['state']}" if last else "-"
        drift = "-" if r["drift"] is None else ("DRIFT" if r["drift"] else "no")
        table.add_row(r["device"], Text(r["state"], style="green" if up else "red"),
                      "-" if r["active"] is None else f"v{r['active']}",
                      "-" if r["previous"] is None else f"v{r['previous']}", short_digest(r["bundle_digest"]),
                      step, Text(drift, style="red" if r["drift"] else ""))
    console.print(table, soft_wrap=False)
    last = data["last_rollout"]
    tail = f"; last rollout #{last['id']} {last['state']}" if last else "; no rollout recorded"
    drifted = f"; {len(data['drifted'])} drifted" if data["drifted"] else ""
    console.print(f"{data['summary']}{tail}{drifted}", markup=False)
    for r in data["devices"] if verbose else ():
        if r["error"]:
            console.print(f"{r['device']}: {r['error']}", markup=False, soft_wrap=True)


@fleet_app.command("status")
def status(
    name: Annotated[str, typer.Argument(help="The model's name on the devices.")],
    tag: TagOpt = [],
    verbose: DetailOpt = False,
    json: JsonOpt = False,
) -> None:
    """Per device: NAME's active and previous version, its bundle, the last rollout step, and drift from what
    its class should serve per the last rollout that went forward. Exit 1 when a device drifted or is down."""
    from host import api

    data = api.fleet_status(name, tag)
    Output(json).result(data, lambda c: _render_status(data, c, verbose))
    if data["drifted"] or any(r["state"] != "up" for r in data["devices"]):
        raise typer.Exit(EXIT_DEVICE)


@fleet_app.command("prometheus-targets")
def prometheus_targets(
    tag: TagOpt = [],
    metrics_port: Annotated[int, typer.Option("--metrics-port", min=1, max=65535, help="The port each agent "
                                              "serves /metrics on (its --metrics-listen).")] = DEFAULT_METRICS_PORT,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the targets file here "
                                                   "(atomically) instead of printing it.")] = None,
    json: JsonOpt = False,
) -> None:
    """Write the inventory as Prometheus file_sd targets (docs/operations.md)."""
    import json as _json

    from host.fleet.prometheus import scrape_targets

    targets = scrape_targets(_devices(tag), metrics_port)
    text = _json.dumps(targets, indent=2) + "\n"
    if output is not None:
        from device_agent.fileio import atomic_write

        atomic_write(output, text.encode(), 0o644)
    data = {"path": str(output) if output else None, "targets": targets}
    Output(json).result(data, lambda c: c.print(f"wrote {len(targets)} target(s) to {output}", markup=False)
                        if output else c.out(text, end=""))


def register(app: typer.Typer) -> None:
    app.add_typer(fleet_app, name="fleet")
