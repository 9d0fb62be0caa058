"""The root of `deploy`: wires the command groups and nothing else.

Start-up is part of the interface (issue 13): `deploy --version` imports no third-party module at all, and the
root group knows each command's name and one-line help from the table below, so `deploy --help` imports typer
but no command module; a command's module (and with it grpc, rich, pydantic, numpy ...) is imported only when
that command runs. `tests/host/cli/test_startup_imports.py` keeps the table equal to the commands' own help.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Optional, Sequence

ABOUT = "Compile ONNX models for NVIDIA edge devices, ship, build, run, benchmark."

# command name -> (module that defines it, its one-line help as `deploy --help` lists it), in listing order.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("host.cli.info", "Show what the device's agent reports: TensorRT, CUDA, GPU, memory, disk, backends."),
    "upload": ("host.cli.upload", "Upload FILE in chunks; a cut-off upload resumes (by itself within --retry-for), "
                                  "a file the agent has costs\nno payload."),
    "compile": ("host.cli.compile", "Compile MODEL for a device profile into a bundle (TensorRT segments + TVM "
                                    "remainder)."),
    "inspect": ("host.cli.compile", "Show each segment, where it runs, and every op that was not offloaded, with "
                                    "the reason."),
    "push": ("host.cli.push", "Compile MODEL for the device's TensorRT (or reuse), upload, build, verify and "
                              "optionally benchmark."),
    "bench": ("host.cli.push", "Benchmark on one or several devices (one after another, so they do not compete); "
                               "a side-by-side table."),
    "run": ("host.cli.push", "Run the model once on the device with the given inputs; write its outputs to an .npz "
                             "file."),
    "devices": ("host.cli.devices", "The inventory with each device's live state, queried in parallel with a short "
                                 "deadline."),
    "agent": ("host.cli.agent", "Run, stop and install device agents."),
    "cache": ("host.cli.push", "The engine cache of a device: list and prune."),
    "store": ("host.cli.store", "The uploaded bundles of a device: list and prune."),
    "models": ("host.cli.models", "Named model versions on a device: list them; activate and roll back with "
                                  "`deploy activate` / `deploy rollback`."),
    "activate": ("host.cli.models", "Make a version of NAME the one the device serves (atomic, gated on verified "
                                    "engines, health-checked)."),
    "rollback": ("host.cli.models", "Make NAME's previous active version active again at once (no rebuild)."),
    "fleet": ("host.cli.fleet", "The fleet: devices grouped by class, engine caches warmed once per class, "
              "versions rolled out wave by wave."),
    "certs": ("host.cli.certs", "Make the fleet CA and TLS certificates (mutual TLS between host and agents)."),
    "keys": ("host.cli.keys", "The fleet's signing keys: bundles are signed with them, agents with the trust root "
                              "verify them."),
}
_EXTRA = {"host.cli.agent": ("host.cli.agent_install",)}  # modules that add commands to another's group


def _register(module: str, app: Any) -> None:
    """Mount the commands of `module` on `app` (a typer.Typer)."""
    mod = importlib.import_module(module)
    register = getattr(mod, "register", None)
    if register is not None:
        register(app)
    elif module == "host.cli.agent":
        app.add_typer(mod.agent_app, name="agent")
    else:  # a module with one command of its own name: info, upload
        name = module.rsplit(".", 1)[1]
        app.command(name)(getattr(mod, name))
    for extra in _EXTRA.get(module, ()):
        try:
            _register(extra, app)
        except ModuleNotFoundError as exc:
            if exc.name != extra:
                raise


def load_command(name: str) -> Any:
    """The click command of `name`, built from its module (imported now)."""
    import typer.main

    module = COMMANDS[name][0]
    holder = _typer()
    _register(module, holder)
    return typer.main.get_group(holder).commands[name]


def _typer(**kwargs: Any) -> Any:
    import typer

    return typer.Typer(pretty_exceptions_enable=False, add_completion=False, **kwargs)


def _make_app() -> Any:
    import typer
    from typer.core import TyperCommand, TyperGroup

    class LazyGroup(TyperGroup):
        """Lists every command from COMMANDS; imports a command's module only when that command is resolved."""

        _listing = False

        def list_commands(self, ctx: Any) -> list[str]:
            return list(COMMANDS) + [n for n in super().list_commands(ctx) if n not in COMMANDS]

        def get_command(self, ctx: Any, cmd_name: str) -> Any:
            if cmd_name in self.commands or cmd_name not in COMMANDS:
                return super().get_command(ctx, cmd_name)
            if self._listing:  # the root's help only needs the name and the line of help
                return TyperCommand(cmd_name, help=COMMANDS[cmd_name][1])
            try:
                self.commands[cmd_name] = load_command(cmd_name)
            except ModuleNotFoundError as exc:  # a subsystem left out of this install
                if exc.name != COMMANDS[cmd_name][0]:
                    raise
                return None
            return self.commands[cmd_name]

        def format_help(self, ctx: Any, formatter: Any) -> None:
            self._listing = True
            try:
                return super().format_help(ctx, formatter)
            finally:
                self._listing = False

    root = _typer(name="deploy", help=ABOUT, cls=LazyGroup, no_args_is_help=True)

    @root.callback()
    def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit.")) -> None:
        """Compile ONNX models for NVIDIA edge devices, ship, build, run, benchmark."""

    return root


def _version(value: bool) -> None:
    if value:
        import typer

        _print_version()
        raise typer.Exit(0)


def _print_version() -> None:
    from host import __version__

    print(f"deploy {__version__}")


_APP: Any = None


def __getattr__(name: str) -> Any:  # `from host.cli.app import app` builds the typer app on first use
    global _APP
    if name == "app":
        if _APP is None:
            _APP = _make_app()
        return _APP
    raise AttributeError(name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(argv) if argv is not None else sys.argv[1:]
    if args == ["--version"]:  # answered without importing typer
        _print_version()
        return 0
    import typer

    from . import _errors

    try:
        result = __getattr__("app")(args=args, prog_name="deploy", standalone_mode=False)
        if result == _errors.EXIT_INTERRUPTED:  # typer >= 0.16 turns Ctrl-C into a silent Exit(130)
            print("error: interrupted", file=sys.stderr)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("error: interrupted", file=sys.stderr)
        return _errors.EXIT_INTERRUPTED
    except typer.TyperException as exc:  # usage errors: typer's own message, exit 2
        exc.show()
        return _errors.EXIT_INPUT
    except BaseException as exc:  # noqa: BLE001 - the CLI edge
        if isinstance(exc, SystemExit):
            raise
        return _errors.handle(exc)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
