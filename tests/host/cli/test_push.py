"""`deploy push` end to end through the installed entry point, against real agents on loopback."""
from __future__ import annotations

import os
import subprocess
import time

import numpy as np

from tests.conftest import deploy_bin
from tests.host.cli.helpers import interrupt_after, parse_json


def test_push_compiles_uploads_builds_and_verifies_then_second_push_uploads_nothing_and_hits_every_cache(
        agent_factory, deploy, tiny_model):
    agent = agent_factory()
    first = parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--json"))
    assert first["bundle_digest"].startswith("sha256:")
    assert first["upload"]["bytes_sent"] == first["upload"]["size"] > 0
    assert first["upload"]["seconds"] >= 0
    assert first["build"]["segments"], "a bundle has at least one segment"
    for seg in first["build"]["segments"]:
        assert seg["id"] and seg["cache"] == "miss" and seg["build_s"] > 0
    assert first["verify"]["max_rel_err"] is not None and first["verify"]["max_rel_err"] < 1e-4
    assert first["target"]["backend"] == "onnxruntime"  # no TensorRT on this machine
    assert first["bench"] is None

    second = parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--json"))
    assert second["bundle_digest"] == first["bundle_digest"]
    assert second["compile"]["cache"] == "hit"
    assert second["upload"]["bytes_sent"] == 0 and second["upload"]["already_present"] is True
    assert [s["cache"] for s in second["build"]["segments"]] == ["hit"] * len(first["build"]["segments"])
    assert second["verify"]["max_rel_err"] < 1e-4


def test_push_to_a_fresh_agent_reuses_the_host_compile_cache_but_uploads_and_builds(agent_factory, deploy,
                                                                                     tiny_model):
    a, b = agent_factory(), agent_factory()
    parse_json(deploy("push", str(tiny_model), "--device", a.address, "--json"))
    on_b = parse_json(deploy("push", str(tiny_model), "--device", b.address, "--json"))
    assert on_b["compile"]["cache"] == "hit"
    assert on_b["upload"]["bytes_sent"] == on_b["upload"]["size"] > 0
    assert all(s["cache"] == "miss" for s in on_b["build"]["segments"])


def test_push_with_bench_reports_ordered_latency_percentiles_and_throughput(agent_factory, deploy, tiny_model):
    agent = agent_factory()
    data = parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--bench", "-n", "30", "--json"))
    bench = data["bench"]
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput"):
        assert bench[key] > 0, key
    assert bench["min_ms"] <= bench["p50_ms"] <= bench["p90_ms"] <= bench["p99_ms"] <= bench["max_ms"]
    assert bench["iterations"] == 30
    assert set(data["timings"]) >= {"compile", "upload", "build", "verify", "bench", "total"}


def test_push_without_a_terminal_prints_plain_progress_per_segment_and_a_summary(agent_factory, deploy, tiny_model):
    agent = agent_factory()
    proc = deploy("push", str(tiny_model), "--device", agent.address, "--force-rebuild")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stderr, "no terminal: no escape sequences"
    assert "build [1/1] trt_0: cache miss, building" in proc.stderr
    assert "build [1/1] trt_0: built in" in proc.stderr
    assert "upload: done in" in proc.stderr
    assert "verify: max relative error" in proc.stdout
    assert "trt_0" in proc.stdout and "onnxruntime" in proc.stdout


def test_push_of_a_bundle_archive_from_the_host_cache_skips_compilation(agent_factory, deploy, tiny_model):
    agent = agent_factory()
    first = parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--json"))
    archive = first["compile"]["archive"]
    again = parse_json(deploy("push", archive, "--device", agent.address, "--json"))
    assert again["compile"]["cache"] == "none"
    assert again["bundle_digest"] == first["bundle_digest"]
    bundle_dir = first["compile"]["bundle_dir"]
    from_dir = parse_json(deploy("push", bundle_dir, "--device", agent.address, "--json"))
    assert from_dir["bundle_digest"] == first["bundle_digest"], "a bundle dir archives to the same bytes"


