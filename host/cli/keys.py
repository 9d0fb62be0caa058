"""`deploy keys ...`: the fleet's signing keys (TUF roles) and the trust root agents are given."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ._options import JsonOpt
from .output import Output

keys_app = typer.Typer(help="The fleet's signing keys: bundles are signed with them, agents with the trust root "
                            "verify them.", no_args_is_help=True)

DirOpt = Annotated[Optional[Path], typer.Option(
    "--dir", help="Key directory (default: $DEPLOY_KEYS_DIR, else the user config dir's keys/).")]


def _dir(directory: Optional[Path]) -> Path:
    from host.security.keys import default_dir

    return directory or default_dir()


def _render_listing(data: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table("role", "threshold", "version", "expires", "keys")
    for r in data["roles"]:
        keys = ", ".join(k["keyid"][:12] + ("" if k["private_here"] else " (no private key here)") for k in r["keys"])
        table.add_row(r["role"], f"{r['threshold']} of {len(r['keys'])}", str(r["version"]), r["expires"], keys)
    console.print(table)
    console.print(f"trust root (give it to agents: --trust-root): {data['trust_root']}")


@keys_app.command("init")
def init(
    directory: DirOpt = None,
    root_keys: Annotated[int, typer.Option("--root-keys", min=1, max=16, help="Root keys to make.")] = 1,
    root_threshold: Annotated[int, typer.Option("--root-threshold", min=1, max=16,
                                                help="Root keys that must sign a new root.")] = 1,
    force: Annotated[bool, typer.Option("--force", help="Replace existing keys: a new trust, every device "
                                                        "needs the new trust root installed.")] = False,
    json: JsonOpt = False,
) -> None:
    """Make the fleet's signing keys (root, targets, snapshot, timestamp) and the trust root for agents."""
    from host.security import keys

    kd = keys.init(_dir(directory), root_keys=root_keys, root_threshold=root_threshold, force=force)
    data = keys.listing(kd.path)
    Output(json).result(data, lambda c: _render_listing(data, c))


@keys_app.command("rotate")
def rotate(
    role: Annotated[str, typer.Argument(help="Role whose keys to replace: root, targets, snapshot or timestamp.")],
    directory: DirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Replace ROLE's keys and revoke the old ones: a new root, signed by the old root's keys, that devices take
    with the next signed bundle (no reinstall)."""
    from host.security import keys

    data = keys.rotate(_dir(directory), role)
    Output(json).result(data, lambda c: c.print(
        f"{role}: revoked {', '.join(data['revoked'])}, new {', '.join(data['new'])}; root is now version "
        f"{data['root_version']} (devices follow with the next signed push)"))


@keys_app.command("ls")
def ls(directory: DirOpt = None, json: JsonOpt = False) -> None:
    """Roles, their keys, thresholds, versions and expiry, and the trust-root file agents are given."""
    from host.security import keys

    data = keys.listing(_dir(directory))
    Output(json).result(data, lambda c: _render_listing(data, c))


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
