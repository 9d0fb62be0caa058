"""The `local` device: an agent on loopback that the CLI starts on demand and reuses.

Its state (pid, address) lives in the user cache dir; it exits by itself after 10 idle minutes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc
import platformdirs
from filelock import FileLock
from grpc_health.v1 import health_pb2, health_pb2_grpc

from device_agent.errors import Unavailable
from device_agent.fileio import atomic_write
from device_agent.ready import wait_ready

IDLE_EXIT_S = 600.0
START_TIMEOUT_S = 30.0


def cache_dir() -> Path:
    """Honours XDG_CACHE_HOME through platformdirs."""
    return Path(platformdirs.user_cache_dir("deploy"))


@dataclass
class LocalAgent:
    pid: int
    address: str


def _state_path() -> Path:
    return cache_dir() / "local-agent.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie child of ours counts as gone
        done, _status = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def healthy(address: str, timeout: float = 2.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _read_state() -> Optional[LocalAgent]:
    try:
        data = json.loads(_state_path().read_text())
        return LocalAgent(int(data["pid"]), str(data["address"]))
    except (OSError, ValueError, KeyError):
        return None


def running() -> Optional[LocalAgent]:
    state = _read_state()
    if state and _alive(state.pid) and healthy(state.address):
        return state
    return None


def ensure_running() -> LocalAgent:
    """Reuse the running local agent or start one; a file lock keeps two CLIs from starting two."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / "local-agent.lock"), timeout=START_TIMEOUT_S):
        state = running()
        if state:
            return state
        log = open(root / "local-agent.log", "ab")
        cmd = [sys.executable, "-m", "device_agent", "--listen", "127.0.0.1:0", "--store", str(root / "agent" / "store"),
               "--idle-exit-s", str(IDLE_EXIT_S)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        address = wait_ready(proc, START_TIMEOUT_S)
        assert proc.stdout is not None
        proc.stdout.close()
        if address is None:
            proc.kill()
            raise Unavailable(f"the local agent did not start; see {root / 'local-agent.log'}")
        state = LocalAgent(proc.pid, address)
        write_state(state)
        return state


def write_state(state: LocalAgent) -> None:
    """Durably (temp file, fsync, rename, fsync the directory): after a power cut the state is old or new, whole."""
    atomic_write(_state_path(), json.dumps({"pid": state.pid, "address": state.address}).encode())


def stop() -> bool:
    """Stop the local agent now; True when one was running."""
    state = _read_state()
    _state_path().unlink(missing_ok=True)
    if not state or not _alive(state.pid):
        return False
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(state.pid):
        time.sleep(0.05)
    if _alive(state.pid):
        os.kill(state.pid, signal.SIGKILL)
    return True
