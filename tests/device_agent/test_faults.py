"""The agent under overload and on a full disk: real agents on loopback, a real tmpfs for the disk.

- Past `--max-concurrent-rpcs` calls are answered RESOURCE_EXHAUSTED at once (none waits without a deadline), and a
  client with a retry window gets through once the agent has room.
- ENOSPC during an upload and during a build's cache write: RESOURCE_EXHAUSTED naming the numbers, what was stored
  before is intact, the agent keeps serving, and the same work succeeds once space is freed.
"""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from protos import agent_pb2, agent_pb2_grpc
from tests.device_agent.onnx_models import conv_net, single_segment_bundle, wide_mlp

MB = 1024 * 1024
pytestmark = pytest.mark.timeout(120)


def client_for(agent, **kw) -> AgentClient:
    return AgentClient(Device(name="t", address=agent.address), **kw)


def stalled_upload(stub, size: int, release: threading.Event, seed: int) -> threading.Thread:
    """An Upload that sends its header and one chunk, then holds its call open until `release`."""
    data = np.random.default_rng(seed).integers(0, 256, size=size, dtype=np.uint8).tobytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def messages():
        yield agent_pb2.UploadRequest(header=agent_pb2.UploadHeader(digest=digest, size=size))
        yield agent_pb2.UploadRequest(chunk=data[:MB])
        release.wait(60)

    def run() -> None:
        try:
            stub.Upload(messages(), timeout=60)
        except grpc.RpcError:
            pass  # it ends short of its size when released: INVALID_ARGUMENT, as expected
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_calls_past_the_concurrency_bound_are_refused_at_once_and_a_retrying_client_gets_through(agent_factory):
    agent = agent_factory(env={"DEPLOY_AGENT_MAX_CONCURRENT_RPCS": "4"})
    channel = grpc.insecure_channel(agent.address)
    stub = agent_pb2_grpc.DeviceAgentStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=30)  # started and probed
    lines: list[str] = []
    retrying = client_for(agent, retry_for=20, on_retry=lines.append)
    retrying.info()  # this client has heard from the agent: from now on it retries
    release = threading.Event()
    holders = [stalled_upload(stub, 4 * MB, release, seed) for seed in range(4)]
    deadline = time.monotonic() + 20
    while len(list((agent.store_dir / "partial").iterdir())) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)

    def small_call(n: int) -> tuple[str, float]:
        started = time.monotonic()
        try:
            if n % 3 == 0:
                stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=5)
            elif n % 3 == 1:
                stub.QueryUpload(agent_pb2.QueryUploadRequest(digest="sha256:" + "0" * 64), timeout=5)
            else:
                health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
        return code, time.monotonic() - started

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            burst = list(pool.map(small_call, range(60)))
        assert {code for code, _ in burst} == {"RESOURCE_EXHAUSTED"}, burst
        assert max(seconds for _, seconds in burst) < 2.0, burst  # refused at once, no call waits

        with retrying as client:
            threading.Timer(1.0, release.set).start()
            started = time.monotonic()
            state = client.query_upload("sha256:" + "0" * 64)  # refused until the holders end, then answered
        assert not state.complete and 0.5 < time.monotonic() - started < 15
        assert lines and all("RESOURCE_EXHAUSTED" in line for line in lines), lines
        for t in holders:
            t.join(30)
        with ThreadPoolExecutor(max_workers=16) as pool:  # no slot leaked: small calls are answered again
            after = list(pool.map(small_call, range(12)))
        assert all(code in ("OK", "RESOURCE_EXHAUSTED") and seconds < 5 for code, seconds in after), after
        assert any(code == "OK" for code, _ in after), after
    finally:
        release.set()
        channel.close()


# ---------------------------------------------------------------- a full disk

