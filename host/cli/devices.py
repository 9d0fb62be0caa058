"""`deploy devices`: the inventory's live state, one line per device, so 50 boards fit on one screen.

Each row's state is a few words (`host.fleet.states`); the whole reason is under `-v` and in `--json`. The exit
code is 1 when any selected device is down, so scripts and monitors can use the command as a check.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any

import typer

from device_agent.errors import InvalidInput

from ._errors import EXIT_DEVICE, EXIT_OK
from ._options import DetailOpt, JsonOpt, TagOpt
from .output import Output

if TYPE_CHECKING:
    from rich.console import Console, Group

    from host.inventory import Device

TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.1, help="Deadline per device, seconds.")]
WatchOpt = Annotated[bool, typer.Option("--watch", "-w", help="Refresh in place until Ctrl-C.")]
IntervalOpt = Annotated[float, typer.Option("--interval", min=0.5, help="Seconds between refreshes (--watch).")]
SortOpt = Annotated[str, typer.Option("--sort", help="Order rows by: inventory, name or state (down first).")]
SORTS = ("inventory", "name", "state")


def device_row(device: Device, timeout: float) -> dict[str, Any]:
    """One `deploy devices --json` row: the facts of a reachable agent, or its short state and whole reason."""
    from host.client.agent import AgentClient
    from host.client.errors import AgentError
    from host.fleet.states import device_state

    row: dict[str, Any] = {"name": device.name, "address": device.address, "profile": device.profile or None,
                           "tags": list(device.tags), "reachable": False, "state": "up", "error": None,
                           "request_id": None, "trt_version": None, "gpu": None, "store_free_bytes": None,
                           "engines": None, "engine_bytes": None, "agent_version": None, "default_backend": None}
    failure: Exception | None = None
    try:
        with AgentClient(device) as client:
            info = client.info(timeout=timeout)
            row.update(reachable=True, agent_version=info.agent_version, store_free_bytes=info.store_free_bytes,
                       trt_version=info.trt_version if info.HasField("trt_version") else None,
                       gpu=(f"{info.gpus[0].name} (sm {info.gpus[0].compute_capability})" if info.gpus else None),
                       default_backend=info.default_backend, profile=device.profile or info.profile or None)
            try:
                engines = client.list_engines(timeout=timeout)
                row.update(engines=len(engines.engines), engine_bytes=engines.total_bytes)
            except AgentError as exc:
                row["error"] = f"engine cache: {exc}"
                row["request_id"] = exc.request_id or None
    except Exception as exc:  # noqa: BLE001 - one bad entry must not hide the others
        failure = exc
    if failure is not None:  # the whole reason, uncut: --json and -v are where it is read
        state = device_state(failure)
        reason = str(failure) if isinstance(failure, AgentError) else f"{type(failure).__name__}: {failure}"
        row.update(state=state.short, error=reason, request_id=state.request_id)
    return row


def _sorted(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    if sort == "name":
        return sorted(rows, key=lambda r: r["name"])
    if sort == "state":
        return sorted(rows, key=lambda r: (r["reachable"], r["state"], r["name"]))
    return rows


def devices_listing(tags: list[str], timeout: float, sort: str = "inventory") -> dict[str, Any]:
    """The documented JSON shape of `deploy devices --json`: every selected device queried in parallel."""
    from host.client import local
    from host.fleet.states import summary_line
    from host.inventory import LOCAL, Device, load

    inventory = load()
    chosen = inventory.select(tags)
    if LOCAL not in inventory.devices and not tags:
        running = local.running()
        if running:  # the on-demand local agent is listed only while it runs; `devices` starts nothing
            chosen.append(Device(name=LOCAL, address=running.address, profile=""))
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(chosen)))) as pool:
        rows = _sorted(list(pool.map(lambda d: device_row(d, timeout), chosen)), sort)
    return {"inventory": str(inventory.path) if inventory.path else None, "devices": rows,
            "up": sum(1 for r in rows if r["reachable"]), "down": sum(1 for r in rows if not r["reachable"]),
            "summary": summary_line([r["state"] for r in rows])}


def render_devices(data: dict[str, Any], verbose: bool = False) -> Group:
    """A table of one line per device (cells are cut, never wrapped), the summary, and under -v the reasons."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from .push_view import mib

    rows = data["devices"]
    if not rows:
        return Group(Text(f"no devices in {data['inventory']}; add [devices.NAME] entries "
                          "(see docs/getting-started.md) or use --device local"))
    table = Table(box=None, header_style="bold", padding=(0, 1), pad_edge=False)
    # widths that keep a row within 80 columns whatever the names; a longer cell ends in "…"
    for col, floor, most in (("device", 6, 18), ("address", 7, 20), ("state", 13, 14), ("TRT", 3, 6),
                             ("GPU", 3, 12), ("disk", 4, 5), ("engines", 7, 12)):
        table.add_column(col, no_wrap=True, overflow="ellipsis", min_width=floor, max_width=most)
    for r in rows:
        state = Text(r["state"], style="green" if r["reachable"] else "red")
        engines = "-" if r["engines"] is None else f"{r['engines']} ({mib(r['engine_bytes'] or 0)})"
        free = "-" if r["store_free_bytes"] is None else f"{r['store_free_bytes'] / 2**30:.0f}G"
        table.add_row(r["name"], r["address"], state, r["trt_version"] or "-", r["gpu"] or "-", free, engines)
    parts: list[Any] = [table, Text(data["summary"])]
    parts += [Text(line, overflow="fold") for line in reason_lines(data)] if verbose else []
    return Group(*parts)


