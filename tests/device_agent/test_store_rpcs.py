"""Upload, resume, verify and deduplicate artifacts on a real agent over gRPC on loopback."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from protos import agent_pb2

MB = 1024 * 1024


def random_file(path: Path, size: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.write_bytes(rng.integers(0, 256, size=size, dtype=np.uint8).tobytes())
    return path


def sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def client_for(agent) -> AgentClient:
    return AgentClient(Device(name="t", address=agent.address))


def blobs(agent) -> list[str]:
    return sorted(p.name for p in (agent.store_dir / "blobs").iterdir())


def partials(agent) -> list[str]:
    return sorted(p.name for p in (agent.store_dir / "partial").iterdir())


def assert_serving(agent) -> None:
    with client_for(agent) as client:
        assert client.info().agent_version


def test_upload_of_100mb_file_is_stored_under_its_digest(agent, tmp_path):
    f = random_file(tmp_path / "big.bin", 100 * MB)
    with client_for(agent) as client:
        summary = client.upload(f)
    assert summary.digest == sha(f)
    assert summary.bytes_sent == 100 * MB and not summary.already_present
    stored = agent.store_dir / "blobs" / summary.digest.split(":")[1]
    assert stored.read_bytes() == f.read_bytes()
    assert partials(agent) == []


def test_second_upload_of_same_file_sends_no_payload(agent, tmp_path):
    f = random_file(tmp_path / "a.bin", 3 * MB)
    with client_for(agent) as client:
        client.upload(f)
        again = client.upload(f)
    assert again.already_present and again.bytes_sent == 0


def test_killed_upload_resumes_from_committed_offset_and_sends_only_the_rest(agent, tmp_path, deploy_path):
    f = random_file(tmp_path / "big.bin", 100 * MB, seed=1)
    digest = sha(f)
    part = agent.store_dir / "partial" / digest.split(":")[1]
    # A real `deploy upload` process, killed with SIGKILL part way through.
    proc = subprocess.Popen([deploy_path, "upload", str(f), "--device", agent.address, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (part.exists() and part.stat().st_size >= 10 * MB):
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with client_for(agent) as client:
        # The agent commits what arrived once it sees the stream end: wait until the offset stops moving.
        deadline = time.monotonic() + 20
        last = -1
        while time.monotonic() < deadline:
            state = client.query_upload(digest)
            if state.committed_offset > 0 and state.committed_offset == last:
                break
            last = state.committed_offset
            time.sleep(0.5)
        committed = state.committed_offset
        assert not state.complete and 0 < committed < 100 * MB
        summary = client.upload(f)
    assert summary.resumed_from == committed
    assert summary.bytes_sent == 100 * MB - committed
    assert summary.digest == digest and blobs(agent) == [digest.split(":")[1]]
    assert partials(agent) == []


def test_corrupted_chunk_is_refused_with_data_loss_and_leaves_nothing(agent, tmp_path):
    data = bytearray(random_file(tmp_path / "c.bin", 4 * MB, seed=2).read_bytes())
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    data[3 * MB + 17] ^= 0xFF  # one flipped byte in transit

    def messages():
        yield agent_pb2.UploadRequest(header=agent_pb2.UploadHeader(digest=digest, size=len(data)))
        for i in range(0, len(data), MB):
            yield agent_pb2.UploadRequest(chunk=bytes(data[i:i + MB]))

    with client_for(agent) as client:
        with pytest.raises(AgentError) as err:
            client._call(client.stub.Upload, messages(), timeout=30)
        assert err.value.code == grpc.StatusCode.DATA_LOSS
        assert not client.query_upload(digest).complete
        assert client.query_upload(digest).committed_offset == 0
    assert blobs(agent) == [] and partials(agent) == []
    assert_serving(agent)


def test_ten_concurrent_uploads_of_one_file_leave_one_copy_and_all_succeed(agent, tmp_path):
    f = random_file(tmp_path / "d.bin", 20 * MB, seed=3)
    results, errors = [], []

    def one() -> None:
        try:
            with client_for(agent) as client:
                results.append(client.upload(f))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(results) == 10 and {r.digest for r in results} == {sha(f)}
    assert blobs(agent) == [sha(f).split(":")[1]] and partials(agent) == []
    # Whoever came second found the artifact present and sent (or had stored) no second copy.
    assert sum(1 for r in results if not r.already_present) >= 1


def test_upload_over_the_agent_limit_is_refused_with_resource_exhausted(agent_factory, tmp_path):
    agent = agent_factory(max_upload_bytes=1 * MB)
    f = random_file(tmp_path / "e.bin", 2 * MB)
    with client_for(agent) as client:
        with pytest.raises(AgentError) as err:
            client.upload(f)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "upload limit" in err.value.message
    assert blobs(agent) == [] and partials(agent) == []
    assert_serving(agent)


def test_upload_larger_than_free_disk_is_refused_with_resource_exhausted(agent_factory):
    agent = agent_factory(max_upload_bytes=2 ** 62)
    digest = "sha256:" + "ab" * 32

    def messages():
        yield agent_pb2.UploadRequest(header=agent_pb2.UploadHeader(digest=digest, size=2 ** 60))
        yield agent_pb2.UploadRequest(chunk=b"x" * 10)

    with client_for(agent) as client:
        with pytest.raises(AgentError) as err:
            client._call(client.stub.Upload, messages(), timeout=30)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "free disk" in err.value.message
    assert_serving(agent)


def test_malformed_digest_is_refused_and_names_the_expected_form(agent):
    with client_for(agent) as client:
        with pytest.raises(AgentError) as err:
            client.query_upload("../../etc/passwd")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "sha256:" in err.value.message


def test_upload_json_output_reports_digest_size_bytes_and_seconds(agent, tmp_path, deploy):
    f = random_file(tmp_path / "f.bin", 2 * MB, seed=5)
    proc = deploy("upload", str(f), "--device", agent.address, "--json", check=True)
    data = json.loads(proc.stdout)
    assert data["digest"] == sha(f) and data["size"] == 2 * MB and data["bytes_sent"] == 2 * MB
    assert data["seconds"] >= 0
    again = json.loads(deploy("upload", str(f), "--device", agent.address, "--json", check=True).stdout)
    assert again["bytes_sent"] == 0 and again["already_present"] is True