def test_sigint_during_a_build_exits_130_and_leaves_the_agent_serving_and_its_cache_sound(agent_factory, deploy,
                                                                                         resnet18):
    agent = agent_factory()
    # compile first (host cache), so the interrupted run spends its time in the remote build
    parse_json(deploy("push", str(resnet18), "--device", agent.address, "--no-verify", "--json"))
    rc, seen, rest, seconds = interrupt_after([deploy_bin(), "push", str(resnet18), "--device", agent.address,
                                               "--force-rebuild"], "cache miss, building")
    assert rc == 130, seen + rest
    assert seconds < 10
    assert "error: interrupted" in rest
    assert "Traceback" not in rest
    assert agent.alive()
    again = parse_json(deploy("push", str(resnet18), "--device", agent.address, "--json"))
    assert again["verify"]["max_rel_err"] < 1e-4, "the cache holds no half-built engine"


def test_push_of_a_deploy_compile_output_directory_pushes_that_bundle(agent_factory, deploy, tiny_model, tmp_path):
    agent = agent_factory()
    compiled = parse_json(deploy("compile", str(tiny_model), "-o", str(tmp_path / "out"), "--json"))
    pushed = parse_json(deploy("push", str(tmp_path / "out"), "--device", agent.address, "--json"))
    assert pushed["bundle_digest"] == compiled["digest"]
    assert pushed["compile"]["cache"] == "none"
    assert pushed["verify"]["max_rel_err"] < 1e-4


def test_push_resumes_a_cut_off_upload_and_sends_only_the_rest(agent_factory, deploy, resnet18):
    """A push cut off inside its largest part (a weight tensor) resumes that part at the committed offset."""
    from device_agent.bundle import Bundle
    from host.client.agent import AgentClient
    from host.inventory import Device
    from protos import agent_pb2

    a, b = agent_factory(), agent_factory()
    bundle_dir = parse_json(deploy("push", str(resnet18), "--device", a.address, "--no-verify",
                                   "--json"))["compile"]["bundle_dir"]
    bundle = Bundle.open(bundle_dir)
    largest = max(bundle.manifest.file_list, key=lambda e: e.size)
    archive, digest, size = bundle.path_of(largest.path), largest.digest, largest.size
    chunk = 1024 * 1024

    partial = b.store_dir / "partial" / digest.split(":", 1)[1]

    def cut_off():  # header and three chunks; once the agent has written some, the sender dies
        yield agent_pb2.UploadRequest(header=agent_pb2.UploadHeader(digest=digest, size=size, offset=0, kind="bundle"))
        with open(archive, "rb") as f:
            for _ in range(3):
                yield agent_pb2.UploadRequest(chunk=f.read(chunk))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (partial.exists() and partial.stat().st_size > 0):
            time.sleep(0.01)
        raise ConnectionError("link lost")

    with AgentClient(Device(name="b", address=b.address)) as client:
        try:
            client.stub.Upload(cut_off(), timeout=30)
        except Exception:  # noqa: BLE001 - the cut is the point
            pass
        # the agent's writer may still be committing chunks that arrived before the cut: wait until the
        # offset is non-zero and has stood still for half a second
        deadline, committed, still_since = time.monotonic() + 10, -1, time.monotonic()
        while time.monotonic() < deadline:
            now = client.query_upload(digest).committed_offset
            if now != committed:
                committed, still_since = now, time.monotonic()
            elif committed > 0 and time.monotonic() - still_since >= 0.5:
                break
            time.sleep(0.05)
    assert 0 < committed < size
    pushed = parse_json(deploy("push", str(resnet18), "--device", b.address, "--no-verify", "--json"))
    up = pushed["upload"]
    assert up["resumed_from"] == committed and up["parts_sent"] == up["parts_total"]
    assert up["bytes_sent"] == up["bytes_total"] - committed
    assert pushed["bundle_digest"] == bundle.manifest_digest


