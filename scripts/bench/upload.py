#!/usr/bin/env python3
"""Upload throughput: gRPC `Upload` to a real agent vs a plain TCP socket with the same bytes, in one run.

1. loopback: a 256 MB file through `AgentClient.upload` against a plain TCP socket sending the same bytes (sender and
   receiver in their own processes, like client and agent). The reference receiver does the work any upload must:
   write the bytes to a file, sha256 them to check the digest, fsync; a second reference that discards the bytes
   shows pure transport. Runs interleaved, median of N; floor: ratio >= 0.5 against the first.
2. a veth pair between two network namespaces shaped to 1 Gbit/s with `tc` (agent in one, client in the other);
   floor: >= 90% of the link rate. Skipped with a message where namespaces cannot be made (needs root + iproute2).
3. the same file again: time and payload bytes; floor: no payload, under 50 ms.

usage: .venv/bin/python scripts/bench/upload.py [--size-mb 256] [--runs 3] [--skip-netns]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _agent import REPO, median, start_agent, stop_agent  # noqa: E402

from host.client.agent import AgentClient  # noqa: E402
from host.client.digests import hash_file  # noqa: E402
from host.inventory import Device  # noqa: E402

LINK_RATE_BPS = 1_000_000_000
NS_A, NS_B = "dbench_a", "dbench_b"
ADDR_A, ADDR_B = "198.18.0.1", "198.18.0.2"  # RFC 2544 benchmarking range, only inside our namespaces

# The reference receiver does what the agent must do with an upload (write a file, sha256 it to check the
# digest, fsync), or with `-` discards the bytes (pure transport, for information).
RECEIVER = r"""
import hashlib, os, socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(1)
target = sys.argv[3]
print(srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    buf = bytearray(1 << 20); view = memoryview(buf); total = 0
    f = open(target, "wb") if target != "-" else None
    h = hashlib.sha256()
    while True:
        n = conn.recv_into(view)
        if not n: break
        if f:
            f.write(view[:n]); h.update(view[:n])
        total += n
    if f:
        f.flush(); os.fsync(f.fileno()); f.close(); os.unlink(target)
    conn.sendall(str(total).encode()); conn.close()
"""

SENDER = r"""
import socket, sys, time
path, host, port, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), 1 << 20
t = time.perf_counter()
s = socket.create_connection((host, port))
with open(path, "rb") as f:
    while True:
        b = f.read(chunk)
        if not b: break
        s.sendall(b)
