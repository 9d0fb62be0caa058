"""SSH to a device with paramiko: host keys checked against known_hosts, commands, and file transfer.

A host key that is unknown is refused unless the user says `--accept-new-host-key` (then it is appended to
known_hosts and its fingerprint printed); a key that differs from the recorded one is always refused.
"""
from __future__ import annotations

import base64
import hashlib
import posixpath
import re
import shlex
import socket
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from device_agent.errors import InvalidInput, PreconditionFailed, Unauthenticated, Unavailable

_TARGET_RE = re.compile(r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
                        r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+))(?::(?P<port>\d{1,5}))?$")
MAX_OUTPUT_BYTES = 4 * 1024 * 1024


class HostKeyError(Unauthenticated):
    """The device's SSH host key is unknown or changed: we may not be talking to the device we think."""


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str
    port: int = 22

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" + ("" if self.port == 22 else f":{self.port}")


def parse_target(spec: str, default_user: Optional[str] = None) -> SshTarget:
    m = _TARGET_RE.match(spec.strip())
    if not m:
        raise InvalidInput(f"bad SSH target {spec!r}: use user@host[:port]")
    user = m.group("user") or default_user
    if not user:
        raise InvalidInput(f"SSH target {spec!r} names no user: use user@host[:port]")
    port = int(m.group("port") or 22)
    if not 0 < port < 65536:
        raise InvalidInput(f"SSH port {port} is out of range")
    return SshTarget(user, m.group("v6") or m.group("host"), port)


def fingerprint(key) -> str:  # noqa: ANN001 - a paramiko PKey
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


@dataclass
class CommandResult:
    status: int
    stdout: str
    stderr: str


class Remote:
    """One SSH connection: run commands, move files (SFTP), all paths absolute on the device."""

    def __init__(self, client, target: SshTarget) -> None:  # noqa: ANN001 - paramiko.SSHClient
        self.client = client
        self.target = target
        self._sftp = None

    @property
    def sftp(self):  # noqa: ANN201
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()

    def __enter__(self) -> "Remote":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, command: str, *, check: bool = True, timeout: float = 300.0) -> CommandResult:
        """Run COMMAND through the login user's shell; with CHECK, a non-zero status raises with stderr's last line."""
        _stdin, stdout, stderr = self.client.exec_command(command, timeout=timeout)
        out = stdout.read(MAX_OUTPUT_BYTES).decode("utf-8", "replace")
        err = stderr.read(MAX_OUTPUT_BYTES).decode("utf-8", "replace")
        status = stdout.channel.recv_exit_status()
        if check and status != 0:
            last = (err.strip().splitlines() or out.strip().splitlines() or ["no output"])[-1]
            raise PreconditionFailed(f"on {self.target}: `{command.split()[0]} ...` failed (exit {status}): {last}")
        return CommandResult(status, out, err)

    def exists(self, path: str) -> bool:
        try:
            self.sftp.stat(path)
            return True
        except FileNotFoundError:
            return False

    def read_bytes(self, path: str, limit: int = MAX_OUTPUT_BYTES) -> Optional[bytes]:
        try:
            with self.sftp.open(path, "rb") as f:
                return f.read(limit)
        except FileNotFoundError:
            return None

    def makedirs(self, path: str, mode: int = 0o755) -> None:
        self.run(f"mkdir -p {shlex.quote(path)} && chmod {mode:o} {shlex.quote(path)}")

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write through a temporary name and rename; the mode is set before any byte is written."""
        tmp = f"{posixpath.dirname(path)}/.{posixpath.basename(path)}.tmp"
        with self.sftp.open(tmp, "wb") as f:
            f.chmod(mode)
            f.set_pipelined(True)
            f.write(data)
        self.sftp.posix_rename(tmp, path)

    def put_file(self, local: Path, path: str, mode: int = 0o644) -> None:
        tmp = f"{posixpath.dirname(path)}/.{posixpath.basename(path)}.tmp"
        self.sftp.put(str(local), tmp)
        self.sftp.chmod(tmp, mode)
        self.sftp.posix_rename(tmp, path)

    def mode(self, path: str) -> Optional[int]:
        try:
            return stat.S_IMODE(self.sftp.stat(path).st_mode or 0)
        except FileNotFoundError:
            return None


def _known_hosts_policy(known_hosts: Path, accept_new: bool, say: Callable[[str], None]):  # noqa: ANN202
    import paramiko

    class Policy(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key) -> None:  # noqa: ANN001
            fp = fingerprint(key)
            if not accept_new:
                raise HostKeyError(
                    f"host key of {hostname} is unknown ({key.get_name()} {fp}); check the fingerprint on the device "
                    f"(`ssh-keygen -lf /etc/ssh/ssh_host_{key.get_name().split('-')[-1]}_key.pub`) and re-run with "
                    f"--accept-new-host-key, or add it to {known_hosts}")
            client.get_host_keys().add(hostname, key.get_name(), key)
            known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with open(known_hosts, "a", encoding="ascii") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            say(f"added new host key of {hostname} to {known_hosts}: {key.get_name()} {fp}")

    return Policy()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def connect(target: SshTarget, *, known_hosts: Path, identity: Optional[Path] = None,
            accept_new_host_key: bool = False, timeout: float = 15.0,
            say: Callable[[str], None] = _stderr) -> Remote:
    """An authenticated connection whose host key matched known_hosts (or was explicitly accepted).

    SAY hears about an accepted new host key; by default on stderr even under --json, since it is never silent.
    """
    import paramiko

    client = paramiko.SSHClient()
    known_hosts = Path(known_hosts).expanduser()
    if known_hosts.exists():
        try:
            client.load_host_keys(str(known_hosts))
        except (OSError, paramiko.SSHException) as exc:
            raise InvalidInput(f"cannot read known_hosts {known_hosts}: {exc}") from None
    client.set_missing_host_key_policy(_known_hosts_policy(known_hosts, accept_new_host_key, say))
    if identity is not None and not Path(identity).expanduser().is_file():
        raise InvalidInput(f"identity file {identity} does not exist")
    try:
        client.connect(target.host, port=target.port, username=target.user,
                       key_filename=str(Path(identity).expanduser()) if identity else None,
                       look_for_keys=identity is None, allow_agent=identity is None, timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout)
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyError(
            f"host key of {target.known_hosts_name} CHANGED: known_hosts has {exc.expected_key.get_name()} "
            f"{fingerprint(exc.expected_key)}, the device offered {exc.key.get_name()} {fingerprint(exc.key)}; "
            f"someone may be intercepting the connection. If the device was reinstalled, remove the old key with "
            f"`ssh-keygen -R '{target.known_hosts_name}' -f {known_hosts}` and re-run") from None
    except HostKeyError:
        client.close()
        raise
    except paramiko.AuthenticationException as exc:
        client.close()
        raise Unauthenticated(f"SSH login as {target.user} on {target.host}:{target.port} refused ({exc}); "
                              "check --identity and the device's authorized_keys") from None
    except (OSError, socket.timeout, paramiko.SSHException) as exc:
        client.close()
        raise Unavailable(f"cannot reach {target} over SSH: {exc}") from None
    return Remote(client, target)
