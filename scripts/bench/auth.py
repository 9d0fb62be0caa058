#!/usr/bin/env python3
"""What authentication costs: one real agent process per mode (plaintext, token, mutual TLS, mutual TLS + token).

Measured per mode, median of --runs:
  connect  a new channel's first GetInfo (TCP + TLS handshake + first RPC), ms
  getinfo  GetInfo on a warm channel (median of 200 calls), ms
  upload   AgentClient.upload of a --size-mb file of random bytes (a new digest each run), MB/s
The reference is the plaintext agent; the ratio column is mode / plaintext (for upload, plaintext / mode, so
above 1 always means slower).

usage: .venv/bin/python scripts/bench/auth.py [--size-mb 64] [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _agent import median, start_agent, stop_agent  # noqa: E402

from host.client.agent import AgentClient  # noqa: E402
from host.inventory import Device, TlsFiles  # noqa: E402
from host.security import certs  # noqa: E402

NAME = "bench-agent"


def _modes(pki: Path, token: Path) -> dict:
    agent = certs.agent_paths(pki, NAME)
    client = certs.client_paths(pki)
    tls_flags = ["--tls-cert", str(agent.cert), "--tls-key", str(agent.key), "--tls-ca", str(pki / certs.CA_CERT)]
    tls = TlsFiles(ca=pki / certs.CA_CERT, cert=client.cert, key=client.key)
    return {
        "plaintext": ([], {}),
        "token": (["--token-file", str(token)], {"token_file": token}),
        "mutual TLS": (tls_flags, {"tls": tls}),
        "mutual TLS + token": (tls_flags + ["--token-file", str(token)], {"tls": tls, "token_file": token}),
    }


def _measure(address: str, fields: dict, size_mb: int, runs: int, work: Path) -> dict:
    device = Device(name=NAME, address=address, **fields)
    connect, unary, upload = [], [], []
    for _ in range(runs):
        t = time.perf_counter()
        with AgentClient(device) as c:
            c.info()
        connect.append((time.perf_counter() - t) * 1e3)
    with AgentClient(device) as c:
        c.info()
        for _ in range(runs):
            samples = []
            for _ in range(200):
                t = time.perf_counter()
                c.info()
                samples.append((time.perf_counter() - t) * 1e3)
            unary.append(median(samples))
        for i in range(runs):
            path = work / f"blob{i}"
            path.write_bytes(os.urandom(size_mb << 20))
            t = time.perf_counter()
            c.upload(path)
            upload.append(size_mb / (time.perf_counter() - t))
            path.unlink()
    return {"connect": median(connect), "getinfo": median(unary), "upload": median(upload)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        work = Path(tmp)
        pki = work / "pki"
        certs.init(pki, [certs.DeviceNames(NAME, ["127.0.0.1:0"])])
        token = work / "token"
        token.write_text(secrets.token_urlsafe(32))
        token.chmod(0o600)
        results = {}
        for mode, (flags, fields) in _modes(pki, token).items():
            proc, address = start_agent(work / "agents" / mode.replace(" ", "_") / "store", extra=flags)
            try:
                results[mode] = _measure(address, fields, args.size_mb, args.runs, work)
            finally:
                stop_agent(proc)
    base = results["plaintext"]
    print(f"auth overhead, one agent per mode on loopback, median of {args.runs} runs, {args.size_mb} MB uploads")
    print(f"{'mode':<20} {'connect ms':>11} {'ratio':>6} {'GetInfo ms':>11} {'ratio':>6} {'upload MB/s':>12} "
          f"{'ratio':>6}")
    for mode, r in results.items():
        print(f"{mode:<20} {r['connect']:>11.2f} {r['connect'] / base['connect']:>6.2f} {r['getinfo']:>11.3f} "
              f"{r['getinfo'] / base['getinfo']:>6.2f} {r['upload']:>12.0f} {base['upload'] / r['upload']:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