def test_push_of_a_model_partly_beyond_the_target_tensorrt_runs_segments_and_tvm_remainder_and_verifies(
        agent_factory, deploy, transformer):
    agent = agent_factory()
    # TensorRT 6.0.1 cannot take erf (7.0.0), so part of the encoder stays in TVM
    data = parse_json(deploy("push", str(transformer), "--device", agent.address, "--trt-version", "6.0.1", "--json",
                             "--bench", "-n", "5", "--activate"))
    kinds = [p["kind"] for p in data["parts"]]
    assert "tvm" in kinds and kinds.count("tensorrt") == len(data["build"]["segments"]) >= 1
    assert data["target"]["trt_version"] == "6.0.1"
    assert data["verify"]["max_rel_err"] < 1e-4
    remainder = next(p for p in data["parts"] if p["kind"] == "tvm")
    assert remainder["runs_on"] == "tvm (llvm)"
    # the benchmark of a hybrid bundle keeps its inputs in the VM's tensors between iterations
    assert data["bench"]["iterations"] == 5 and 0 < data["bench"]["p50_ms"] <= data["bench"]["max_ms"]
    # the device runtime runs the same hybrid (segments and the TVM part) from the cache, as the agent did
    import onnxruntime as ort

    from device_agent.runtime import open_model

    with open_model("transformer", store=agent.store_dir) as m:
        rng = np.random.default_rng(3)
        feeds = {s.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in s.shape]).astype(s.dtype)
                 for s in m.inputs}
        got = m.run(feeds)
        assert m.version == 1 and [o.name for o in m.outputs] == list(got)
    want = ort.InferenceSession(str(transformer), providers=["CPUExecutionProvider"]).run(None, feeds)
    for out, ref in zip(got.values(), want):
        assert np.allclose(out, ref, rtol=1e-3, atol=1e-4)


def test_push_on_a_terminal_shows_live_phases_and_per_segment_status(agent_factory, deploy, tiny_model):
    import pty
    import threading

    agent = agent_factory()
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen([deploy_bin(), "push", str(tiny_model), "--device", agent.address, "--bench", "-n", "5",
                             "--force-rebuild"], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stdout = proc.communicate(timeout=120)[0].decode()
    reader.join(5)
    os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen
    assert "\x1b[" in screen, "a terminal gets the live view"
    for text in ("segment", "trt_0", "built", "verify", "bench"):
        assert text in screen, text
    assert "p50 ms" in stdout and "trt_0" in stdout  # the summary goes to stdout


def test_push_max_workspace_size_builds_with_that_workspace_the_advice_of_the_memory_guard(agent_factory, deploy,
                                                                                          tiny_model):
    agent = agent_factory()  # the agent's default workspace is 1 GiB
    parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--max-workspace-size", str(96 << 20),
                      "--json"))
    listing = parse_json(deploy("cache", "ls", "--device", agent.address, "--json"))
    assert sorted(int(e["attributes"]["workspace"]) for e in listing["engines"]) == [96 << 20], listing
    bad = deploy("push", str(tiny_model), "--device", agent.address, "--max-workspace-size", "0")
    assert bad.returncode == 2 and "--max-workspace-size" in bad.stderr, bad.stderr
    negative = deploy("push", str(tiny_model), "--device", agent.address, "--max-rel-err", "-1")
    assert negative.returncode == 2 and "--max-rel-err" in negative.stderr, negative.stderr


def test_push_sends_a_bundle_again_by_itself_when_the_devices_copy_rotted(agent_factory, deploy, tiny_model):
    from tests.device_agent.test_unpacked import flip, unpacked_segment

    agent = agent_factory()
    first = parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--json"))
    digest = first["bundle_digest"]
    agent.stop()
    flip(unpacked_segment(agent, digest))
    flip(agent.store_dir / "blobs" / digest.split(":", 1)[1], at=0.6)
    agent.start()

    again = deploy("push", str(tiny_model), "--device", agent.address, "--force-rebuild", "--json")

    assert again.returncode == 0, again.stderr
    data = parse_json(again)
    up = data["upload"]  # the damaged parts (manifest, segment graph) sent again after the agent dropped them
    assert 0 < up["bytes_sent"] < up["bytes_total"] and 0 < up["parts_sent"] < up["parts_total"], up
    assert data["build"]["built"] == 1 and data["verify"]["passed"]
