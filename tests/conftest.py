"""Shared fixtures: real agent processes on loopback, the installed `deploy` entry point, isolated user dirs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import pytest

from device_agent.ready import wait_ready

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session", autouse=True)
def isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No test reads or writes the real user's config, cache or data (the local agent, the inventory)."""
    root = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "DEPLOY_INVENTORY")}
    for name in ("cache", "config", "data"):
        (root / name).mkdir()
        os.environ[f"XDG_{name.upper()}_HOME"] = str(root / name)
    os.environ.pop("DEPLOY_INVENTORY", None)
    yield root
    subprocess.run([sys.executable, "-c", "from host.client import local; local.stop()"], check=False)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@dataclass
class AgentHandle:
    """A real `deploy-agent` process; `address` is HOST:PORT on loopback."""

    store_dir: Path
    args: list[str]
    log_path: Path
    env: dict[str, str]
    python: str = sys.executable
    address: str = ""
    proc: Optional[subprocess.Popen] = None
    port: int = 0
    extra: dict = field(default_factory=dict)

    ready_timeout: float = 60

    def command(self, listen: str) -> list[str]:
        return [self.python, "-m", "device_agent", "--listen", listen, "--store", str(self.store_dir), *self.args]

    def start(self) -> "AgentHandle":
        cmd = self.command(f"127.0.0.1:{self.port}")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=self.env, cwd=str(REPO))
        log.close()
        address = wait_ready(self.proc, timeout=self.ready_timeout)
        if address is None:
            raise RuntimeError(f"{type(self).__name__} did not start (exit {self.proc.poll()}): "
                               f"{self.log()[-2000:]}")
        self.address = address
        self.port = int(self.address.rsplit(":", 1)[1])
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as a power cut or OOM kill would do."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> "AgentHandle":
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def agent_flags(**settings: object) -> list[str]:
    args: list[str] = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value not in (None, False):
            args += [flag, str(value)]
    return args


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator:
    """`agent_factory(**settings)` starts a real agent; every agent is stopped at the end of the test."""
    handles: list[AgentHandle] = []

    def make(python: Optional[str] = None, env: Optional[dict[str, str]] = None, **settings: object) -> AgentHandle:
        n = len(handles)
        root = tmp_path / f"agent{n}"
        root.mkdir()
        store = settings.pop("store", root / "store")
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONPATH", str(REPO))
        full_env.update(env or {})
        handle = AgentHandle(store_dir=Path(store), args=agent_flags(**settings), log_path=root / "agent.log",
                             env=full_env, python=python or sys.executable)
        handles.append(handle)
        return handle.start()

    yield make
    for handle in handles:
        handle.stop()


@pytest.fixture
def agent(agent_factory) -> AgentHandle:
    return agent_factory()


def deploy_bin() -> str:
    """The installed entry point, as a user would run it."""
    path = BIN / "deploy"
    if not path.exists():
        pytest.fail(f"{path} is missing: install the project (pip install -e .[host,dev])")
    return str(path)


@pytest.fixture
def deploy_path() -> str:
    return deploy_bin()


@pytest.fixture
def deploy():
    """Run the installed `deploy` entry point as a subprocess; returns CompletedProcess."""

    def run(*args: str, timeout: float = 300, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
        proc = subprocess.run([deploy_bin(), *args], capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError(f"deploy {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    return run


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """Start an in-process agent with the given settings on an ephemeral loopback port."""
    from device_agent.config import AgentSettings
    from device_agent.server import AgentServer

    started: list = []

    def start(**settings: object) -> "AgentServer":
        settings.setdefault("listen", "127.0.0.1:0")
        settings.setdefault("store", tmp_path / f"agent{len(started)}" / "store")
        server = AgentServer(AgentSettings(**settings))  # type: ignore[arg-type]
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(grace=0.1)


@dataclass
class RegistryHandle:
    """A real CNCF distribution registry (Debian's `docker-registry`) on loopback, storage in `root`.

    Optional parts of its config, each a real mode of the registry: basic auth (`htpasswd`, bcrypt entries),
    token auth (`token`: realm, service, issuer, rootcertbundle), TLS (`tls`: certificate and key files; `ca` is
    what the readiness check trusts), and pull-through cache of another registry (`proxy_remote`: its URL)."""

    root: Path
    port: int
    log_path: Path
    proc: Optional[subprocess.Popen] = None
    htpasswd: Optional[Path] = None
    token: Optional[dict] = None
    tls: Optional[tuple] = None  # (certificate, key)
    ca: Optional[Path] = None
    proxy_remote: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def blob_path(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def config(self) -> str:
        text = (f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {self.root}\nhttp:\n  addr: 127.0.0.1:{self.port}\n")
        if self.tls:
            text += f"  tls:\n    certificate: {self.tls[0]}\n    key: {self.tls[1]}\n"
        if self.htpasswd:
            text += f"auth:\n  htpasswd:\n    realm: test\n    path: {self.htpasswd}\n"
        elif self.token:
            text += "auth:\n  token:\n" + "".join(f"    {k}: {v}\n" for k, v in self.token.items())
        if self.proxy_remote:
            text += f"proxy:\n  remoteurl: {self.proxy_remote}\n"
        return text

    def start(self) -> "RegistryHandle":
        import socket
        import ssl
        import time
        import urllib.error
        import urllib.request

        config = self.root.parent / "registry.yml"
        config.write_text(self.config())
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
        log.close()
        context = ssl.create_default_context(cafile=str(self.ca)) if self.tls and self.ca else None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=context).close()
                return self
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and (self.htpasswd or self.token):
                    return self
                time.sleep(0.05)
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"registry did not start: {self.log_path.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator:
    """`registry_factory(**options)` starts one more registry process (options as RegistryHandle's); all stopped at
    the end. Skips when `docker-registry` is not installed (scripts/setup.sh installs it)."""
    import shutil

    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry; scripts/setup.sh does)")
    handles: list[RegistryHandle] = []

    def make(**options: object) -> RegistryHandle:
        root = tmp_path / f"registry{len(handles) or ''}"
        root.mkdir()
        handle = RegistryHandle(root / "data", free_port(), root / "registry.log", **options)  # type: ignore[arg-type]
        handles.append(handle)
        return handle.start()

    yield make
    for handle in handles:
        handle.stop()


@pytest.fixture
def registry(registry_factory) -> RegistryHandle:
    """A plain registry process for one test (http on loopback, no auth)."""
    return registry_factory()
