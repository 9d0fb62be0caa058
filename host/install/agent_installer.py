"""`deploy agent install/uninstall`: put an agent on a device over SSH, idempotently, and record it in the inventory.

Layout on the device (BASE = ~/.deploy-agent unless --remote-dir):
  BASE/venv        virtual environment made with --system-site-packages, so JetPack's apt-installed `tensorrt`
                   and `numpy` stay visible; packages are installed offline from BASE/wheels with pip run from its
                   own wheel (no ensurepip, no network needed on the device)
  BASE/etc         certificates, key and token (0600 in a 0700 directory)
  BASE/agent.env   the agent's settings as DEPLOY_AGENT_* variables (read by systemd and by the fallback script)
  BASE/store       the agent's store and engine cache
  BASE/install.json what was installed, so a second run can see that nothing changed
Service: a systemd unit (system-wide with --as-service, which needs root; else a user unit when the user's systemd
runs), or where systemd is absent a small script that starts the agent with setsid/nohup and keeps a pidfile.
"""
from __future__ import annotations

import json
import posixpath
import secrets
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from device_agent.errors import InvalidInput, PreconditionFailed, Unavailable
from device_agent.fileio import atomic_write
from host import inventory as inv
from host.security import certs

from . import service, wheels
from .ssh import Remote, SshTarget, connect

Say = Callable[[str], None]
STATE_NAME = "install.json"
MIN_PYTHON = (3, 9)
_PROBE = r"""
import json, platform, sys
inst = {}
try:
    import importlib.metadata as md
    for d in md.distributions():
        n = d.metadata.get("Name")
        if n:
            inst[n] = d.version
except Exception:
    pass
lib, ver = platform.libc_ver()
print(json.dumps({"version": list(sys.version_info[:2]), "machine": platform.machine(), "libc": lib,
                  "libc_version": ver, "installed": inst}))
"""
_IMPORT_CHECK = "import device_agent.server, grpc, grpc_health, grpc_reflection, numpy, google.protobuf"


@dataclass
class InstallRequest:
    target: SshTarget
    name: str
    known_hosts: Path
    pki_dir: Path
    token_dir: Path
    identity: Optional[Path] = None
    accept_new_host_key: bool = False
    python: str = "python3"
    as_service: bool = False
    port: int = 7311
    listen_host: str = "0.0.0.0"
    address_host: Optional[str] = None   # how the host reaches the agent; default: the SSH host
    auth: str = "tls"                    # "tls" (mutual TLS) or "token"
    wheels_dir: Optional[Path] = None    # prepared dependency wheels (air-gapped host)
    agent_wheel: Optional[Path] = None
    remote_dir: Optional[str] = None
    inventory_path: Optional[Path] = None
    profile: str = ""
    health_timeout_s: float = 60.0
    trust_root: Optional[Path] = None    # the fleet's TUF root (deploy keys): the agent verifies bundles with it

    @property
    def address(self) -> str:
        host = self.address_host or self.target.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


@dataclass
class InstallReport:
    device: str
    address: str
    remote_dir: str
    manager: str
    changed: list = field(default_factory=list)
    inventory: str = ""


def _connect(req: InstallRequest, say: Say) -> Remote:
    return connect(req.target, known_hosts=req.known_hosts, identity=req.identity,
                   accept_new_host_key=req.accept_new_host_key)


def _base_dir(remote: Remote, req: InstallRequest) -> str:
    if req.remote_dir:
        if not req.remote_dir.startswith("/"):
            raise InvalidInput(f"--remote-dir {req.remote_dir!r} must be an absolute path")
        return posixpath.normpath(req.remote_dir)
    home = remote.run('printf %s "$HOME"').stdout.strip()
    if not home.startswith("/"):
        raise PreconditionFailed(f"{req.target} reports no usable $HOME ({home!r}); pass --remote-dir")
    return posixpath.join(home, ".deploy-agent")


