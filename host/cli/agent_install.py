"""`deploy agent install` / `deploy agent uninstall`: an agent on a device over SSH (registered onto `agent_app`)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._options import JsonOpt
from .agent import agent_app
from .output import Output

TargetArg = Annotated[str, typer.Argument(help="user@host[:port] to reach the device over SSH.")]
NameOpt = Annotated[Optional[str], typer.Option("--name", help="Inventory name (default: the host).")]
IdentityOpt = Annotated[Optional[Path], typer.Option("--identity", "-i", help="SSH private key.")]
KnownHostsOpt = Annotated[Optional[Path], typer.Option("--known-hosts", help="known_hosts file (~/.ssh/known_hosts).")]
AcceptOpt = Annotated[bool, typer.Option("--accept-new-host-key",
                                         help="Trust and record a host key seen for the first time.")]
RemoteDirOpt = Annotated[Optional[str], typer.Option("--remote-dir", help="Agent home on the device "
                                                                          "(~/.deploy-agent).")]
InventoryOpt = Annotated[Optional[Path], typer.Option("--inventory", help="Inventory file (default: deploy.toml).")]
PkiOpt = Annotated[Optional[Path], typer.Option("--pki", help="PKI directory of `deploy certs` (default: user's).")]
AsServiceOpt = Annotated[bool, typer.Option("--as-service", help="System-wide systemd unit (needs root).")]


def _paths(known_hosts: Optional[Path], pki: Optional[Path]) -> tuple:
    import platformdirs

    from .certs import default_dir

    config = Path(platformdirs.user_config_dir("deploy"))
    return (known_hosts or Path("~/.ssh/known_hosts").expanduser(), pki or default_dir(), config / "tokens")


def install(
    target: TargetArg,
    name: NameOpt = None,
    identity: IdentityOpt = None,
    python: Annotated[str, typer.Option("--python", help="Python on the device (>= 3.9).")] = "python3",
    as_service: AsServiceOpt = False,
    accept_new_host_key: AcceptOpt = False,
    known_hosts: KnownHostsOpt = None,
    port: Annotated[int, typer.Option("--port", help="Port the agent listens on.")] = 7311,
    listen_host: Annotated[str, typer.Option("--listen-host", help="Interface the agent binds.")] = "0.0.0.0",
    address_host: Annotated[Optional[str], typer.Option("--address-host",
                                                        help="Host the inventory uses to reach the agent.")] = None,
    auth: Annotated[str, typer.Option("--auth", help="tls (mutual TLS, default) or token.")] = "tls",
    wheels: Annotated[Optional[Path], typer.Option("--wheels", help="Dependency wheels for the device "
                                                                     "(default: fetched by the host).")] = None,
    agent_wheel: Annotated[Optional[Path], typer.Option("--agent-wheel", help="Prebuilt agent wheel.")] = None,
    remote_dir: RemoteDirOpt = None,
    profile: Annotated[str, typer.Option("--profile", help="Device profile the agent reports.")] = "",
    pki: PkiOpt = None,
    inventory: InventoryOpt = None,
    trust_root: Annotated[Optional[Path], typer.Option(
        "--trust-root", help="The fleet's trust root for the agent (default: this host's, when `deploy keys "
                             "init` made one); the agent then runs only signed bundles.")] = None,
    json: JsonOpt = False,
) -> None:
    """Install (or update) the agent on a device over SSH and add it to the inventory; a repeat changes nothing."""
    from host.install.agent_installer import InstallRequest
    from host.install.agent_installer import install as do_install
    from host.install.ssh import parse_target

    out = Output(json)
    ssh_target = parse_target(target)
    kh, pki_dir, token_dir = _paths(known_hosts, pki)
    req = InstallRequest(target=ssh_target, name=name or ssh_target.host, known_hosts=kh, pki_dir=pki_dir,
                         token_dir=token_dir, identity=identity, accept_new_host_key=accept_new_host_key,
                         python=python, as_service=as_service, port=port, listen_host=listen_host,
                         address_host=address_host, auth=auth, wheels_dir=wheels, agent_wheel=agent_wheel,
                         remote_dir=remote_dir, inventory_path=inventory, profile=profile, trust_root=trust_root)
    report = do_install(req, say=out.status)
    data = {"device": report.device, "address": report.address, "remote_dir": report.remote_dir,
            "manager": report.manager, "changed": report.changed, "inventory": report.inventory}

    def render(console) -> None:
        what = "nothing changed" if not report.changed else "changed: " + ", ".join(report.changed)
        console.print(f"agent {report.device} at {report.address} is up ({report.manager}; {what})")

    out.result(data, render)


def uninstall(
    target: TargetArg,
    name: NameOpt = None,
    identity: IdentityOpt = None,
    known_hosts: KnownHostsOpt = None,
    as_service: AsServiceOpt = False,
    remote_dir: RemoteDirOpt = None,
    keep_inventory: Annotated[bool, typer.Option("--keep-inventory", help="Keep the inventory entry.")] = False,
    pki: PkiOpt = None,
    inventory: InventoryOpt = None,
    json: JsonOpt = False,
) -> None:
    """Stop the agent, remove its service, files and store from the device, and drop it from the inventory."""
    from host.install.agent_installer import InstallRequest
    from host.install.agent_installer import uninstall as do_uninstall
    from host.install.ssh import parse_target

    out = Output(json)
    ssh_target = parse_target(target)
    kh, pki_dir, token_dir = _paths(known_hosts, pki)
    req = InstallRequest(target=ssh_target, name=name or ssh_target.host, known_hosts=kh, pki_dir=pki_dir,
                         token_dir=token_dir, identity=identity, as_service=as_service, remote_dir=remote_dir,
                         inventory_path=inventory)
    report = do_uninstall(req, keep_inventory=keep_inventory, say=out.status)
    data = {"device": report.device, "remote_dir": report.remote_dir, "changed": report.changed}
    out.result(data, lambda c: c.print(f"agent {report.device} removed" if report.changed
                                       else f"agent {report.device} was not installed; nothing changed"))


def register(app: typer.Typer) -> None:
    """Adds the commands to the `agent` group (which `app.py` already mounted)."""
    names = {c.name for c in agent_app.registered_commands}
    if "install" not in names:
        agent_app.command("install")(install)
        agent_app.command("uninstall")(uninstall)
