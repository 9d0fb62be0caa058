#!/usr/bin/env python3
"""Reliability under faults, measured: real agents on loopback, SIGKILLed at random points, a full disk, overload.

Scenarios (each prints one row of scenario / count / result; docs/reliability.md has the table):
- uploads:    kill -9 of the agent at a random point of each of --uploads uploads (1-24 MiB; the kill comes once
              a random fraction of the file has been sent, so some land after the commit), restarted at once on
              the same port and store; each upload is a client with a 30 s retry window, which must complete by
              itself with the right digest; afterwards every blob must hash to its name and partial/ be empty.
              (A kill before the agent first answered would fail at once: a device never reached is not retried.)
- builds:     kill -9 at a random point of each of --builds cache-miss builds (a ~7 MB plan each), restarted at
              once; right after each restart every cache entry must verify (plan sha256 == its meta) and no temp
              dir of a dead agent may be left; the client's build (asked again) must end with its summary.
- restart:    `deploy upload`, `deploy push`, `deploy fleet warm` (3 agents) run as a user would, the agent killed
              mid-upload and restarted 2 s later, --cli-runs times each: each must complete without being re-run.
- overload:   --calls concurrent small calls (GetInfo, QueryUpload, health) against one agent with the default
              --max-concurrent-rpcs 16, no client retries: each answered OK or RESOURCE_EXHAUSTED within its 10 s
              deadline; then --concurrent-uploads concurrent 8 MiB uploads with retrying clients: all complete;
              the agent's peak RSS.
- netem:      `deploy push` (a ~12 MB bundle) from one network namespace to an agent in another across
              upload.py's veth pair with 10 % loss and 500 ms delay (tc netem; where the kernel has no sch_netem:
              10 % loss by nftables at each end's ingress, a 4 Mbit/s tbf link, no delay), the link taken down
              for --down-s and up again --flaps times, spread over the upload; it must complete by itself; the
              client's retries and the bytes it sent twice (needs root, iproute2, nft for the fallback).
- enospc, commit-order: the suite's own tests (test_faults.py and test_build_faults.py -k disk, test_commit_order.py),
              run once each (they need root for the tmpfs and strace).

usage: .venv/bin/python scripts/bench/faults.py [--uploads 200] [--builds 50] [--cli-runs 3] [--calls 500]
                                                [--concurrent-uploads 64] [--only uploads,builds,...] [--seed 1]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _agent import REPO, start_agent, stop_agent  # noqa: E402

import grpc  # noqa: E402

from host.client.agent import AgentClient  # noqa: E402
from host.inventory import Device  # noqa: E402
from protos import agent_pb2, agent_pb2_grpc  # noqa: E402

MB = 1024 * 1024
DEPLOY = str(Path(sys.executable).parent / "deploy")


class Agent:
    """One agent process that can be SIGKILLed and started again on the same port and store."""

    def __init__(self, store: Path, extra: tuple[str, ...] = ()) -> None:
        self.store, self.extra = store, extra
        self.proc, self.address = start_agent(store, extra=extra)
        self.port = int(self.address.rsplit(":", 1)[1])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def start(self) -> None:
        for _ in range(20):  # the port may linger for a moment after a kill
            try:
                self.proc, self.address = start_agent(self.store, listen=f"127.0.0.1:{self.port}", extra=self.extra)
                return
            except RuntimeError:
                time.sleep(0.1)
        raise RuntimeError(f"agent did not restart on port {self.port}")

    def stop(self) -> None:
        stop_agent(self.proc)

    def client(self, retry_for: float = 30.0, on_retry: Optional[Callable[[str], None]] = None) -> AgentClient:
        return AgentClient(Device(name="faults", address=self.address), retry_for=retry_for, on_retry=on_retry)


def sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MB), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def random_bytes(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def row(scenario: str, count: str, result: str, command: str, ok: bool) -> dict[str, Any]:
    line = {"scenario": scenario, "count": count, "result": result, "command": command, "ok": ok}
    print(f"{'PASS' if ok else 'FAIL'}  {scenario}: {count}: {result}", flush=True)
    return line


# ---------------------------------------------------------------- kill -9 during uploads

def uploads(n: int, rng: random.Random, work: Path) -> dict[str, Any]:
    agent = Agent(work / "store")
    files = work / "files"
    files.mkdir()
    done, wrong, mid, retries = 0, [], 0, 0
    started = time.monotonic()
    try:
        for i in range(n):
            path = files / f"f{i}.bin"
            path.write_bytes(random_bytes(rng, rng.randint(1 * MB, 24 * MB)))
            want = sha_file(path)
            result: dict[str, Any] = {}
            client = agent.client()
            point = rng.uniform(0.0, 1.0)  # the kill comes once this fraction of the file has been sent
            reached = threading.Event()

            def progress(sent: int, total: int) -> None:
                if sent >= point * total:
                    reached.set()

            thread = threading.Thread(target=lambda: result.update(
                s=_try(lambda: client.upload(path, progress=progress))))
            thread.start()
            reached.wait(60)
            mid += thread.is_alive()
            agent.kill()
            agent.start()
            thread.join(120)
            client.close()
            summary = result.get("s")
            if isinstance(summary, Exception) or summary is None or summary.digest != want:
                wrong.append((i, repr(summary)[:200]))
            else:
                done += 1
                retries += summary.retries
            path.unlink()
        corrupt = [p.name for p in (work / "store" / "blobs").iterdir() if sha_file(p) != "sha256:" + p.name]
        leftovers = list((work / "store" / "partial").iterdir())
    finally:
        agent.stop()
    ok = done == n and not corrupt and not leftovers
    return row("kill -9 at a random point of an upload, agent restarted at once", f"{n} uploads ({mid} still in "
               "flight at the kill)", f"{done}/{n} completed by themselves with the right digest ({retries} retries); "
               f"{len(corrupt)} corrupt blobs; {len(leftovers)} partial files left" +
               (f"; failures: {wrong[:3]}" if wrong else ""), f"faults.py --only uploads --uploads {n}", ok)


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported in the table
        return exc


# ---------------------------------------------------------------- kill -9 during builds

def _entry_ok(d: Path) -> bool:
    try:
        meta = json.loads((d / "meta.json").read_text())
        return sha_file(d / "plan") == meta["digest"] and (d / "plan").stat().st_size == meta["size"]
    except (OSError, ValueError, KeyError):
        return False


def _dead_temps(tmp: Path) -> list[str]:
    out = []
    for d in tmp.iterdir():
        bits = d.name.split(".")
        pid = int(bits[1]) if len(bits) > 1 and bits[1].isdigit() else None
        alive = pid is not None and Path(f"/proc/{pid}").exists()
        if not alive:
            out.append(d.name)
    return out


def builds(n: int, rng: random.Random, work: Path) -> dict[str, Any]:
    from tests.device_agent.onnx_models import single_segment_bundle, wide_mlp

    agent = Agent(work / "store")
    cache = work / "engines"
    done, bad_entries, dead_temps, failures, mid = 0, 0, 0, [], 0
    try:
        for i in range(n):
            archive, _, _ = single_segment_bundle(work / f"b{i}", wide_mlp(768, 3, seed=1000 + i), "m")
            client = agent.client()
            digest = client.upload(archive).digest
            result: dict[str, Any] = {}
            thread = threading.Thread(target=lambda: result.update(e=_try(lambda: list(client.build(digest)))))
            thread.start()
            time.sleep(rng.uniform(0.0, 1.2))
            mid += thread.is_alive()
            agent.kill()
            agent.start()
            entries = list((cache / "entries").iterdir()) if (cache / "entries").is_dir() else []
            bad_entries += sum(not _entry_ok(d) for d in entries)
            dead_temps += len(_dead_temps(cache / "tmp")) if (cache / "tmp").is_dir() else 0
            thread.join(180)
            client.close()
            events = result.get("e")
            if isinstance(events, list) and events and events[-1].WhichOneof("event") == "summary" \
                    and not events[-1].summary.failed:
                done += 1
            else:
                failures.append((i, repr(events)[:200]))
            for p in (work / f"b{i}").rglob("*"):
                if p.is_file():
                    p.unlink()
    finally:
        agent.stop()
    ok = done == n and bad_entries == 0 and dead_temps == 0
    return row("kill -9 at a random point of a build (cache miss), agent restarted at once",
               f"{n} builds ({mid} still in flight at the kill)",
               f"{bad_entries} corrupt cache entries, {dead_temps} temp dirs of a dead agent after restart; "
               f"{done}/{n} builds asked again by the client ended with their summary" +
               (f"; failures: {failures[:3]}" if failures else ""), f"faults.py --only builds --builds {n}", ok)


# ---------------------------------------------------------------- the CLI across a restart 2 s later

def _kill_when_partial(agents: list[Agent], at_least: int, proc: subprocess.Popen, timeout: float = 120) -> Agent:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for a in agents:
            part = a.store / "partial"
            sizes = [p.stat().st_size for p in part.iterdir()] if part.is_dir() else []
            if sizes and max(sizes) >= at_least:
                a.kill()
                return a
        time.sleep(0.001)
    raise RuntimeError(f"no upload reached {at_least} bytes (exit {proc.poll()})")


def restarts(runs: int, rng: random.Random, work: Path) -> list[dict[str, Any]]:
    import tomli_w

    from tests.device_agent.onnx_models import single_segment_bundle, wide_mlp

    rows = []
    archive, _, _ = single_segment_bundle(work, wide_mlp(1024, 4, seed=7), "big")  # 16 MB
    big = work / "big.bin"
    big.write_bytes(random_bytes(rng, 64 * MB))
    for what in ("upload", "push", "fleet warm"):
        good, notes = 0, []
        for r in range(runs):
            base = work / f"{what.replace(' ', '-')}{r}"
            agents = [Agent(base / f"a{k}" / "store") for k in range(3 if what == "fleet warm" else 1)]
            env = dict(os.environ)
            try:
                if what == "upload":
                    cmd = [DEPLOY, "upload", str(big), "--device", agents[0].address, "--json"]
                elif what == "push":
                    cmd = [DEPLOY, "push", str(archive), "--device", agents[0].address, "--json"]
                else:
                    inv = base / "deploy.toml"
                    inv.write_text(tomli_w.dumps({"devices": {f"d{k}": {"address": a.address, "profile": "x86-cpu"}
                                                              for k, a in enumerate(agents)}}))
                    env["DEPLOY_INVENTORY"] = str(inv)
                    cmd = [DEPLOY, "fleet", "warm", str(archive), "--json"]
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                victim = _kill_when_partial(agents, 2 * MB, proc)
                time.sleep(2.0)
                victim.start()
                out, err = proc.communicate(timeout=300)
                data = json.loads(out) if out.strip() else {}
                if what == "upload":
                    passed = proc.returncode == 0 and data.get("digest") == sha_file(big)
                elif what == "push":
                    passed = proc.returncode == 0 and data.get("bundle_digest") == sha_file(archive) and \
                        data["verify"]["passed"]
                else:
                    passed = proc.returncode == 0 and data.get("ok") is True and \
                        all(len(c["copied_to"]) + (c["built_on"] is not None) == 3 for c in data["classes"])
                good += passed
                if not passed:
                    notes.append(f"exit {proc.returncode}: {err.strip().splitlines()[-1:] if err else ''}")
            finally:
                for a in agents:
                    _try(a.stop)
        rows.append(row(f"agent killed mid-upload and restarted 2 s later during `deploy {what}`", f"{runs} runs",
                        f"{good}/{runs} completed without being run again" + (f"; {notes[:2]}" if notes else ""),
                        f"faults.py --only restart --cli-runs {runs}", good == runs))
    return rows


# ---------------------------------------------------------------- a flapping, lossy link

NETEM = ("netem", "loss", "10%", "delay", "500ms")
#: where the kernel lacks sch_netem: a slower link (so the flaps land inside the upload) and the 10 % loss made
#: with nftables at each end's ingress; no added delay (nothing but netem delays packets)
FALLBACK_SHAPE = ("tbf", "rate", "4mbit", "burst", "32kb", "latency", "400ms")


def _nft_loss(ns: str, dev: str, percent: int) -> None:
    rules = (f"table netdev dbench_loss {{\n chain lossy {{\n  type filter hook ingress device {dev} priority 0;\n"
             f"  numgen random mod 100 < {percent} drop\n }}\n}}\n")
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True, check=True,
                   capture_output=True)


def netem(flaps: int, down_s: float, up_s: float, size_mb: int, work: Path) -> dict[str, Any]:
    """`deploy push` from one namespace to an agent in the other across a lossy veth pair, link down and up."""
    import shutil

    from upload import ADDR_A, NS_A, NS_B, make_namespaces, teardown_namespaces  # the namespaces and veth pair

    from tests.device_agent.onnx_models import single_segment_bundle, wide_mlp

    archive, _, _ = single_segment_bundle(work, wide_mlp(512 if size_mb <= 4 else 1024, max(1, size_mb // 4),
                                                         seed=11), "flap")
    size = archive.stat().st_size
    scenario = (f"`deploy push` across a veth pair between network namespaces, 10 % loss, %s, the link taken "
                f"down for {down_s:g} s and up again {flaps} times during the upload")
    command = f"faults.py --only netem --flaps {flaps} --down-s {down_s:g} --size-mb {size_mb}"
    shaping = "netem 500 ms delay"
    why = make_namespaces(NETEM)
    if why and "unknown" in why:  # no sch_netem in this kernel: loss from nftables, a slower link, no delay
        shaping = "no added delay (this kernel has no sch_netem; loss by nftables, link 4 Mbit/s)"
        why = make_namespaces(FALLBACK_SHAPE)
        if not why and shutil.which("nft"):
            try:
                _nft_loss(NS_A, "dbv_a", 10)
                _nft_loss(NS_B, "dbv_b", 10)
            except subprocess.CalledProcessError as exc:
                why = f"nft: {exc.stderr.strip()}"
        elif not why:
            why = "no sch_netem in this kernel and no nft for the loss"
    scenario = scenario.replace("%s", shaping)
    if why:
        teardown_namespaces()
        return row(scenario, "1 run", f"skipped: {why}", command, False)
    ns_a, ns_b = ["ip", "netns", "exec", NS_A], ["ip", "netns", "exec", NS_B]
    agent = None
    try:
        agent, address = start_agent(work / "agent" / "store", listen=f"{ADDR_A}:7312", extra=["--insecure"],
                                     prefix=ns_a)
        t0 = time.monotonic()
        # not --json: its retry lines (stderr) are what counts the interruptions the client saw
        proc = subprocess.Popen([*ns_b, DEPLOY, "push", str(archive), "--device", address, "--retry-for", "300"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "COLUMNS": "400"})
        partial = work / "agent" / "store" / "partial"
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and not (
                partial.is_dir() and any(p.stat().st_size >= MB for p in partial.iterdir())):
            time.sleep(0.05)
        flapped, at = 0, []
        for k in range(flaps):
            # each flap once the agent has committed a further share of the bundle (or 20 s passed), so the
            # five land spread over the upload rather than all at its start
            want, wait_until = size * (k + 1) // (flaps + 2), time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < wait_until:
                part = [p.stat().st_size for p in partial.iterdir()] if partial.is_dir() else []
                if max(part, default=0) >= want or not part:
                    break
                time.sleep(0.05)
            if proc.poll() is not None:
                break
            part = [p.stat().st_size for p in partial.iterdir()] if partial.is_dir() else []
            at.append(max(part, default=size))
            subprocess.run([*ns_b, "ip", "link", "set", "dbv_b", "down"], check=True)
            time.sleep(down_s)
            subprocess.run([*ns_b, "ip", "link", "set", "dbv_b", "up"], check=True)
            flapped += 1
            time.sleep(up_s)
        out, err = proc.communicate(timeout=900)
        seconds = time.monotonic() - t0
    finally:
        if agent is not None:
            _try(lambda: stop_agent(agent))
        teardown_namespaces()
    import re

    sent = re.search(r"upload: ([0-9.]+) MiB of ([0-9.]+) MiB sent", out)
    blob = work / "agent" / "store" / "blobs" / sha_file(archive).split(":")[1]
    ok = proc.returncode == 0 and sent is not None and blob.is_file() and "verify:" in out
    resent = max(0, int(round((float(sent.group(1)) - size / MB) * MB))) if sent else -1  # to 0.05 MiB
    retry_lines = [line for line in err.splitlines() if line.startswith("retrying")]
    cut = sum(1 for line in retry_lines if line.startswith("retrying: upload of"))  # an Upload stream broken
    queries = len(retry_lines) - cut  # QueryUpload (or another call) refused while the link was still down
    per = resent / max(1, cut)
    result = (f"{'completed by itself' if ok else f'FAILED (exit {proc.returncode}): {err.strip()[-300:]}'} in "
              f"{seconds:.0f} s; {size} byte bundle; link down at {', '.join(f'{b / MB:.1f}' for b in at)} MiB "
              f"committed; {cut} upload streams cut (each resumed at the committed offset; {queries} more retries "
              f"of calls while the link was down); {resent / MB:.1f} MiB re-sent in all (to 0.05 MiB), "
              f"{per / MB:.2f} MiB per interruption (one chunk is 1 MiB)")
    for line in retry_lines:
        if line.startswith("retrying: upload of"):
            print("  " + line[:300], file=sys.stderr)
    return row(scenario, f"1 push, {flapped} flaps", result, command, ok and flapped == flaps and per <= MB)


# ---------------------------------------------------------------- overload

def _rss_peak(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def overload(calls: int, uploads_n: int, rng: random.Random, work: Path) -> list[dict[str, Any]]:
    agent = Agent(work / "store")
    rows = []
    try:
        channel = grpc.insecure_channel(agent.address)
        stub = agent_pb2_grpc.DeviceAgentStub(channel)
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(channel)
        stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=60)
        barrier = threading.Barrier(min(calls, 500))

        def one(n: int) -> tuple[str, float]:
            try:
                barrier.wait(30)
            except threading.BrokenBarrierError:
                pass
            t = time.monotonic()
            try:
                if n % 3 == 0:
                    stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=10)
                elif n % 3 == 1:
                    stub.QueryUpload(agent_pb2.QueryUploadRequest(digest="sha256:" + "0" * 64), timeout=10)
                else:
                    health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                return "OK", time.monotonic() - t
            except grpc.RpcError as exc:
                return exc.code().name, time.monotonic() - t

        with ThreadPoolExecutor(max_workers=min(calls, 500)) as pool:
            results = list(pool.map(one, range(calls)))
        channel.close()
        codes: dict[str, int] = {}
        for code, _ in results:
            codes[code] = codes.get(code, 0) + 1
        slowest = max(s for _, s in results)
        ok = set(codes) <= {"OK", "RESOURCE_EXHAUSTED"} and slowest < 10
        rows.append(row("concurrent small calls (GetInfo, QueryUpload, health), --max-concurrent-rpcs 16, no "
                        "client retries", f"{calls} calls at once",
                        ", ".join(f"{v} {k}" for k, v in sorted(codes.items())) + f"; slowest answer {slowest:.2f} s"
                        " (deadline 10 s)", f"faults.py --only overload --calls {calls}", ok))

        files = []
        for i in range(uploads_n):
            path = work / f"u{i}.bin"
            path.write_bytes(random_bytes(rng, 8 * MB))
            files.append(path)
        rss_before = _rss_peak(agent.proc.pid)

        def up(path: Path) -> Any:
            with agent.client(retry_for=120) as client:
                return _try(lambda: client.upload(path))

        t = time.monotonic()
        with ThreadPoolExecutor(max_workers=uploads_n) as pool:
            summaries = list(pool.map(up, files))
        wall = time.monotonic() - t
        good = sum(1 for s, p in zip(summaries, files) if not isinstance(s, Exception) and s.digest == sha_file(p))
        retried = sum(s.retries for s in summaries if not isinstance(s, Exception))
        peak = _rss_peak(agent.proc.pid)
        rows.append(row("concurrent 8 MiB uploads with retrying clients (excess refused, retried)",
                        f"{uploads_n} uploads at once",
                        f"{good}/{uploads_n} complete with the right digest in {wall:.1f} s ({retried} retries); agent "
                        f"peak RSS {peak / MB:.0f} MiB (before: {rss_before / MB:.0f} MiB)",
                        f"faults.py --only overload --concurrent-uploads {uploads_n}", good == uploads_n))
    finally:
        agent.stop()
    return rows


# ---------------------------------------------------------------- the suite's own fault tests

def suite(name: str, target: list[str], what: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *target],
                          capture_output=True, text=True, cwd=str(REPO))
    last = (proc.stdout.strip().splitlines() or ["?"])[-1]
    return row(what, "1 run each", last, f"pytest {' '.join(target)}", proc.returncode == 0 and "skipped" not in last)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uploads", type=int, default=200)
    ap.add_argument("--builds", type=int, default=50)
    ap.add_argument("--cli-runs", type=int, default=3)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--concurrent-uploads", type=int, default=64)
    ap.add_argument("--only", default="uploads,builds,restart,netem,overload,enospc,commit-order")
    ap.add_argument("--flaps", type=int, default=5, help="netem: times the link goes down and up")
    ap.add_argument("--down-s", type=float, default=3.0, help="netem: seconds the link stays down")
    ap.add_argument("--up-s", type=float, default=3.0, help="netem: seconds it stays up between")
    ap.add_argument("--size-mb", type=int, default=12, help="netem: about the bundle's size in MB")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the rows as one JSON object at the end")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    only = set(args.only.split(","))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="deploy-faults-") as tmp:
        work = Path(tmp)
        env_home = work / "home"
        for name in ("cache", "config", "data"):
            (env_home / name).mkdir(parents=True)
            os.environ[f"XDG_{name.upper()}_HOME"] = str(env_home / name)
        if "uploads" in only:
            (work / "uploads").mkdir()
            rows.append(uploads(args.uploads, rng, work / "uploads"))
        if "builds" in only:
            (work / "builds").mkdir()
            rows.append(builds(args.builds, rng, work / "builds"))
        if "restart" in only:
            (work / "restart").mkdir()
            rows += restarts(args.cli_runs, rng, work / "restart")
        if "netem" in only:
            (work / "netem").mkdir()
            rows.append(netem(args.flaps, args.down_s, args.up_s, args.size_mb, work / "netem"))
        if "overload" in only:
            (work / "overload").mkdir()
            rows += overload(args.calls, args.concurrent_uploads, rng, work / "overload")
    if "enospc" in only:
        rows.append(suite("enospc", ["tests/device_agent/test_faults.py", "tests/device_agent/test_build_faults.py",
                                     "-k", "disk"],
                          "ENOSPC on a 24 MiB tmpfs during an upload, a build's bundle unpacking and its cache "
                          "write"))
    if "commit-order" in only:
        rows.append(suite("commit-order", ["tests/device_agent/test_commit_order.py"],
                          "strace of blob publish, cache entry (built, imported), local agent state: fsync, "
                          "rename, fsync dir"))
    print()
    print("| scenario | count | result |")
    print("| --- | --- | --- |")
    for r in rows:
        print(f"| {r['scenario']} | {r['count']} | {r['result']} |")
    if args.json:
        print(json.dumps({"rows": rows}))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