s.shutdown(socket.SHUT_WR); s.recv(64); s.close()
print(time.perf_counter() - t)
"""

GRPC_CLIENT = r"""
import sys, time
sys.path.insert(0, sys.argv[4])
from host.client.agent import AgentClient
from host.inventory import Device
c = AgentClient(Device(name="b", address=sys.argv[2]))
t = time.perf_counter(); s = c.upload(sys.argv[1], digest=sys.argv[3]); dt = time.perf_counter() - t
print(dt, s.bytes_sent)
"""


def tcp_run(path: Path, host: str, port: int, prefix: list[str]) -> float:
    out = subprocess.run([*prefix, sys.executable, "-c", SENDER, str(path), host, str(port)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def start_receiver(host: str, prefix: list[str], target: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([*prefix, sys.executable, "-c", RECEIVER, host, "0", target], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def grpc_run(path: Path, digest: str, address: str, store: Path, prefix: list[str]) -> float:
    blob = store / "blobs" / digest.split(":")[1]
    blob.unlink(missing_ok=True)
    out = subprocess.run([*prefix, sys.executable, "-c", GRPC_CLIENT, str(path), address, digest, str(REPO)],
                         capture_output=True, text=True, check=True)
    seconds, sent = out.stdout.split()
    assert int(sent) == path.stat().st_size, "the upload did not send the whole file"
    return float(seconds)


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


SHAPE_1GBIT = ("tbf", "rate", "1gbit", "burst", "256kb", "latency", "50ms")


def make_namespaces(qdisc: tuple[str, ...] = SHAPE_1GBIT,
                    names: tuple[str, str, str, str] = (NS_A, NS_B, "dbv_a", "dbv_b")) -> str | None:
    """Two namespaces joined by a veth pair, each end shaped by `qdisc` (`tc qdisc add dev D root ...`; default
    1 Gbit/s); returns why not, or None. scripts/bench/faults.py uses it with netem, scripts/bench/delta.py with
    names of its own (namespace a, namespace b, veth a, veth b), so it never tears down another bench's."""
    ns_a, ns_b, veth_a, veth_b = names
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        return "needs root and iproute2 (ip, tc)"
    teardown_namespaces((ns_a, ns_b))
    try:
        sh("ip", "netns", "add", ns_a)
        sh("ip", "netns", "add", ns_b)
        sh("ip", "link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        sh("ip", "link", "set", veth_a, "netns", ns_a)
        sh("ip", "link", "set", veth_b, "netns", ns_b)
        for ns, dev, addr in ((ns_a, veth_a, ADDR_A), (ns_b, veth_b, ADDR_B)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", *qdisc)
    except subprocess.CalledProcessError as exc:
        teardown_namespaces((ns_a, ns_b))
        return f"could not make namespaces: {exc.stderr.decode(errors='replace').strip() or exc}"
    return None


def teardown_namespaces(names: tuple[str, str] = (NS_A, NS_B)) -> None:
    for ns in names:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def row(name: str, grpc_s: float, ref_s: float | None, size: int, floor: str) -> str:
    rate = size / grpc_s / 1e6
    if ref_s is None:
        return f"| {name} | {rate:.0f} MB/s ({grpc_s:.2f} s) | - | - | {floor} |"
    ref_rate = size / ref_s / 1e6
    return f"| {name} | {rate:.0f} MB/s ({grpc_s:.2f} s) | {ref_rate:.0f} MB/s ({ref_s:.2f} s) | {ref_s / grpc_s:.2f} | {floor} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-netns", action="store_true")
    parser.add_argument("--dir", default=None,
                        help="where the agent's store and the TCP receiver's file live (default: a temp dir; "
                             "/dev/shm takes this machine's disk out of the measurement)")
    args = parser.parse_args()
    size = args.size_mb * 1024 * 1024
    rows, verdicts = [], []
    with tempfile.TemporaryDirectory(prefix="upload-bench-", dir=args.dir) as tmp:
        tmpdir = Path(tmp)
        path = tmpdir / "payload.bin"
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        digest = hash_file(path)
        store = tmpdir / "agent" / "store"

        # 1. loopback
        agent, address = start_agent(store)
        receiver, port = start_receiver("127.0.0.1", [], str(tmpdir / "tcp-received.bin"))
        null_receiver, null_port = start_receiver("127.0.0.1", [], "-")
        try:
            grpc_times, tcp_times, null_times = [], [], []
            for _ in range(args.runs):  # interleaved, so both see the same disk and page-cache weather
                grpc_times.append(grpc_run(path, digest, address, store, []))
                tcp_times.append(tcp_run(path, "127.0.0.1", port, []))
                null_times.append(tcp_run(path, "127.0.0.1", null_port, []))
            g, t, t0 = median(grpc_times), median(tcp_times), median(null_times)
            rows.append(row("loopback, TCP receiver writes, hashes, fsyncs (as the agent)", g, t, size,
                            "ratio >= 0.5"))
            rows.append(row("loopback, TCP receiver discards (information)", g, t0, size, "-"))
            verdicts.append(("loopback ratio", t / g, t / g >= 0.5))

            # 3. the same file again (the agent has it): one query, no payload
            with AgentClient(Device(name="l", address=address)) as client:
                client.upload(path, digest=digest)
                again = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    s = client.upload(path)  # digest from the host's digest table, no re-hash
                    again.append((time.perf_counter() - t0, s.bytes_sent))
            again_s = median([a for a, _ in again])
            payload = max(b for _, b in again)
            rows.append(f"| same file again | {again_s * 1000:.1f} ms, {payload} payload bytes | - | - | "
                        "no payload, < 50 ms |")
            verdicts.append(("again", again_s * 1000, payload == 0 and again_s < 0.05))
        finally:
            stop_agent(agent)
            receiver.kill()
            null_receiver.kill()

        # 2. namespaces shaped to 1 Gbit/s
        why = "skipped by --skip-netns" if args.skip_netns else make_namespaces()
        if why:
            rows.append(f"| 1 Gbit/s veth | skipped: {why} | | | >= 90% of link |")
        else:
            try:
                ns_a = ["ip", "netns", "exec", NS_A]
                ns_b = ["ip", "netns", "exec", NS_B]
                store2 = tmpdir / "agent2" / "store"
                agent, address = start_agent(store2, listen=f"{ADDR_A}:7311", extra=["--insecure"], prefix=ns_a)
                receiver, port = start_receiver(ADDR_A, ns_a, str(tmpdir / "tcp-received.bin"))
                try:
                    pairs = [(grpc_run(path, digest, address, store2, ns_b), tcp_run(path, ADDR_A, port, ns_b))
                             for _ in range(args.runs)]
                    g, t = median([p[0] for p in pairs]), median([p[1] for p in pairs])
                finally:
                    stop_agent(agent)
                    receiver.kill()
                link = LINK_RATE_BPS / 8
                frac = size / g / link
                rows.append(row("1 Gbit/s veth", g, t, size, ">= 90% of link") +
                            f" ({100 * frac:.0f}% of link)")
                verdicts.append(("netns fraction of link", frac, frac >= 0.9))
            finally:
                teardown_namespaces()

    print(f"upload of {args.size_mb} MiB, median of {args.runs} interleaved runs, store in {args.dir or tempfile.gettempdir()}")
    print("| path | gRPC upload to the agent | plain TCP socket | TCP time / gRPC time | floor |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(r)
    print(json.dumps({name: {"value": round(v, 4), "ok": ok} for name, v, ok in verdicts}))
    return 0 if all(ok for _, _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
