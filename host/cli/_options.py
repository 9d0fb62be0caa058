"""Typed option aliases shared by every command, so `--device` means the same thing everywhere."""
from __future__ import annotations

from typing import Annotated

import typer

DeviceOpt = Annotated[str, typer.Option("--device", "-d", help="Inventory name, `local`, or HOST:PORT.")]
DevicesOpt = Annotated[list[str], typer.Option("--device", "-d", help="Device (repeat for several).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only one JSON object on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show logs.")]
TagOpt = Annotated[list[str], typer.Option("--tag", "-t", help="Only devices with this tag (repeat to AND).")]
