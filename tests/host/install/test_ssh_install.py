"""`deploy agent install/uninstall` against a real OpenSSH server on loopback; the device is this machine."""
from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from host.client.agent import AgentClient
from host.client.channel import make_channel
from host.client.errors import AgentError
from host import inventory as inv

DEVICE_PYTHON = "/usr/bin/python3"  # Debian's Python, without grpcio or numpy: everything arrives as wheels
DEPLOY = str(Path(sys.executable).parent / "deploy")


def deploy(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([DEPLOY, *args], capture_output=True, text=True, timeout=timeout)


def install_args(sshd, work: Path, port: int, known_hosts: Path, *extra: str) -> list:
    return ["agent", "install", sshd.target, "--identity", str(sshd.user_key), "--known-hosts", str(known_hosts),
            "--name", "bench-1", "--python", DEVICE_PYTHON, "--port", str(port), "--listen-host", "127.0.0.1",
            "--pki", str(work / "pki"), "--inventory", str(work / "deploy.toml"), "--json",
            "--agent-wheel", str(next((work / "wheel").glob("*.whl"))), *extra]


def snapshot(root: Path) -> dict:
    """mtime and mode of every file the installer manages (not logs, store or bytecode)."""
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_mode) for p in root.rglob("*")
            if p.is_file() and p.name not in {"agent.log", "agent.pid"} and "store" not in p.parts
            and "engines" not in p.parts and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from host.install.wheels import build_agent_wheel

    work = tmp_path_factory.mktemp("install")
    # Built once, as `install` does without --agent-wheel: the checkout may change while the tests run.
    build_agent_wheel(work / "wheel")
    port = sshd.free_port()
    proc = deploy(*install_args(sshd, work, port, sshd.known_hosts))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    yield {"work": work, "port": port, "report": report, "stderr": proc.stderr}
    deploy("agent", "uninstall", sshd.target, "--identity", str(sshd.user_key), "--known-hosts",
           str(sshd.known_hosts), "--name", "bench-1", "--inventory", str(work / "deploy.toml"), "--json")


def test_install_starts_an_agent_that_answers_health_and_info_over_mutual_tls(installed, sshd) -> None:
    device = inv.load(installed["work"] / "deploy.toml").devices["bench-1"]
    assert device.address == f"127.0.0.1:{installed['port']}"
    assert device.tls is not None and device.ssh == sshd.target
    channel = make_channel(device)
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
    channel.close()
    assert status == health_pb2.HealthCheckResponse.SERVING
    with AgentClient(device) as client:
        info = client.info()
    assert info.store_dir == str(sshd.home / ".deploy-agent" / "store")
    assert installed["report"]["manager"] == "nohup"  # no systemd in this container
    # the same agent refuses a plaintext client: it really runs with mutual TLS
    with grpc.insecure_channel(device.address) as plain, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=3)


