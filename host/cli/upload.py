"""`deploy upload`: send a file to an agent's store (resumes, skips what the agent has)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from host.client.agent import connect

from ._options import DeviceOpt, JsonOpt
from .output import Output


def upload(
    file: Annotated[Path, typer.Argument(help="File to send.")],
    device: DeviceOpt = "local",
    json: JsonOpt = False,
) -> None:
    """Upload FILE in chunks; a cut-off upload resumes, a file the agent has costs no payload."""
    out = Output(json)
    with connect(device) as client:
        size = file.stat().st_size if file.is_file() else 0
        with out.transfer(f"upload {file.name}", size) as progress:
            summary = client.upload(file, progress=progress)
    data = {"device": device, "address": client.address, "digest": summary.digest, "size": summary.size,
            "bytes_sent": summary.bytes_sent, "seconds": round(summary.seconds, 4),
            "already_present": summary.already_present, "resumed_from": summary.resumed_from}
    rate = summary.bytes_sent / summary.seconds / 2**20 if summary.seconds > 0 else 0.0
    out.result(data, lambda c: c.print(
        f"{summary.digest}  {summary.size} bytes, sent {summary.bytes_sent} in {summary.seconds:.2f} s "
        f"({rate:.0f} MiB/s)" + (" (already on the device)" if summary.already_present else "")))
