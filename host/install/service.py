"""How the agent is kept running on the device: a systemd unit, or a pidfile script where systemd is absent.

Managers: "systemd" (system unit, --as-service, root), "systemd-user" (the login user's systemd), "nohup"
(setsid + nohup + pidfile; survives the SSH session but not a reboot).
"""
from __future__ import annotations

import shlex
from typing import Optional

from device_agent.errors import PreconditionFailed

from .ssh import Remote

UNIT = "deploy-agent.service"
SYSTEM_UNIT_PATH = f"/etc/systemd/system/{UNIT}"

_CTL = """#!/bin/sh
# deploy-agent control without systemd (written by `deploy agent install`): start | stop | status
D={base}
PIDFILE="$D/agent.pid"
running() {{
  [ -f "$PIDFILE" ] || return 1
  p=$(cat "$PIDFILE")
  kill -0 "$p" 2>/dev/null && grep -q device_agent "/proc/$p/cmdline" 2>/dev/null
}}
case "$1" in
  start)
    running && exit 0
    set -a; . "$D/agent.env"; set +a
    setsid nohup "$D/venv/bin/python" -m device_agent >>"$D/agent.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    ;;
  stop)
    if running; then
      kill "$(cat "$PIDFILE")"
      i=0
      while running && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
      running && kill -9 "$(cat "$PIDFILE")"
    fi
    rm -f "$PIDFILE"
    ;;
  status)
    if running; then echo "running $(cat "$PIDFILE")"; else echo stopped; exit 3; fi
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
"""

_UNIT = """[Unit]
Description=jetson-deploy device agent
After=network-online.target
Wants=network-online.target

[Service]
{user}EnvironmentFile={base}/agent.env
ExecStart={base}/venv/bin/python -m device_agent
Restart=on-failure
RestartSec=3
NoNewPrivileges=true

[Install]
WantedBy={wanted}
"""


def choose(remote: Remote, as_service: bool) -> str:
    has_systemd = remote.run("test -d /run/systemd/system", check=False).status == 0
    if as_service:
        if not has_systemd:
            raise PreconditionFailed(f"--as-service needs systemd, which {remote.target} does not run; "
                                     "drop --as-service to use the user-level fallback")
        if remote.run("test \"$(id -u)\" = 0", check=False).status != 0:
            raise PreconditionFailed(f"--as-service writes {SYSTEM_UNIT_PATH} and needs root on {remote.target}; "
                                     "log in as root or drop --as-service")
        return "systemd"
    if has_systemd and remote.run("systemctl --user show-environment >/dev/null 2>&1", check=False).status == 0:
        return "systemd-user"
    return "nohup"


def _user_unit_path(remote: Remote) -> str:
    home = remote.run('printf %s "$HOME"').stdout.strip()
    return f"{home}/.config/systemd/user/{UNIT}"


def unit_path(remote: Remote, manager: str) -> Optional[str]:
    if manager == "systemd":
        return SYSTEM_UNIT_PATH
    if manager == "systemd-user":
        return _user_unit_path(remote)
    return None


def files(manager: str, base: str, user: str, remote: Optional[Remote] = None) -> list:
    """(path, bytes, mode) of what the manager needs on the device."""
    q = shlex.quote(base)
    out = [(f"{base}/bin/deploy-agent-ctl", _CTL.format(base=q).encode(), 0o755)]
    if manager == "systemd":
        out.append((SYSTEM_UNIT_PATH, _UNIT.format(user=f"User={user}\n", base=base,
                                                   wanted="multi-user.target").encode(), 0o644))
    elif manager == "systemd-user" and remote is not None:
        out.append((_user_unit_path(remote), _UNIT.format(user="", base=base, wanted="default.target").encode(),
                    0o644))
    return out


def _systemctl(manager: str) -> str:
    return "systemctl" if manager == "systemd" else "systemctl --user"


def running(remote: Remote, manager: str, base: str) -> bool:
    if manager == "nohup":
        return remote.run(f"{shlex.quote(base + '/bin/deploy-agent-ctl')} status", check=False).status == 0
    return remote.run(f"{_systemctl(manager)} is-active --quiet {UNIT}", check=False).status == 0


def restart(remote: Remote, manager: str, base: str) -> None:
    if manager == "nohup":
        ctl = shlex.quote(base + "/bin/deploy-agent-ctl")
        remote.run(f"{ctl} stop && {ctl} start")
        return
    sc = _systemctl(manager)
    remote.run(f"{sc} daemon-reload && {sc} enable {UNIT} && {sc} restart {UNIT}")


def remove(remote: Remote, manager: str, base: str) -> bool:
    """Stop the agent and remove its unit; True when something was there."""
    if manager == "nohup":
        ctl = base + "/bin/deploy-agent-ctl"
        if not remote.exists(ctl):
            return False
        was = running(remote, manager, base)
        remote.run(f"{shlex.quote(ctl)} stop")
        return was
    path = unit_path(remote, manager)
    if path is None or not remote.exists(path):
        return False
    sc = _systemctl(manager)
    remote.run(f"{sc} disable --now {UNIT}", check=False)
    remote.run(f"rm -f {shlex.quote(path)} && {sc} daemon-reload", check=False)
    return True
