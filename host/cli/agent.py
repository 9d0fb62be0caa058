"""`deploy agent ...`: run an agent here, stop the local one."""
from __future__ import annotations

from typing import Annotated

import typer

from host.client import local
from host.inventory import LOCAL

from ._options import DeviceOpt, JsonOpt
from .output import Output

agent_app = typer.Typer(help="Run, stop and install device agents.", no_args_is_help=True)


@agent_app.command("serve", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = "127.0.0.1:7311",
    store: Annotated[str, typer.Option(
        help="Directory of the artifact store; its parent holds the agent's engines and model versions, "
             "so give each agent a parent of its own (fleet/a/store, fleet/b/store).")] = "",
) -> None:
    """Run an agent in the foreground; every other flag of `deploy-agent --help` is passed through."""
    from device_agent.__main__ import main as agent_main

    argv = ["--listen", listen] + (["--store", store] if store else []) + list(ctx.args)
    raise typer.Exit(agent_main(argv))


@agent_app.command("emulate", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def emulate(
    ctx: typer.Context,
    profile: Annotated[str, typer.Option(help="Jetson profile the agent reports (aarch64).")] = "jetson-nano",
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = "127.0.0.1:7311",
    store: Annotated[str, typer.Option(help="Directory of the artifact store "
                                            "(default: the user data dir, deploy/emulated/PROFILE/store).")] = "",
    cpu: Annotated[str, typer.Option(help="qemu CPU model (default: cortex-a57 for jetson-nano, else max).")] = "",
    prepare_only: Annotated[bool, typer.Option("--prepare-only", help="Prepare the sysroot and wheels, then exit.")]
    = False,
) -> None:
    """Run an agent as an aarch64 process under qemu (an emulated Jetson: no GPU, no TensorRT), in the foreground.

    The first call prepares, once, an aarch64 Python with the agent's dependencies (Debian arm64 packages and
    aarch64 wheels, cached in the user cache dir); every other flag of `deploy-agent --help` is passed through.
    """
    import os
    import sys
    from pathlib import Path

    import platformdirs

    from device_agent.errors import InvalidInput
    from host import emulate as emu_mod
    from host.compiler.profiles import PROFILES

    if profile not in PROFILES or PROFILES[profile].arch != "aarch64":
        aarch64 = ", ".join(n for n, p in PROFILES.items() if p.arch == "aarch64")
        raise InvalidInput(f"profile {profile!r} is not an aarch64 device; emulate one of: {aarch64} "
                           "(x86 agents: `deploy agent serve`)")
    emu = emu_mod.prepare(say=lambda msg: print(msg, file=sys.stderr, flush=True))
    if prepare_only:
        print(emu.root)
        raise typer.Exit(0)
    store_dir = store or str(Path(platformdirs.user_data_dir("deploy")) / "emulated" / profile / "store")
    argv = emu_mod.agent_command(emu, ["--listen", listen, "--store", store_dir, "--profile", profile,
                                       *ctx.args])
    env = emu_mod.agent_environment(emu, cpu or emu_mod.cpu_for(profile))
    sys.stdout.flush()
    sys.stderr.flush()
    # exec: the agent keeps this process id, so signals (Ctrl-C, SIGTERM, kill -9) reach it, and the ready line
    # on stdout is its own
    os.execve(argv[0], argv, env)


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
