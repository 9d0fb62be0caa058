"""`--metrics-listen`: real agents, real scrapes of /metrics parsed by prometheus_client's own parser."""
from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from host.client.agent import AgentClient
from host.inventory import Device
from host.security import certs
from protos import agent_pb2
from tests.host.cli.helpers import parse_json, tiny_conv_net

REPO = Path(__file__).resolve().parents[2]


def metrics_url(agent) -> str:
    for _ in range(50):
        found = re.search(r"metrics on (https?://\S+/metrics)", agent.log())
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"the agent did not say where its metrics are: {agent.log()[-2000:]}")


def scrape(url: str, context: "ssl.SSLContext | None" = None) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}."""
    with urllib.request.urlopen(url, timeout=10, context=context) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_push_moves_the_build_cache_and_upload_counters_by_the_right_amounts(agent_factory, deploy, tmp_path):
    agent = agent_factory(metrics_listen="127.0.0.1:0")
    url = metrics_url(agent)
    model = tiny_conv_net(tmp_path / "tiny.onnx")
    before = scrape(url)
    first = parse_json(deploy("push", str(model), "--device", agent.address, "--json"))
    after = scrape(url)
    built = [s for s in first["build"]["segments"] if s["cache"] == "miss"]
    backend = first["build"]["backend"]
    assert len(built) == 1 and first["upload"]["bytes_sent"] > 0

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("deploy_agent_builds_total", backend=backend, result="built") == 1
    assert moved("deploy_agent_engine_cache_misses_total", backend=backend) == 1
    assert moved("deploy_agent_engine_cache_hits_total", backend=backend) == 0
    assert moved("deploy_agent_build_duration_seconds_count", backend=backend) == 1
    assert moved("deploy_agent_upload_received_bytes_total") == first["upload"]["bytes_sent"]
    assert moved("deploy_agent_uploads_total", result="ok") == first["upload"]["parts_sent"] > 1  # one per part
    assert moved("deploy_agent_rpcs_total", method="Build", code="OK") == 1
    assert value(after, "deploy_agent_engine_cache_entries") == 1
    assert value(after, "deploy_agent_engine_cache_bytes") == built[0]["engine_bytes"]
    assert value(after, "deploy_agent_store_free_bytes") > 0
    assert value(after, "process_resident_memory_bytes") > 10 * 2**20
    info = [k for k in after if k[0] == "deploy_agent_device_info"]
    assert len(info) == 1 and dict(info[0][1])["arch"] and dict(info[0][1])["agent_version"]

    second = parse_json(deploy("push", str(model), "--device", agent.address, "--bench", "-n", "5", "--json"))
    again = scrape(url)
    assert second["upload"]["already_present"] and second["build"]["cache_hits"] == 1
    assert value(again, "deploy_agent_engine_cache_hits_total", backend=backend) - \
        value(after, "deploy_agent_engine_cache_hits_total", backend=backend) == 1
    assert value(again, "deploy_agent_builds_total", backend=backend, result="built") == \
        value(after, "deploy_agent_builds_total", backend=backend, result="built"), "a cache hit builds nothing"
    assert value(again, "deploy_agent_upload_received_bytes_total") == \
        value(after, "deploy_agent_upload_received_bytes_total"), "a bundle the agent has costs no payload"
    p50 = value(again, "deploy_agent_benchmark_latency_seconds", stat="p50")
    assert p50 == pytest.approx(second["bench"]["p50_ms"] / 1000.0, rel=1e-6)


def test_a_cut_upload_counts_one_failure_and_its_resume(agent_factory, tmp_path):
    agent = agent_factory(metrics_listen="127.0.0.1:0")
    url = metrics_url(agent)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(3 * 2**20))
    import hashlib

    digest = "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()

    release = threading.Event()

    def cut() -> object:
        yield agent_pb2.UploadRequest(header=agent_pb2.UploadHeader(digest=digest, size=blob.stat().st_size))
        yield agent_pb2.UploadRequest(chunk=blob.read_bytes()[: 2**20])
        release.wait(30)  # the link goes quiet; the call is cancelled below

    part = agent.store_dir / "partial" / digest.split(":")[1]
    with AgentClient(Device(name="a", address=agent.address)) as client:
        call = client.stub.Upload.future(cut(), timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (part.exists() and part.stat().st_size >= 2**20):
            time.sleep(0.02)
        call.cancel()
        release.set()
        for _ in range(200):  # the agent commits what arrived once it sees the stream end
            if client.query_upload(digest).committed_offset == 2**20:
                break
            time.sleep(0.05)
        summary = client.upload(blob, digest=digest)
    assert summary.resumed_from == 2**20
    samples = scrape(url)
    assert value(samples, "deploy_agent_upload_resumes_total") == 1
    assert value(samples, "deploy_agent_upload_failures_total", code="CANCELLED") == 1
    assert value(samples, "deploy_agent_uploads_total", result="ok") == 1
    assert value(samples, "deploy_agent_upload_received_bytes_total") == 3 * 2**20


def _agent(*args: str, tmp_path: Path, python_prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *python_prefix, "--listen", "127.0.0.1:0", "--store", str(tmp_path / "store"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=str(REPO),
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_the_metrics_port_refuses_beyond_loopback_without_tls(tmp_path):
    proc = _agent("--metrics-listen", "0.0.0.0:0", tmp_path=tmp_path, python_prefix=("-m", "device_agent"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "deploy-agent: error: refusing to serve metrics on 0.0.0.0:0 without TLS; pass --tls-cert and --tls-key")


def test_metrics_beyond_loopback_are_https_with_client_certificates_under_mutual_tls(agent_factory, tmp_path):
    made = certs.init(tmp_path / "pki", [certs.DeviceNames("board", ["127.0.0.1:7311"])])
    ca = tmp_path / "pki" / certs.CA_CERT
    agent = agent_factory(metrics_listen="0.0.0.0:0", tls_cert=made["board"].cert, tls_key=made["board"].key,
                          tls_ca=ca)
    url = metrics_url(agent)
    assert url.startswith("https://0.0.0.0:")
    local = url.replace("0.0.0.0", "localhost")  # a name the agent's certificate covers, checked below
    context = ssl.create_default_context(cafile=str(ca))
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        scrape(local, context)  # no client certificate: refused in the handshake
    context.load_cert_chain(str(made["client"].cert), str(made["client"].key))
    assert value(scrape(local, context), "deploy_agent_store_free_bytes") > 0
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        scrape(local.replace("https://", "http://"))


def test_metrics_without_prometheus_client_installed_is_one_line_saying_what_to_install(tmp_path):
    blocked = ("-c", "import sys; sys.modules['prometheus_client'] = None; from device_agent.__main__ import main; "
                     "sys.exit(main(sys.argv[1:]))")  # as if the package were not installed
    proc = _agent("--metrics-listen", "0", tmp_path=tmp_path, python_prefix=blocked)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "deploy-agent: error: --metrics-listen needs prometheus_client; install it with `pip install "
        "prometheus_client` (or the agent extra: `pip install 'jetson-deploy[agent]'`), or leave out --metrics-listen"]


def test_an_agent_without_metrics_listen_serves_no_metrics_port(agent):
    assert "metrics on" not in agent.log()
    with AgentClient(Device(name="a", address=agent.address)) as client:
        assert client.info().hostname


def test_a_bad_or_busy_metrics_address_is_one_line_exit_2(tmp_path):
    bad = _agent("--metrics-listen", "abc", tmp_path=tmp_path, python_prefix=("-m", "device_agent"))
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "deploy-agent: error: --metrics-listen 'abc': give HOST:PORT or PORT (e.g. 127.0.0.1:9311)")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        busy = _agent("--metrics-listen", str(port), tmp_path=tmp_path, python_prefix=("-m", "device_agent"))
    assert busy.returncode == 2
    assert busy.stderr.strip().splitlines()[-1].startswith(f"deploy-agent: error: cannot serve metrics on "
                                                           f"127.0.0.1:{port}: ")


# ---------------------------------------------------------------- models: the active version, activations, rollbacks
def last_metrics_url(agent, after: int) -> str:
    """The metrics URL the agent logged after byte `after` of its log (a restarted agent appends to it)."""
    for _ in range(100):
        found = re.findall(r"metrics on (https?://\S+/metrics)", agent.log()[after:])
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError(f"the agent did not say where its metrics are: {agent.log()[-2000:]}")


def labelled(samples: dict, metric: str, **labels: str) -> float:
    """As `value`, for labels that clash with its parameters (a model's `name`)."""
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


class HealthScript:
    """A health command the test steers with files: `fail` makes it exit 3, `hang` makes it sleep (its pid kept)."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        d.mkdir()
        script = d / "health.sh"
        script.write_text(f'[ -e {d}/hang ] && {{ echo $$ > {d}/hang.pid; exec sleep 60; }}\n'
                          f'[ -e {d}/fail ] && {{ echo unhealthy; exit 3; }}\nexit 0\n')
        self.cmd = f"sh {script}"

    def set(self, mode: str) -> None:
        for m in ("fail", "hang"):
            (self.dir / m).unlink(missing_ok=True)
        if mode:
            (self.dir / mode).write_text("")

    def end_hang(self) -> None:
        pid_file = self.dir / "hang.pid"
        if pid_file.exists() and pid_file.read_text().strip():
            try:
                os.kill(int(pid_file.read_text()), 9)
            except ProcessLookupError:
                pass


def test_model_activations_and_rollbacks_are_counted_by_result_and_reason_and_the_active_version_is_a_gauge(
        agent_factory, tmp_path):
    from tests.device_agent.onnx_models import conv_net, single_segment_bundle

    health = HealthScript(tmp_path / "health")
    agent = agent_factory(backend="onnxruntime", metrics_listen="127.0.0.1:0", health_cmd=health.cmd,
                          health_timeout_s=60)
    url = metrics_url(agent)
    client = AgentClient(Device(name="a", address=agent.address))
    versions = []
    for seed in (1, 2):
        archive, _feeds, _want = single_segment_bundle(tmp_path / f"b{seed}", conv_net(seed=seed), f"det{seed}")
        digest = client.upload(archive).digest
        for _ in client.build(digest):
            pass
        versions.append(client.register_version(agent_pb2.RegisterVersionRequest(
            name="det", bundle_digest=digest, tolerance=1e-3)).version.version)
    unverified = client.register_version(agent_pb2.RegisterVersionRequest(
        name="det", bundle_digest=digest, skip_verify=True)).version.version
    assert versions == [1, 2] and unverified == 3
    samples = scrape(url)
    assert samples[("deploy_agent_model_active_version", (("name", "det"),))] == 0, "recorded, none active yet"

    def counts() -> dict:
        s = scrape(url)
        act = {r: labelled(s, "deploy_agent_model_activations_total", name="det", result=r)
               for r in ("ok", "refused", "health_failed")}
        back = {r: labelled(s, "deploy_agent_model_rollbacks_total", name="det", reason=r)
                for r in ("request", "health", "restart", "deactivate")}
        return {"active": labelled(s, "deploy_agent_model_active_version", name="det"), **act,
                **{f"back_{r}": n for r, n in back.items()}}

    zero = dict(active=0, ok=0, refused=0, health_failed=0, back_request=0, back_health=0, back_restart=0,
                back_deactivate=0)
    client.activate("det", 1)
    assert counts() == dict(zero, active=1, ok=1)
    client.activate("det", 1)  # already active: no switch, nothing counted
    assert counts() == dict(zero, active=1, ok=1)
    with pytest.raises(Exception, match="cannot be activated"):
        client.activate("det", 3)  # the gate: not verified
    assert counts() == dict(zero, active=1, ok=1, refused=1)
    health.set("fail")
    with pytest.raises(Exception, match="health check"):
        client.activate("det", 2)
    assert counts() == dict(zero, active=1, ok=1, refused=1, health_failed=1, back_health=1)
    health.set("")
    client.activate("det", 2)
    client.rollback("det")
    assert counts() == dict(zero, active=1, ok=2, refused=1, health_failed=1, back_health=1, back_request=1)
    client.deactivate("det")
    assert counts() == dict(zero, active=0, ok=2, refused=1, health_failed=1, back_health=1, back_request=1,
                            back_deactivate=1)

    # killed during version 2's health check: the restarted agent rolls the pending switch back and counts it
    client.activate("det", 1)
    health.set("hang")
    call = client.stub.Activate.future(agent_pb2.ActivateRequest(name="det", version=2), timeout=60)
    try:
        for _ in range(300):
            if (health.dir / "hang.pid").exists():
                break
            time.sleep(0.1)
        assert (health.dir / "hang.pid").exists(), agent.log()[-2000:]
        agent.kill()
    finally:
        health.end_hang()
        client.close()
    try:
        call.result()
    except Exception:  # noqa: BLE001 - the agent died under it
        pass
    health.set("")
    logged = len(agent.log())
    agent.start()
    url = last_metrics_url(agent, logged)
    assert counts() == dict(zero, active=1, back_restart=1), "a new process: counters from 0, the restart counted"
