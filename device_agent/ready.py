"""The line an agent prints on stdout once it serves, and the one reader every launcher uses.

Launchers (the local agent, tests, benchmarks, install) start `deploy-agent --listen HOST:0` and learn the port
from this line, so its format lives in exactly one place.
"""
from __future__ import annotations

import selectors
import subprocess
import time
from typing import Optional

READY_PREFIX = "deploy-agent listening on "


def ready_line(address: str) -> str:
    return f"{READY_PREFIX}{address}"


def wait_ready(proc: "subprocess.Popen[bytes]", timeout: float) -> Optional[str]:
    """The address from the agent's ready line, or None if it exits, closes stdout or says nothing in time."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sel.select(timeout=0.1):
                line = proc.stdout.readline().decode(errors="replace")
                if line.startswith(READY_PREFIX):
                    return line[len(READY_PREFIX):].strip()
                if not line:
                    return None
            elif proc.poll() is not None:
                return None
        return None
    finally:
        sel.close()