def probe_python(remote: Remote, python: str) -> wheels.RemotePython:
    result = remote.run(f"{shlex.quote(python)} -c {shlex.quote(_PROBE)}", check=False, timeout=60)
    if result.status != 0:
        raise PreconditionFailed(f"cannot run {python} on {remote.target} ({result.stderr.strip()[-200:]}); "
                                 "pass --python PATH to a Python >= 3.9")
    try:
        facts = json.loads(result.stdout.strip().splitlines()[-1])
        version = tuple(int(v) for v in facts["version"])
        glibc = (0, 0)
        if facts.get("libc") == "glibc" and facts.get("libc_version"):
            glibc = tuple(int(v) for v in facts["libc_version"].split(".")[:2])
        installed = {wheels.normalise(str(k)): str(v) for k, v in dict(facts.get("installed", {})).items()}
    except (ValueError, KeyError, IndexError, TypeError):
        raise PreconditionFailed(f"{python} on {remote.target} gave unexpected probe output") from None
    if version < MIN_PYTHON:
        raise PreconditionFailed(f"{python} on {remote.target} is Python {version[0]}.{version[1]}; the agent needs "
                                 ">= 3.9 (on JetPack 4 install python3.9 and pass --python /usr/bin/python3.9)")
    return wheels.RemotePython(version, str(facts["machine"]), glibc, installed)


def _read_state(remote: Remote, base: str) -> dict:
    raw = remote.read_bytes(f"{base}/{STATE_NAME}", limit=1024 * 1024)
    try:
        state = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def _credentials(req: InstallRequest) -> tuple:
    """Local credential files (made once, then reused) -> (files for the device, inventory fields)."""
    if req.auth == "tls":
        certs.init_ca(req.pki_dir)
        wanted = {certs.host_of(req.address), req.target.host}
        pair = certs.agent_paths(req.pki_dir, req.name)
        if not (pair.cert.exists() and wanted <= set(certs.sans_of(pair.cert))):
            pair = certs.issue_agent(req.pki_dir, req.name, sorted(wanted))
        client = certs.issue_client(req.pki_dir, force=False)
        files = {"agent.pem": pair.cert.read_bytes(), "agent.key": pair.key.read_bytes(),
                 "ca.pem": (req.pki_dir / certs.CA_CERT).read_bytes()}
        tls = inv.TlsFiles(ca=(req.pki_dir / certs.CA_CERT).resolve(), cert=client.cert.resolve(),
                           key=client.key.resolve())
        return files, {"tls": tls, "token_file": None}
    if req.auth == "token":
        certs.check_name(req.name)
        path = req.token_dir / f"{req.name}.token"
        if not path.exists():
            req.token_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(path, (secrets.token_urlsafe(32) + "\n").encode(), 0o600)
        return {"token": path.read_bytes()}, {"tls": None, "token_file": path.resolve()}
    raise InvalidInput(f"unknown --auth {req.auth!r}: use tls or token")


#: What an agent with a trust root needs beyond its base dependencies (the agent's [trust] extra).
TRUST_REQUIREMENTS = ["tuf>=6", "securesystemslib[crypto]>=1.0", "cryptography>=42"]


def trust_files(req: InstallRequest) -> dict:
    """The trust root for the device (`etc/trust_root.json`) when there is one: `req.trust_root`, else the host's
    own keys' (`deploy keys init`); empty when this host signs nothing (the agent then runs with signing off)."""
    from host.security.keys import KeyDir, default_dir

    path = req.trust_root
    if path is None:
        kd = KeyDir(default_dir())
        path = kd.trust_root if kd.exists() else None
    if path is None:
        return {}
    try:
        return {"trust_root.json": Path(path).read_bytes()}
    except OSError as exc:
        raise InvalidInput(f"--trust-root {path}: {exc.strerror or exc}") from None


def _env_file(req: InstallRequest, base: str, files: dict) -> bytes:
    settings = {"LISTEN": f"{req.listen_host}:{req.port}", "STORE": f"{base}/store", "CACHE_DIR": f"{base}/engines",
                "PROFILE": req.profile}
    if "agent.pem" in files:
        settings.update(TLS_CERT=f"{base}/etc/agent.pem", TLS_KEY=f"{base}/etc/agent.key", TLS_CA=f"{base}/etc/ca.pem")
    if "token" in files:
        settings["TOKEN_FILE"] = f"{base}/etc/token"
    if "trust_root.json" in files:
        settings.update(TRUST_ROOT=f"{base}/etc/trust_root.json", REQUIRE_SIGNED="1")
    lines = [f"DEPLOY_AGENT_{k}={shlex.quote(v)}" for k, v in settings.items() if v]
    return ("# written by `deploy agent install`; edit and restart the agent to change settings\n"
            + "\n".join(lines) + "\n").encode()


