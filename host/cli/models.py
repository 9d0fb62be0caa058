"""`deploy models ls`, `deploy activate`, `deploy rollback`: named model versions on a device (thin adapters over
host/models.py; the agent gates and switches, device_agent/models.py; docs/models.md)."""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Optional

import typer

from host.client.agent import connect

from ._options import DeviceOpt, JsonOpt
from .output import Output

models_app = typer.Typer(help="Named model versions on a device: list them; activate and roll back with "
                              "`deploy activate` / `deploy rollback`.", no_args_is_help=True)
NameArg = Annotated[str, typer.Argument(help="The model's name (deploy push --name; default the file's stem).")]


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%m-%d %H:%M")


@models_app.command("ls")
def models_ls(name: Annotated[Optional[str], typer.Argument(help="Only this name.")] = None,
              device: DeviceOpt = "local", json: JsonOpt = False) -> None:
    """List each name's versions, which one is active, and whether each can be activated (and why not)."""
    from host.models import list_models

    with connect(device) as client:
        data = {"device": device, **list_models(client, name or "")}

    def render(c: Any) -> None:
        from rich.markup import escape
        from rich.table import Table

        if not data["models"]:
            c.print("no models on this device; deploy push MODEL --device D --activate records and activates one")
            return
        table = Table(box=None, header_style="bold", padding=(0, 1))
        for col in ("name", "ver", "", "state", "backend", "bundle", "pushed"):
            table.add_column(col, no_wrap=True)
        notes = []
        for m in data["models"]:
            for v in m["versions"]:
                mark = "active" if v["version"] == m["active"] else ("previous" if v["version"] == m["previous"]
                                                                     else "")
                table.add_row(escape(m["name"]), str(v["version"]), mark, v["state"], v["build"].get("backend", ""),
                              v["bundle_digest"][7:19], _when(v["created"]))
                if v["why"]:
                    notes.append(f"{m['name']} {v['version']}: {v['why']}")
        c.print(table)
        for note in notes:
            c.print(escape(note))

    Output(json).result(data, render)


def activate(name: NameArg,
             version: Annotated[Optional[int], typer.Argument(min=1, help="Default: the newest version.")] = None,
             device: DeviceOpt = "local", json: JsonOpt = False) -> None:
    """Make a version of NAME the one the device serves (atomic, gated on verified engines, health-checked)."""
    from host.models import activate as do_activate

    with connect(device) as client:
        data = {"device": device, **do_activate(client, name, version)}
    was = f" (was {data['previous']})" if data["previous"] is not None else ""
    Output(json).result(data, lambda c: c.print(f"{name}: version {data['active']} active{was}"))


def rollback(name: NameArg, device: DeviceOpt = "local", json: JsonOpt = False) -> None:
    """Make NAME's previous active version active again at once (no rebuild)."""
    from host.models import rollback as do_rollback

    with connect(device) as client:
        data = {"device": device, **do_rollback(client, name)}
    Output(json).result(data, lambda c: c.print(f"{name}: rolled back to version {data['active']} "
                                                f"(from {data['previous']})"))


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.command("activate")(activate)
    app.command("rollback")(rollback)


__all__ = ["register"]
