"""Probe every backend in a child process, so the agent itself stays small until it does real work.

Importing TensorRT or onnxruntime to learn its version costs tens to hundreds of MB that an idle agent on a
4 GB Jetson should not hold; a child pays it and exits. `python -m device_agent.engines.probe` prints the results
as JSON; a child that fails or hangs falls back to probing in this process.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import List

from device_agent.engines.base import ProbeResult

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 120.0


def probe_in_child(timeout: float = PROBE_TIMEOUT_S) -> List[ProbeResult]:
    from device_agent import engines

    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run([sys.executable, "-m", "device_agent.engines.probe"], capture_output=True, text=True,
                              timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        rows = json.loads(proc.stdout)
        return [ProbeResult(str(r["name"]), bool(r["available"]), str(r["version"]), str(r["detail"]))
                for r in rows]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError) as exc:
        log.warning("backend probe in a child process failed (%s); probing in the agent itself", exc)
        return engines.probe_all()


def main() -> int:
    from device_agent import engines

    print(json.dumps([asdict(p) for p in engines.probe_all()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
