"""Typed option aliases shared by every command, so `--device` means the same thing everywhere."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Callable

import typer

if TYPE_CHECKING:
    from .output import Output

DeviceOpt = Annotated[str, typer.Option("--device", "-d", help="Inventory name, `local`, or HOST:PORT.")]
DevicesOpt = Annotated[list[str], typer.Option("--device", "-d", help="Device (repeat for several).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only one JSON object on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show logs.")]
TagOpt = Annotated[list[str], typer.Option("--tag", "-t", help="Only devices with this tag (repeat to AND).")]
RetryForOpt = Annotated[float, typer.Option(
    "--retry-for", min=0, max=86400, envvar="DEPLOY_RETRY_FOR", metavar="SECONDS",
    help="Keep retrying (backoff with jitter; uploads resume) for this long after an agent that answered went "
         "away: restarted, link down. 0: fail at once.")]


def retry_lines(out: "Output", prefix: str = "") -> "Callable[[str], None]":
    """How a command shows that it retries: one progress line on stderr (none with --json)."""
    from rich.markup import escape

    return lambda line: out.status(escape(f"{prefix}retrying: {line}"))
