"""`deploy devices` and `deploy fleet ls` as an operator reads them: one short line per device, the reason on demand."""
from __future__ import annotations

import os
import socket

from tests.host.cli.helpers import parse_json


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inventory(tmp_path, entries: dict[str, str]) -> dict[str, str]:
    path = tmp_path / "deploy.toml"
    path.write_text("".join(f'[devices.{name}]\naddress = "{addr}"\ntags = ["lab"]\n\n'
                            for name, addr in entries.items()))
    return {**os.environ, "DEPLOY_INVENTORY": str(path), "COLUMNS": "80"}


def test_devices_prints_one_line_per_unreachable_device_within_80_columns_and_exits_1(agent, deploy, tmp_path):
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(4)
    try:
        env = _inventory(tmp_path, {"board-alive": agent.address,
                                    "board-refusing-with-a-rather-long-name": f"127.0.0.1:{_closed_port()}",
                                    "board-mute": f"127.0.0.1:{mute.getsockname()[1]}"})
        proc = deploy("devices", "--timeout", "1", env=env)
        verbose = deploy("devices", "--timeout", "1", "-v", env=env)
        data = parse_json(deploy("devices", "--timeout", "1", "--json", env=env), exit_code=1)
    finally:
        mute.close()
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 5, proc.stdout  # header, three devices, summary
    assert all(len(line.rstrip()) <= 80 for line in lines), proc.stdout
    rows = {line.split()[0][:10]: line for line in lines[1:4]}  # a long name is cut, never wrapped
    assert "down: refused" in rows["board-refu"] and "down: timeout" in rows["board-mute"]
    assert " up " in rows["board-aliv"]
    assert "Connection refused" not in proc.stdout, "the whole reason is for -v and --json only"
    assert lines[4] == "3 devices: 1 up, 2 down (refused 1, timeout 1)"

    assert verbose.returncode == 1 and "Connection refused" in verbose.stdout and "(request " in verbose.stdout
    by_name = {r["name"]: r for r in data["devices"]}
    refused = by_name["board-refusing-with-a-rather-long-name"]
    assert refused["state"] == "down: refused" and "Connection refused" in refused["error"]
    assert len(refused["request_id"]) == 12 and int(refused["request_id"], 16) >= 0
    assert by_name["board-mute"]["state"] == "down: timeout" and "DEADLINE_EXCEEDED" in by_name["board-mute"]["error"]
    assert (data["up"], data["down"]) == (1, 2)


def test_devices_exits_0_when_every_selected_device_is_up(agent, deploy, tmp_path):
    env = _inventory(tmp_path, {"board-alive": agent.address})
    proc = deploy("devices", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "1 device: 1 up, 0 down"


def test_devices_sort_state_lists_down_devices_first_and_a_bad_sort_is_one_line_exit_2(agent, deploy, tmp_path):
    env = _inventory(tmp_path, {"a-alive": agent.address, "z-gone": f"127.0.0.1:{_closed_port()}"})
    data = parse_json(deploy("devices", "--sort", "state", "--json", env=env), exit_code=1)
    assert [r["name"] for r in data["devices"]] == ["z-gone", "a-alive"]
    bad = deploy("devices", "--sort", "colour", env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--sort 'colour'" in bad.stderr


def test_fleet_ls_shows_the_short_state_and_keeps_the_reason_in_json(deploy, tmp_path):
    env = _inventory(tmp_path, {"gone": f"127.0.0.1:{_closed_port()}"})
    proc = deploy("fleet", "ls", env=env)
    assert proc.returncode == 3 and "down: refused" in proc.stdout and "Connection refused" not in proc.stdout
    data = parse_json(deploy("fleet", "ls", "--json", env=env), exit_code=3)
    assert data["unreachable"][0]["state"] == "down: refused"
    assert "Connection refused" in data["unreachable"][0]["reason"]
    assert len(data["unreachable"][0]["request_id"]) == 12
    assert data["summary"] == "1 device: 0 up, 1 down (refused 1)"


def test_devices_watch_redraws_in_place_on_a_terminal_and_ctrl_c_exits_with_the_last_state(deploy_path, tmp_path):
    import pty
    import signal
    import subprocess
    import time

    from tests.host.cli.helpers import default_sigint

    env = _inventory(tmp_path, {"gone": f"127.0.0.1:{_closed_port()}"})
    leader, follower = pty.openpty()
    proc = subprocess.Popen(default_sigint([deploy_path, "devices", "--watch", "--interval", "0.5", "--timeout", "0.5"]),
                            stdin=follower, stdout=follower, stderr=follower, env={**env, "LINES": "24"})
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and screen.count(b"1 device: 0 up, 1 down") < 3:
        try:
            screen += os.read(leader, 65536)
        except OSError:
            break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 1, screen[-500:]
    os.close(leader)
    assert screen.count(b"1 device: 0 up, 1 down (refused 1)") >= 3, screen[-500:]
    assert b"\x1b[1A" in screen or b"\x1b[2K" in screen, "later rounds overwrite the earlier ones"