@pytest.fixture
def small_disk(tmp_path: Path):
    """A 24 MiB tmpfs; skipped where mounting is not permitted (needs root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {proc.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(path: Path) -> int:
    """Write zeros into `path` until the file system is full; the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for block in (MB, 64 * 1024, 4096):
            chunk = bytes(block)
            while True:
                try:
                    written += f.write(chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    return written


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_disk_full_during_an_upload_is_resource_exhausted_keeps_what_was_stored_and_resumes_once_freed(
        agent_factory, small_disk, tmp_path):
    agent = agent_factory(store=small_disk / "store")
    first = tmp_path / "first.bin"
    first.write_bytes(np.random.default_rng(1).integers(0, 256, size=3 * MB, dtype=np.uint8).tobytes())
    with client_for(agent) as client:
        client.upload(first)
    data = np.random.default_rng(2).integers(0, 256, size=12 * MB, dtype=np.uint8).tobytes()
    digest = sha(data)
    go_on = threading.Event()

    def messages():
        yield agent_pb2.UploadRequest(header=agent_pb2.UploadHeader(digest=digest, size=len(data)))
        for i in range(0, len(data), MB):
            if i == 2 * MB:
                go_on.wait(30)  # the disk fills up here, behind the agent's back
            yield agent_pb2.UploadRequest(chunk=data[i:i + MB])

    stub = agent_pb2_grpc.DeviceAgentStub(grpc.insecure_channel(agent.address))
    result: dict = {}
    caller = threading.Thread(target=lambda: result.update(error=_upload_error(stub, messages())))
    caller.start()
    part = agent.store_dir / "partial" / digest.split(":")[1]
    deadline = time.monotonic() + 20
    while not (part.exists() and part.stat().st_size >= MB) and time.monotonic() < deadline:
        time.sleep(0.01)
    fill(small_disk / "filler")
    go_on.set()
    caller.join(60)

    error = result["error"]
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    text = error.details()
    assert "disk full" in text and f"of {len(data)} bytes" in text and "bytes free" in text, text
    with client_for(agent) as client:
        assert client.info().agent_version  # still serving
        assert client.query_upload(sha(first.read_bytes())).complete
        committed = client.query_upload(digest).committed_offset
        assert 0 < committed < len(data) and f"resumes at byte {committed}" in text
    assert sha((agent.store_dir / "blobs" / sha(first.read_bytes()).split(":")[1]).read_bytes()) == \
        sha(first.read_bytes())

    os.unlink(small_disk / "filler")
    again = tmp_path / "second.bin"
    again.write_bytes(data)
    with client_for(agent) as client:
        summary = client.upload(again)
    assert summary.digest == digest and summary.resumed_from == committed
    assert sha((agent.store_dir / "blobs" / digest.split(":")[1]).read_bytes()) == digest


def _upload_error(stub, messages):
    try:
        stub.Upload(messages, timeout=60)
    except grpc.RpcError as exc:
        return exc
    return None


def test_disk_full_during_a_builds_cache_write_is_resource_exhausted_and_the_cache_is_intact(
        agent_factory, small_disk, tmp_path):
    agent = agent_factory(store=small_disk / "store")
    small, _, _ = single_segment_bundle(tmp_path, conv_net(seed=41), "small")
    big, _, _ = single_segment_bundle(tmp_path, wide_mlp(512, 3, seed=42), "big")  # a 3 MB plan
    cache = small_disk / "engines"
    with client_for(agent) as client:
        small_digest = client.upload(small).digest
        list(client.build(small_digest))
        before = {e.key: e.digest for e in client.list_engines().engines}
        big_digest = client.upload(big).digest
        with pytest.raises(AgentError):  # unpacks the bundle, then refuses the backend: nothing built yet
            list(client.build(big_digest, agent_pb2.BuildOptions(backend="no-such-backend")))
        fill(small_disk / "filler")
        with pytest.raises(AgentError) as info:
            list(client.build(big_digest))
        err = info.value
        assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.answered, err
        assert "disk full writing engine" in err.message and "bytes free" in err.message, err.message
        assert list((cache / "tmp").iterdir()) == []  # nothing half-written left behind
        assert {e.key: e.digest for e in client.list_engines().engines} == before
        reply = client.run(agent_pb2.RunRequest(bundle_digest=small_digest, verify=True))  # still serving
        assert reply.max_rel_err < 1e-4

        os.unlink(small_disk / "filler")
        events = list(client.build(big_digest))
    summary = events[-1].summary
    assert summary.failed == 0 and summary.built == 1


# ---------------------------------------------------------------- waits with a deadline

def test_a_benchmark_whose_backend_hangs_ends_deadline_exceeded_instead_of_waiting_forever(monkeypatch):
    """The benchmark's RPC thread waits on its worker with a bound: a run that never returns is DEADLINE_EXCEEDED."""
    from types import SimpleNamespace

    from device_agent import bench_runner
    from device_agent.errors import DeadlineExceeded

    release = threading.Event()
    calls = []

    class HangingRunner:
        engine = object()  # no native_benchmark: the agent times the runs itself

        def run(self, feeds):
            calls.append(1)
            if len(calls) > 1:  # the first run (outside the timing) returns; the next one hangs
                release.wait(60)
            return {}

        def bench_call(self, feeds):  # ModelRunner's: one iteration is a whole run
            return lambda: self.run(feeds)

        def reset_timings(self):
            pass

        def timings(self):
            return {}

    monkeypatch.setattr(bench_runner, "BENCH_STALL_S", 0.5)
    monkeypatch.setattr(bench_runner, "BENCH_POLL_S", 0.05)
    bundle = SimpleNamespace(manifest=SimpleNamespace(inputs=[], options={}))
    request = agent_pb2.BenchmarkRequest(bundle_digest="sha256:" + "0" * 64, iterations=5, warmup=0)
    started = time.monotonic()
    try:
        with pytest.raises(DeadlineExceeded) as info:  # the events of the Benchmark RPC, from its runner on
            list(bench_runner.benchmark(bundle, HangingRunner(), {}, "fake", 1, request, lambda: True))
        assert time.monotonic() - started < 5
        assert "no progress" in str(info.value) and "hung" in str(info.value)
    finally:
        release.set()