def _sync_file(remote: Remote, path: str, data: bytes, mode: int, changed: list, label: str) -> None:
    if remote.read_bytes(path) == data and remote.mode(path) == mode:
        return
    remote.write_bytes(path, data, mode)
    changed.append(label)


def _packages_ok(remote: Remote, base: str, state: dict, digest: str) -> bool:
    if state.get("agent_wheel_digest") != digest:
        return False
    check = remote.run(f"{shlex.quote(base + '/venv/bin/python')} -c {shlex.quote(_IMPORT_CHECK)}", check=False)
    return check.status == 0


def _install_packages(remote: Remote, req: InstallRequest, base: str, py: wheels.RemotePython,
                      agent_wheel: Path, say: Say) -> None:
    requirements = wheels.wheel_requirements(agent_wheel) + (TRUST_REQUIREMENTS if trust_files(req) else [])
    with tempfile.TemporaryDirectory(prefix="deploy-deps-") as tmp:
        if req.wheels_dir is not None:
            deps = wheels.select_wheels(req.wheels_dir, requirements)
        else:
            missing = wheels.missing_requirements(requirements, py)
            say(f"fetching wheels for {py.tag}: pip{', ' if missing else ''}{', '.join(missing)}")
            deps = wheels.download_dependencies(missing, py, Path(tmp))
        q = shlex.quote
        wdir = f"{base}/wheels"
        remote.run(f"rm -rf {q(wdir)} && mkdir -p {q(wdir)}")
        for w in [*deps, agent_wheel]:
            remote.put_file(w, f"{wdir}/{w.name}")
        say(f"copied {len(deps) + 1} wheels ({sum(w.stat().st_size for w in [*deps, agent_wheel]) >> 20} MiB)")
    venv_py = f"{base}/venv/bin/python"
    if not remote.exists(venv_py):
        remote.run(f"{q(req.python)} -m venv --without-pip --system-site-packages {q(base + '/venv')}")
    pip_wheel = next(w.name for w in deps if w.name.lower().startswith("pip-"))
    pip = f"{q(venv_py)} {q(wdir + '/' + pip_wheel + '/pip')} --disable-pip-version-check -q"
    reqs = " ".join(q(r) for r in requirements)
    remote.run(f"{pip} install --no-index --find-links {q(wdir)} {reqs}", timeout=900)
    remote.run(f"{pip} install --no-index --no-deps --force-reinstall {q(wdir + '/' + agent_wheel.name)}",
               timeout=300)


def wait_healthy(device: inv.Device, timeout_s: float) -> None:
    """Until the agent answers GetInfo through the client's own credentials (so TLS/token are checked too)."""
    from host.client.agent import AgentClient
    from host.client.errors import AgentError

    deadline = time.monotonic() + timeout_s
    last: Optional[Exception] = None
    while time.monotonic() < deadline:
        try:
            with AgentClient(device) as client:
                client.info(timeout=5)
            return
        except AgentError as exc:
            last = exc
            if not exc.unreachable:
                raise
        time.sleep(0.3)
    raise Unavailable(f"agent at {device.address} did not answer within {timeout_s:.0f} s ({last})")


def _update_inventory(req: InstallRequest, fields: dict) -> tuple:
    inventory = inv.load(req.inventory_path)
    current = inventory.devices.get(req.name)
    entry = inv.Device(name=req.name, address=req.address, profile=req.profile or (current.profile if current else ""),
                       tags=current.tags if current else [], ssh=str(req.target), **fields)
    if current == entry:
        return False, inventory.path
    inventory.devices[req.name] = entry
    return True, inv.save(inventory, req.inventory_path)


