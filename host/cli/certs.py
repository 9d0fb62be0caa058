"""`deploy certs ...`: the fleet's private CA and the certificates of its agents and of this client."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._options import JsonOpt
from .output import Output

certs_app = typer.Typer(help="Make the fleet CA and TLS certificates (mutual TLS between host and agents).",
                        no_args_is_help=True)

DirOpt = Annotated[Optional[Path], typer.Option("--dir", help="PKI directory (default: the user config dir's pki/).")]
InventoryOpt = Annotated[Optional[Path], typer.Option("--inventory", help="Inventory file (default: deploy.toml).")]


def default_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("deploy")) / "pki"


def _device_names(inventory_path: Optional[Path]) -> list:
    from host import inventory as inv
    from host.security.certs import DeviceNames, host_of

    names = []
    for name, device in inv.load(inventory_path).devices.items():
        addresses = [device.address] + ([host_of(device.ssh)] if device.ssh else [])
        names.append(DeviceNames(name, addresses))
    return names


@certs_app.command("init")
def init(directory: DirOpt = None, inventory: InventoryOpt = None, json: JsonOpt = False) -> None:
    """Create the CA, a client certificate and one agent certificate per inventory device (existing ones kept)."""
    from host.security import certs

    directory = directory or default_dir()
    made = certs.init(directory, _device_names(inventory))
    data = {"dir": str(directory), "ca": str(made.pop("ca")),
            "client": {"cert": str(made["client"].cert), "key": str(made["client"].key)},
            "agents": {n: {"cert": str(p.cert), "key": str(p.key)} for n, p in made.items() if n != "client"}}

    def render(console) -> None:
        console.print(f"CA: {data['ca']}")
        console.print(f"client certificate: {data['client']['cert']}")
        for name, paths in data["agents"].items():
            console.print(f"agent {name}: {paths['cert']}")

    Output(json).result(data, render)


@certs_app.command("issue")
def issue(
    device: Annotated[str, typer.Argument(help="Device name (from the inventory, or any name with --san).")],
    san: Annotated[Optional[list[str]], typer.Option("--san", help="Extra DNS name or IP (repeatable).")] = None,
    directory: DirOpt = None,
    inventory: InventoryOpt = None,
    json: JsonOpt = False,
) -> None:
    """(Re)issue DEVICE's agent certificate; SANs: its name, inventory address and ssh host, --san, localhost."""
    from device_agent.errors import NotFound
    from host.security import certs

    directory = directory or default_dir()
    known = {d.name: d for d in _device_names(inventory)}
    if device not in known and not san:
        raise NotFound(f"device {device!r} is not in the inventory; add it first or give its addresses with --san")
    addresses = list(known[device].addresses) if device in known else []
    pair = certs.issue_agent(directory, device, addresses + list(san or []))
    data = {"device": device, "cert": str(pair.cert), "key": str(pair.key), "sans": certs.sans_of(pair.cert),
            "ca": str(Path(directory) / certs.CA_CERT)}
    Output(json).result(data, lambda c: c.print(f"agent {device}: {pair.cert} (SANs: {', '.join(data['sans'])})"))


def register(app: typer.Typer) -> None:
    app.add_typer(certs_app, name="certs")
