"""A real OpenSSH server (Debian's sshd) on a loopback port with throwaway host and user keys.

It runs as the test's user (root here) and gives the login session a temporary HOME, which is where the agent
gets installed.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@dataclass
class SshServer:
    port: int
    home: Path
    host_key: Path
    user_key: Path
    known_hosts: Path       # holds the server's real host key
    other_key: Path         # a host key the server does not have (to fake a changed key)
    proc: subprocess.Popen

    @staticmethod
    def free_port() -> int:
        return free_port()

    @property
    def target(self) -> str:
        return f"root@127.0.0.1:{self.port}"

    def known_hosts_line(self, pub: Path) -> str:
        return f"[127.0.0.1]:{self.port} " + " ".join(pub.read_text().split()[:2]) + "\n"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server is not installed (scripts/setup.sh installs it when run as root)")
    if not Path("/usr/bin/python3").exists():
        pytest.skip("the device side of these tests is Debian's /usr/bin/python3, which is missing")
    root = tmp_path_factory.mktemp("sshd")
    home = root / "home"
    home.mkdir()
    host_key = keygen(root / "host_key")
    user_key = keygen(root / "user_key")
    (root / "authorized_keys").write_text((root / "user_key.pub").read_text())
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {root}/authorized_keys\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"UsePAM no\nStrictModes no\nPidFile none\nSetEnv HOME={home}\nSubsystem sftp internal-sftp\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    log = open(root / "sshd.log", "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"sshd exited: {(root / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.05)
    server = SshServer(port, home, host_key, user_key, root / "known_hosts", keygen(root / "other_key"), proc)
    server.known_hosts.write_text(server.known_hosts_line(root / "host_key.pub"))
    yield server
    proc.terminate()
    proc.wait(10)
    log.close()