def install(req: InstallRequest, say: Say = lambda _m: None) -> InstallReport:
    certs.check_name(req.name)
    if not 0 < req.port < 65536:
        raise InvalidInput(f"--port {req.port} is out of range")
    changed: list = []
    with tempfile.TemporaryDirectory(prefix="deploy-install-") as tmp:
        agent_wheel = req.agent_wheel or wheels.build_agent_wheel(Path(tmp))
        files, inventory_fields = _credentials(req)
        files.update(trust_files(req))
        digest = wheels.wheel_content_digest(agent_wheel) + ("+trust" if "trust_root.json" in files else "")
        with _connect(req, say) as remote:
            base = _base_dir(remote, req)
            py = probe_python(remote, req.python)
            manager = service.choose(remote, req.as_service)
            state = _read_state(remote, base)
            for d, mode in ((base, 0o755), (f"{base}/etc", 0o700), (f"{base}/bin", 0o755)):
                if remote.mode(d) != mode:
                    remote.makedirs(d, mode)
                    changed.append(f"dir {posixpath.basename(d)}")
            if not _packages_ok(remote, base, state, digest):
                _install_packages(remote, req, base, py, agent_wheel, say)
                changed.append("packages")
            for name, data in files.items():
                _sync_file(remote, f"{base}/etc/{name}", data, 0o600, changed, f"etc/{name}")
            stale = {"agent.pem", "agent.key", "ca.pem", "token", "trust_root.json"} - set(files)
            for name in sorted(stale):
                if remote.exists(f"{base}/etc/{name}"):
                    remote.run(f"rm -f {shlex.quote(base + '/etc/' + name)}")
                    changed.append(f"removed etc/{name}")
            _sync_file(remote, f"{base}/agent.env", _env_file(req, base, files), 0o600, changed, "agent.env")
            for path, data, mode in service.files(manager, base, req.target.user, remote):
                _sync_file(remote, path, data, mode, changed, posixpath.basename(path))
            if changed or not service.running(remote, manager, base):
                service.restart(remote, manager, base)
                changed.append("agent restarted")
            new_state = {"agent_wheel_digest": digest, "manager": manager, "address": req.address,
                         "python": req.python, "name": req.name}
            if state != new_state:
                remote.write_bytes(f"{base}/{STATE_NAME}", json.dumps(new_state, indent=1).encode(), 0o644)
            device = inv.Device(name=req.name, address=req.address, **inventory_fields)
            try:
                wait_healthy(device, req.health_timeout_s)
            except Exception as exc:
                log = remote.run(f"tail -n 5 {shlex.quote(base + '/agent.log')}", check=False).stdout.strip()
                raise Unavailable(f"{exc}; agent log tail: {log.splitlines()[-1] if log else 'empty'}") from None
        inv_changed, inv_path = _update_inventory(req, inventory_fields)
        if inv_changed:
            changed.append("inventory")
    return InstallReport(req.name, req.address, base, manager, changed, str(inv_path))


def uninstall(req: InstallRequest, *, keep_inventory: bool = False, say: Say = lambda _m: None) -> InstallReport:
    """Stop and remove the agent, its unit and BASE; forget the device. Safe to run again."""
    certs.check_name(req.name)
    changed: list = []
    with _connect(req, say) as remote:
        base = _base_dir(remote, req)
        state = _read_state(remote, base)
        manager = state.get("manager") or service.choose(remote, req.as_service)
        if service.remove(remote, manager, base):
            changed.append("service")
        if remote.exists(base):
            if not remote.exists(f"{base}/{STATE_NAME}") and not remote.exists(f"{base}/agent.env"):
                raise PreconditionFailed(f"{base} on {req.target} was not made by `deploy agent install`; "
                                         "not removing it")
            remote.run(f"rm -rf {shlex.quote(base)}")
            changed.append("files")
    token = req.token_dir / f"{req.name}.token"
    if token.exists():
        token.unlink()
        changed.append("local token")
    inventory = inv.load(req.inventory_path)
    if not keep_inventory and req.name in inventory.devices:
        del inventory.devices[req.name]
        inv.save(inventory, req.inventory_path)
        changed.append("inventory")
    return InstallReport(req.name, req.address, base, manager, changed, str(inventory.path))
