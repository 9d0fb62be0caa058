"""`deploy agent ...`: run an agent here, stop the local one."""
from __future__ import annotations

from typing import Annotated

import typer

from host.client import local
from host.fleet.inventory import LOCAL

from ._options import DeviceOpt, JsonOpt
from .output import Output

agent_app = typer.Typer(help="Run, stop and install device agents.", no_args_is_help=True)


@agent_app.command("serve", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = "127.0.0.1:7311",
    store: Annotated[str, typer.Option(help="Directory of the artifact store.")] = "",
) -> None:
    """Run an agent in the foreground; every other flag of `deploy-agent --help` is passed through."""
    from device_agent.__main__ import main as agent_main

    argv = ["--listen", listen] + (["--store", store] if store else []) + list(ctx.args)
    raise typer.Exit(agent_main(argv))


@agent_app.command("stop")
def stop(device: DeviceOpt = LOCAL, json: JsonOpt = False) -> None:
    """Stop the local agent now (it also exits by itself after 10 idle minutes)."""
    if device != LOCAL:
        from device_agent.errors import InvalidInput

        raise InvalidInput("only the local agent can be stopped from here; for a device use "
                           "`deploy agent uninstall` or its service manager")
    stopped = local.stop()
    Output(json).result({"device": LOCAL, "stopped": stopped},
                        lambda c: c.print("local agent stopped" if stopped else "local agent was not running"))