def reason_lines(data: dict[str, Any]) -> list[str]:
    """`-v`: each failed device's whole reason and the request id the agent logged it under."""
    lines = []
    for r in data["devices"]:
        if r["error"]:
            rid = f" (request {r['request_id']})" if r["request_id"] else ""
            lines.append(f"{r['name']}: {r['error']}{rid}")
    return lines


def devices(
    tag: TagOpt = [],
    timeout: TimeoutOpt = 3.0,
    sort: SortOpt = "inventory",
    verbose: DetailOpt = False,
    watch: WatchOpt = False,
    interval: IntervalOpt = 5.0,
    json: JsonOpt = False,
) -> None:
    """The inventory with each device's live state, queried in parallel with a short deadline."""
    if sort not in SORTS:
        raise InvalidInput(f"--sort {sort!r}: use one of {', '.join(SORTS)}")
    if watch and json:
        raise InvalidInput("--watch redraws a table; leave out --json (or call `deploy devices --json` in a loop)")
    out = Output(json)
    if watch:
        raise typer.Exit(_watch(out.console, tag, timeout, sort, verbose, interval))
    data = devices_listing(tag, timeout, sort)
    out.result(data, lambda c: _print(c, data, verbose))
    raise typer.Exit(EXIT_DEVICE if data["down"] else EXIT_OK)


def _print(console: Console, data: dict[str, Any], verbose: bool) -> None:
    console.print(render_devices(data), soft_wrap=False)
    for line in reason_lines(data) if verbose else ():  # whole lines, never folded: they are grepped and pasted
        console.print(line, markup=False, soft_wrap=True)


def _watch(console: Console, tags: list[str], timeout: float, sort: str, verbose: bool, interval: float) -> int:
    """Redraw the view every `interval` seconds; Ctrl-C ends it with the exit code of the last round."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    code = EXIT_OK
    try:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                data = devices_listing(tags, timeout, sort)
                code = EXIT_DEVICE if data["down"] else EXIT_OK
                stamp = Text(time.strftime("%H:%M:%S") + f", every {interval:g} s; Ctrl-C to stop", style="dim")
                live.update(Group(render_devices(data, verbose), stamp), refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        return code


def register(app: typer.Typer) -> None:
    app.command("devices")(devices)
