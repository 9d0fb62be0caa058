"""Start and stop a real agent process for the benchmarks (the same way tests and users do)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[2]


def start_agent(store: Path, listen: str = "127.0.0.1:0", extra: Sequence[str] = (),
                prefix: Sequence[str] = (), env: Optional[dict] = None,
                python: str = sys.executable) -> tuple[subprocess.Popen, str]:
    cmd = [*prefix, python, "-m", "device_agent", "--listen", listen, "--store", str(store), *extra]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=full_env, cwd=str(REPO))
    from device_agent.ready import wait_ready

    address = wait_ready(proc, 120)
    if address is None:
        proc.kill()
        raise RuntimeError(f"agent did not start (exit {proc.poll()})")
    return proc, address


def stop_agent(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def timed_push(model: Path, device: str, env: dict, extra: Sequence[str] = ()) -> tuple[float, dict]:
    """(wall seconds, --json output) of `deploy push MODEL --device DEVICE --json EXTRA` run as a user would."""
    import json

    deploy = Path(sys.executable).parent / "deploy"
    started = time.perf_counter()
    proc = subprocess.run([str(deploy), "push", str(model), "--device", device, "--json", *extra],
                          capture_output=True, text=True, env=env, cwd=str(REPO), timeout=3600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"deploy push failed ({proc.returncode}): {proc.stderr.strip()[-1000:]}")
    return wall, json.loads(proc.stdout)


def bench_model(name: str) -> Path:
    """`.bench/models/NAME.onnx`, made by scripts/make_models.py when missing (the benchmarks' shared models)."""
    models = REPO / ".bench" / "models"
    models.mkdir(parents=True, exist_ok=True)
    model = models / f"{name}.onnx"
    if not model.exists():
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_models.py"), str(models), "--only", name],
                       check=True, capture_output=True)
    return model


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def wait_port(host: str, port: int, timeout: float = 10.0, prefix: Sequence[str] = ()) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{host}:{port} did not open")
