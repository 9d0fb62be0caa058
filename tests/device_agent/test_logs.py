"""The agent's log: one line per call, plain or JSON, carrying the request id the CLI printed on failure."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _request_id(stderr: str) -> str:
    found = re.search(r"\(request ([0-9a-f]{12})\)$", stderr.strip())
    assert found, f"the CLI's error names no request id: {stderr!r}"
    return found.group(1)


def test_a_failed_call_is_one_json_log_line_with_the_request_id_the_cli_printed(agent_factory, deploy):
    agent = agent_factory(log_format="json")
    proc = deploy("cache", "prune", "--key", "no-such-engine", "--device", agent.address)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    request_id = _request_id(proc.stderr)
    lines = [json.loads(line) for line in agent.log().splitlines() if line.startswith("{")]
    assert len(lines) == len([ln for ln in agent.log().splitlines() if ln.strip()]), "every line is one JSON object"
    mine = [line for line in lines if line.get("request_id") == request_id]
    assert len(mine) == 1, lines
    assert mine[0]["method"] == "/deploy.v1.DeviceAgent/Prune" and mine[0]["code"] == "NOT_FOUND"
    assert mine[0]["event"] == "rpc" and mine[0]["level"] == "INFO"  # a missing key is the caller's business
    assert "no-such-engine" in mine[0]["error"] and mine[0]["seconds"] >= 0


def test_plain_log_lines_carry_the_request_id_as_a_key_value(agent_factory, deploy):
    agent = agent_factory()
    proc = deploy("cache", "prune", "--key", "no-such-engine", "--device", agent.address)
    request_id = _request_id(proc.stderr)
    mine = [line for line in agent.log().splitlines() if f"request_id={request_id}" in line]
    assert len(mine) == 1 and "Prune NOT_FOUND" in mine[0] and "code=NOT_FOUND" in mine[0]


def test_an_unknown_log_format_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "device_agent", "--listen", "127.0.0.1:0", "--store",
                           str(tmp_path / "store"), "--log-format", "xml"], capture_output=True, text=True,
                          timeout=60, cwd=str(REPO))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "deploy-agent: error: --log-format 'xml': use one of plain, json"