def test_install_puts_credentials_on_the_device_with_mode_0600(installed, sshd) -> None:
    base = sshd.home / ".deploy-agent"
    assert stat.S_IMODE((base / "etc").stat().st_mode) == 0o700
    for name in ("agent.key", "agent.pem", "ca.pem"):
        assert stat.S_IMODE((base / "etc" / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((base / "agent.env").stat().st_mode) == 0o600


def test_second_install_is_a_no_op(installed, sshd) -> None:
    base = sshd.home / ".deploy-agent"
    inventory = installed["work"] / "deploy.toml"
    before, inv_before = snapshot(base), (inventory.stat().st_mtime_ns, inventory.read_text())
    pid = (base / "agent.pid").read_text()
    proc = deploy(*install_args(sshd, installed["work"], installed["port"], sshd.known_hosts))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["changed"] == []
    assert snapshot(base) == before
    assert (base / "agent.pid").read_text() == pid
    assert (inventory.stat().st_mtime_ns, inventory.read_text()) == inv_before


def test_switching_to_token_auth_replaces_certificates_and_then_the_token_is_required(installed, sshd) -> None:
    base = sshd.home / ".deploy-agent"
    work, port = installed["work"], installed["port"]
    proc = deploy(*install_args(sshd, work, port, sshd.known_hosts, "--auth", "token"))
    assert proc.returncode == 0, proc.stderr
    changed = json.loads(proc.stdout)["changed"]
    assert "packages" not in changed and "etc/token" in changed and "removed etc/agent.key" in changed
    assert stat.S_IMODE((base / "etc" / "token").stat().st_mode) == 0o600
    assert not (base / "etc" / "agent.key").exists()
    device = inv.load(work / "deploy.toml").devices["bench-1"]
    assert device.tls is None and device.token_file is not None
    assert stat.S_IMODE(device.token_file.stat().st_mode) == 0o600
    with AgentClient(device) as client:
        assert client.info().hostname
    with AgentClient(device.model_copy(update={"token_file": None})) as client, pytest.raises(AgentError) as err:
        client.info()
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    back = deploy(*install_args(sshd, work, port, sshd.known_hosts))  # and back to mutual TLS for the other tests
    assert back.returncode == 0, back.stderr
    assert not (base / "etc" / "token").exists()


def test_as_service_without_systemd_is_refused_with_a_clear_message(installed, sshd) -> None:
    proc = deploy(*install_args(sshd, installed["work"], installed["port"], sshd.known_hosts, "--as-service"))
    assert proc.returncode != 0
    assert "--as-service needs systemd" in proc.stderr and proc.stderr.count("\n") == 1


def test_systemd_unit_for_the_installed_agent_passes_systemd_analyze(installed, sshd, tmp_path: Path) -> None:
    from host.install import service

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    base = str(sshd.home / ".deploy-agent")
    (path, data, _mode), = [f for f in service.files("systemd", base, "root") if f[0].endswith(".service")]
    unit = tmp_path / Path(path).name
    unit.write_bytes(data)
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"ExecStart={base}/venv/bin/python -m device_agent" in data.decode()


def test_unknown_host_key_is_refused_and_not_recorded(installed, sshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    proc = deploy(*install_args(sshd, installed["work"], installed["port"], known_hosts))
    assert proc.returncode != 0
    assert "host key of [127.0.0.1]" in proc.stderr and "is unknown" in proc.stderr
    assert "--accept-new-host-key" in proc.stderr
    assert known_hosts.read_text() == ""


def test_changed_host_key_is_refused_even_with_accept_new(installed, sshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line(Path(str(sshd.other_key) + ".pub")))
    before = known_hosts.read_text()
    proc = deploy(*install_args(sshd, installed["work"], installed["port"], known_hosts, "--accept-new-host-key"))
    assert proc.returncode != 0
    assert "CHANGED" in proc.stderr and "ssh-keygen -R" in proc.stderr
    assert known_hosts.read_text() == before


def test_accept_new_host_key_records_it_and_says_so(installed, sshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    proc = deploy(*install_args(sshd, installed["work"], installed["port"], known_hosts, "--accept-new-host-key"))
    assert proc.returncode == 0, proc.stderr
    assert "added new host key" in proc.stderr and "SHA256:" in proc.stderr
    assert known_hosts.read_text() == sshd.known_hosts_line(Path(str(sshd.host_key) + ".pub"))
    assert json.loads(proc.stdout)["changed"] == []


def test_uninstall_stops_the_agent_and_removes_files_and_inventory_entry(installed, sshd) -> None:
    base = sshd.home / ".deploy-agent"
    inventory = installed["work"] / "deploy.toml"
    device = inv.load(inventory).devices["bench-1"]
    args = ["agent", "uninstall", sshd.target, "--identity", str(sshd.user_key), "--known-hosts",
            str(sshd.known_hosts), "--name", "bench-1", "--inventory", str(inventory), "--json"]
    proc = deploy(*args)
    assert proc.returncode == 0, proc.stderr
    assert not base.exists()
    assert "bench-1" not in inv.load(inventory).devices
    with AgentClient(device) as client, pytest.raises(Exception):
        client.info(timeout=3)
    again = deploy(*args)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changed"] == []
