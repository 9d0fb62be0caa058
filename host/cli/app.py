"""The root of `deploy`: wires the command groups and nothing else."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

import typer

from . import _errors
from .agent import agent_app
from .info import info
from .upload import upload

app = typer.Typer(name="deploy", help="Compile ONNX models for NVIDIA edge devices, ship, build, run, benchmark.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


def _version(value: bool) -> None:
    if value:
        from host import __version__

        print(f"deploy {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Compile ONNX models for NVIDIA edge devices, ship, build, run, benchmark."""


app.add_typer(agent_app, name="agent")
app.command("info")(info)
app.command("upload")(upload)


def _optional_groups() -> None:
    """Command groups from other subsystems; each module registers itself on `app`."""
    import importlib

    for module in ("host.cli.compile", "host.cli.push", "host.cli.fleet", "host.cli.certs",
                   "host.cli.agent_install"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        register = getattr(mod, "register", None)
        if register is not None:
            register(app)


_optional_groups()


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        result = app(args=list(argv) if argv is not None else None, standalone_mode=False)
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
