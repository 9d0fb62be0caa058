"""`deploy upload`: send a file to an agent's store (resumes, skips what the agent has)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from host.client.agent import connect
from host.client.retry import DEFAULT_RETRY_FOR_S

from ._options import DeviceOpt, JsonOpt, RetryForOpt, retry_lines
from .output import Output


def _signed(file: Path) -> Optional[bytes]:
    """The fleet's signing metadata when FILE is a bundle archive and this host has keys, else None."""
    from device_agent.errors import InvalidInput
    from host.security.signing import keys_present, metadata_for

    if not keys_present() or not file.is_file():
        return None
    try:
        return metadata_for(file)
    except InvalidInput:  # not a bundle archive: sent as it is
        return None


def upload(
    file: Annotated[Path, typer.Argument(help="File to send.")],
    device: DeviceOpt = "local",
    retry_for: RetryForOpt = DEFAULT_RETRY_FOR_S,
    json: JsonOpt = False,
) -> None:
    """Upload FILE in chunks; a cut-off upload resumes (by itself within --retry-for), a file the agent has costs
    no payload."""
    out = Output(json)
    with connect(device, retry_for=retry_for, on_retry=retry_lines(out)) as client:
        size = file.stat().st_size if file.is_file() else 0
        with out.transfer(f"upload {file.name}", size) as progress:
            summary = client.upload(file, progress=progress, trust=_signed(file))
    data = {"device": device, "address": client.address, "digest": summary.digest, "size": summary.size,
            "bytes_sent": summary.bytes_sent, "seconds": round(summary.seconds, 4),
            "already_present": summary.already_present, "resumed_from": summary.resumed_from,
            "retries": summary.retries}
    rate = summary.bytes_sent / summary.seconds / 2**20 if summary.seconds > 0 else 0.0
    out.result(data, lambda c: c.print(
        f"{summary.digest}  {summary.size} bytes, sent {summary.bytes_sent} in {summary.seconds:.2f} s "
        f"({rate:.0f} MiB/s)" + (" (already on the device)" if summary.already_present else "")))
