"""`deploy store ls|prune`: the device's uploaded bundles, files and partial uploads (thin adapters over
ListStore / PruneStore; device_agent/store_usage.py says what is pruned first)."""
from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from device_agent.errors import InvalidInput
from host.client.agent import connect

from ._options import DeviceOpt, JsonOpt
from .output import Output


def _size(n: int) -> str:
    return f"{n / 2**10:.1f} KiB" if n < 2**20 else f"{n / 2**20:.1f} MiB"

store_app = typer.Typer(help="The uploaded bundles of a device: list and prune.", no_args_is_help=True)


@store_app.command("ls")
def store_ls(device: DeviceOpt = "local", json: JsonOpt = False) -> None:
    """List what the device's store holds, least recently used first, with each bundle's unpacked copy."""
    with connect(device) as client:
        reply = client.list_store()
    rows = [{"digest": e.digest, "size": e.size, "complete": e.complete, "last_used": e.last_used,
             "unpacked_bytes": e.unpacked_bytes} for e in reply.entries]
    data = {"device": device, "entries": rows, "total_bytes": reply.total_bytes, "free_bytes": reply.free_bytes}

    def render(c: Any) -> None:
        import datetime as dt

        from rich.table import Table

        table = Table(box=None, header_style="bold", padding=(0, 2))
        for col in ("digest", "state", "size", "unpacked", "last used"):
            table.add_column(col)
        for r in rows:
            used = dt.datetime.fromtimestamp(r["last_used"]).strftime("%Y-%m-%d %H:%M")
            table.add_row(r["digest"][:19], "stored" if r["complete"] else "partial upload", _size(r["size"]),
                          _size(r["unpacked_bytes"]) if r["unpacked_bytes"] else "-", used)
        c.print(table)
        c.print(f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}, {_size(reply.total_bytes)} in all; "
                f"{_size(reply.free_bytes)} free on the device")

    Output(json).result(data, render)


@store_app.command("prune")
def store_prune(
    device: DeviceOpt = "local",
    max_bytes: Annotated[Optional[int], typer.Option("--max-bytes", min=0, help="Remove least recently used "
                                                     "entries until the store and its unpacked copies fit.")] = None,
    digest: Annotated[list[str], typer.Option("--digest", help="Remove this entry (repeat).")] = [],
    all: Annotated[bool, typer.Option("--all", help="Remove every entry.")] = False,
    json: JsonOpt = False,
) -> None:
    """Remove bundles and partial uploads from the device's store (engines stay cached; a later push sends again)."""
    from protos import agent_pb2

    if sum([max_bytes is not None, bool(digest), all]) != 1:
        raise InvalidInput("say what to prune: exactly one of --all, --max-bytes N or --digest sha256:...")
    request = agent_pb2.PruneStoreRequest(digests=digest, all=all)
    if max_bytes is not None:
        request.max_bytes = max_bytes
    with connect(device) as client:
        reply = client.prune_store(request)
    data = {"device": device, "removed": list(reply.removed), "freed_bytes": reply.freed_bytes,
            "total_bytes": reply.total_bytes, "busy": list(reply.busy), "kept": list(reply.kept)}

    def render(c: Any) -> None:
        c.print(f"removed {len(reply.removed)} entr{'y' if len(reply.removed) == 1 else 'ies'}, freed "
                f"{_size(reply.freed_bytes)}; {_size(reply.total_bytes)} left")
        if reply.busy:
            c.print(f"left alone (being uploaded now): {', '.join(d[:19] for d in reply.busy)}")
        if reply.kept:
            c.print(f"left alone (bundles of kept model versions, deploy models ls): "
                    f"{', '.join(d[:19] for d in reply.kept)}")

    Output(json).result(data, render)


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")


__all__ = ["register"]
