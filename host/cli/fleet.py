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
from ._options import DetailOpt, JsonOpt, RegistryOpt, RetryForOpt, TagOpt, ViaRegistryOpt
from .output import Output

if TYPE_CHECKING:  # rich is imported where a table is drawn, so `--json` never loads it
    from rich.console import Console

fleet_app = typer.Typer(help="The fleet: devices grouped by class, engine caches warmed once per class.",
                        no_args_is_help=True)
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", "-j", min=1, max=256,
                                             help="Devices worked on at once.")]


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
    max_failures: Annotated[Optional[str], typer.Option(
        "--max-failures", metavar="N|P%", help="Start no new device once more than N devices (or P% of them) "
        "have failed; devices in flight finish, the rest are reported not started.")] = None,
    retry_for: RetryForOpt = DEFAULT_RETRY_FOR_S,
    registry: RegistryOpt = None,
    via_registry: ViaRegistryOpt = False,
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
                          retry_for=retry_for, on_event=show, registry=registry, via_registry=via_registry)
    out.result(data, lambda c: _render_warm(data, c, verbose))
    if not data["ok"]:
        failures = [f for c in data["classes"] for f in c["failed"]] + data["unreachable"]
        raise typer.Exit(EXIT_UNREACHABLE if all(f["unreachable"] for f in failures) else EXIT_DEVICE)


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
