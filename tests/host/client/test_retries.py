"""Client retries against a real agent that is SIGKILLed and restarted 2 s later on the same port and store.

`deploy upload` and `deploy push` complete by themselves (the upload resumes from the committed offset, the build is
asked again); with `--retry-for 0` the same cut fails at once with the one-line error; a device never reached is
reported at once whatever the window.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from protos import agent_pb2
from tests.conftest import deploy_bin
from tests.device_agent.onnx_models import single_segment_bundle, wide_mlp

MB = 1024 * 1024
pytestmark = pytest.mark.timeout(180)


def random_file(path: Path, size: int, seed: int = 0) -> Path:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size=size, dtype=np.uint8).tobytes())
    return path


def sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def kill_when_partial(agent, at_least: int, proc: subprocess.Popen, timeout: float = 60) -> int:
    """SIGKILL the agent once some upload's partial file holds `at_least` bytes; the bytes it had."""
    partial = agent.store_dir / "partial"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        sizes = [p.stat().st_size for p in partial.iterdir()] if partial.is_dir() else []
        if sizes and max(sizes) >= at_least:
            agent.kill()
            return max(sizes)
        time.sleep(0.001)
    raise AssertionError(f"no upload reached {at_least} bytes; exit {proc.poll()}: {agent.log()[-1000:]}")


def restart_after(agent, seconds: float) -> threading.Thread:
    def later() -> None:
        time.sleep(seconds)
        agent.start()  # same port, same store
    thread = threading.Thread(target=later, daemon=True)
    thread.start()
    return thread


def test_deploy_upload_completes_by_itself_when_the_agent_is_killed_mid_upload_and_back_2s_later(agent, tmp_path):
    f = random_file(tmp_path / "big.bin", 40 * MB, seed=1)
    proc = subprocess.Popen([deploy_bin(), "upload", str(f), "--device", agent.address], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    kill_when_partial(agent, 4 * MB, proc)
    restart_after(agent, 2.0).join()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.startswith(sha(f)), out
    retry_lines = [line for line in err.splitlines() if line.startswith("retrying: upload of big.bin: UNAVAILABLE")]
    assert retry_lines, err
    blob = agent.store_dir / "blobs" / sha(f).split(":")[1]
    assert sha(blob) == sha(f) and list((agent.store_dir / "partial").iterdir()) == []


def test_with_retry_for_0_the_same_cut_fails_at_once_with_one_line(agent, tmp_path):
    f = random_file(tmp_path / "big.bin", 40 * MB, seed=2)
    proc = subprocess.Popen([deploy_bin(), "upload", str(f), "--device", agent.address, "--retry-for", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_when_partial(agent, 4 * MB, proc)
    killed = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3 and out == "", (out, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err  # progress lines, then the one error
    assert errors[0].startswith("error: UNAVAILABLE") and "unreachable" in errors[0] and "retrying" not in err
    assert time.monotonic() - killed < 10


def test_deploy_push_completes_by_itself_when_the_agent_is_killed_mid_upload_and_back_2s_later(agent, tmp_path):
    archive, _, _ = single_segment_bundle(tmp_path, wide_mlp(1024, 4, seed=11), "big")  # a 16 MB bundle
    proc = subprocess.Popen([deploy_bin(), "push", str(archive), "--device", agent.address, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_when_partial(agent, 2 * MB, proc)
    restart_after(agent, 2.0).join()
    out, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err
    data = json.loads(out)
    with tarfile.open(archive) as tar:  # the bundle travels as its files (parts), named by its manifest's digest
        manifest = tar.extractfile("manifest.json").read()  # type: ignore[union-attr]
        files = sum(m.size for m in tar if m.isreg())
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    assert data["bundle_digest"] == digest and data["verify"]["passed"], data
    assert data["upload"]["bytes_total"] == files and data["upload"]["parts_sent"] == data["upload"]["parts_total"]
    assert sha(agent.store_dir / "blobs" / digest.split(":")[1]) == digest


def test_a_build_cut_off_by_an_agent_restart_is_asked_again_and_ends_with_its_summary(agent, tmp_path):
    archive, _, _ = single_segment_bundle(tmp_path, wide_mlp(1024, 4, seed=12), "big")
    lines: list[str] = []
    with AgentClient(Device(name="t", address=agent.address), retry_for=30, on_retry=lines.append) as client:
        digest = client.upload(archive).digest
        stages, summary = [], None
        for event in client.build(digest):
            if event.WhichOneof("event") == "segment":
                stages.append(event.segment.stage)
                if event.segment.stage == agent_pb2.SegmentEvent.CACHE_MISS and agent.alive() and not lines:
                    agent.kill()
                    restart_after(agent, 2.0)
            elif event.WhichOneof("event") == "summary":
                summary = event.summary
    assert summary is not None and summary.failed == 0 and summary.segments == 1, stages
    assert lines and lines[0].startswith("Build: UNAVAILABLE"), lines


def test_a_device_never_reached_is_reported_at_once_whatever_the_window(tmp_path):
    started = time.monotonic()
    with AgentClient(Device(name="t", address="127.0.0.1:1"), retry_for=60) as client:
        with pytest.raises(AgentError) as info:
            client.info()
    assert info.value.unreachable and time.monotonic() - started < 5
