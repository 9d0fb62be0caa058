#!/usr/bin/env python3
"""The agent's footprint: idle resident memory of a started agent, and the time of `deploy-agent --help`.

Floors (issue 2): idle RSS under 80 MB, `--help` under 1 s. Median of several runs.
usage: .venv/bin/python scripts/bench/agent_footprint.py [--runs 5]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _agent import median, start_agent, stop_agent  # noqa: E402

AGENT_BIN = Path(sys.executable).parent / "deploy-agent"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    helps, rss = [], []
    for _ in range(args.runs):
        t = time.perf_counter()
        subprocess.run([str(AGENT_BIN), "--help"], check=True, capture_output=True)
        helps.append(time.perf_counter() - t)
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            proc, address = start_agent(Path(tmp) / "store")
            try:
                from host.client.agent import AgentClient
                from host.inventory import Device

                with AgentClient(Device(name="f", address=address)) as c:
                    c.info()  # one real call, then idle
                time.sleep(2)
                rss.append(rss_mb(proc.pid))
            finally:
                stop_agent(proc)
    h, r = median(helps), median(rss)
    print(f"agent footprint, median of {args.runs} runs")
    print("| measure | value | floor |")
    print("| --- | --- | --- |")
    print(f"| `deploy-agent --help` | {h * 1000:.0f} ms | < 1000 ms |")
    print(f"| idle agent RSS after one GetInfo | {r:.1f} MB | < 80 MB |")
    return 0 if h < 1.0 and r < 80 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())
