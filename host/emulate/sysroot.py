"""The aarch64 sysroot and wheel set of the emulated device, prepared once and shared.

Layout of one prepared emulation, `<cache>/emulate/<key>/` (cache: $DEPLOY_EMULATE_CACHE, else the user cache dir
`deploy/emulate`):

  sysroot/                     Debian 12 (bookworm) arm64 packages unpacked with `dpkg -x`; Python 3.11
  sysroot/usr/bin/python3-emulated   a host shell script: `qemu-aarch64-static -L sysroot ... python3.11 "$@"`
  wheels/                      aarch64 wheels installed with `pip install --target` (PYTHONPATH)
  emulation.json               what went in (package versions, wheels, timings); written last but one
  ready                        written last; a directory without it is never used

The directory is built under a temporary name beside its final one and renamed when whole, under a file lock, so
concurrent callers (parallel tests, two CLIs) wait for one preparation and share it; a preparation that was killed
leaves only a temporary directory, removed by the next one. Downloads use apt-get with a private state directory
(our own sources list and `APT::Architectures arm64`), so the host's apt configuration is not touched and no
`dpkg --add-architecture` is needed.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

from device_agent.errors import PreconditionFailed
from device_agent.fileio import fsync_dir

FORMAT = 1
PYTHON = "3.11"
DEBIAN_SUITE = "bookworm"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
#: Python 3.11 and the shared libraries it, numpy, grpcio, onnxruntime and TVM load (each as NAME:arm64).
DEBIAN_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "python3.11", "libc6", "zlib1g",
    "libexpat1", "libssl3", "libffi8", "libgcc-s1", "libstdc++6", "libbz2-1.0", "liblzma5", "libsqlite3-0",
    "libuuid1", "libncursesw6", "libtinfo6", "libreadline8", "libdb5.3", "libgomp1",
)
#: The gRPC stack at the host's own versions (same wire code on both ends); the rest pinned to what runs under
#: Debian's qemu 7.2: onnxruntime 1.32.0 (aarch64) segfaults at import there (with -cpu max and cortex-a57 alike),
#: 1.22.0 imports and runs.
HOST_PINNED = ("grpcio", "grpcio-health-checking", "grpcio-reflection", "protobuf")
FIXED_PINS = ("numpy==2.2.6", "onnxruntime==1.22.0")
TVM_DISTRIBUTION = "apache-tvm"
WHEEL_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64")
QEMU = "qemu-aarch64-static"
LOCK_TIMEOUT_S = 1800.0

Say = Callable[[str], None]


class EmulationError(PreconditionFailed):
    """Emulation cannot be prepared here; the message is one line saying what to install or fix."""


@dataclass(frozen=True)
class Emulation:
    """One prepared aarch64 userland and wheel set."""

    root: Path
    key: str

    @property
    def sysroot(self) -> Path:
        return self.root / "sysroot"

    @property
    def wheels(self) -> Path:
        return self.root / "wheels"

    @property
    def python(self) -> Path:
        """A host script that runs the aarch64 python3.11 under qemu; guest subprocesses of sys.executable work."""
        return self.sysroot / "usr" / "bin" / "python3-emulated"

    @property
    def record(self) -> dict:
        return json.loads((self.root / "emulation.json").read_text())


def cache_root() -> Path:
    env = os.environ.get("DEPLOY_EMULATE_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("deploy")) / "emulate"


def qemu_path() -> str:
    found = os.environ.get("DEPLOY_EMULATE_QEMU") or shutil.which(QEMU)
    if not found or not os.access(found, os.X_OK):
        raise EmulationError(f"{QEMU} not found: apt-get install qemu-user-static")
    return found


def wheel_pins() -> list:
    pins = []
    for name in HOST_PINNED:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise EmulationError(f"{name} is not installed on the host: pip install -e '.[host]'") from None
    try:
        tvm = metadata.version(TVM_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise EmulationError(f"{TVM_DISTRIBUTION} is not installed on the host: pip install -e '.[host]'") from None
    return pins + list(FIXED_PINS) + [f"{TVM_DISTRIBUTION}=={tvm}"]


def mirror() -> str:
    return os.environ.get("DEPLOY_EMULATE_DEBIAN_MIRROR", "http://deb.debian.org/debian").rstrip("/")


def security_mirror() -> str:
    return os.environ.get("DEPLOY_EMULATE_DEBIAN_SECURITY", "http://deb.debian.org/debian-security").rstrip("/")


def cache_key(pins: list) -> str:
    spec = {"format": FORMAT, "python": PYTHON, "suite": DEBIAN_SUITE, "packages": list(DEBIAN_PACKAGES),
            "pins": pins, "platforms": list(WHEEL_PLATFORMS)}
    return f"py{PYTHON.replace('.', '')}-aarch64-" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()
                                                                  ).hexdigest()[:16]


def _need_tools() -> dict:
    tools = {"qemu": qemu_path()}
    for tool, package in (("apt-get", "apt"), ("dpkg-deb", "dpkg")):
        path = shutil.which(tool)
        if path is None:
            raise EmulationError(f"{tool} not found: preparing the emulated device needs a Debian or Ubuntu host "
                                 f"(package {package})")
        tools[tool] = path
    if not DEBIAN_KEYRING.is_file():
        raise EmulationError(f"{DEBIAN_KEYRING} not found: apt-get install debian-archive-keyring")
    return tools


def find(root: Optional[Path] = None) -> Optional[Emulation]:
    """The prepared emulation for today's pins, or None."""
    key = cache_key(wheel_pins())
    path = (root or cache_root()) / key
    return Emulation(path, key) if (path / "ready").is_file() else None


def prepare(say: Optional[Say] = None, root: Optional[Path] = None) -> Emulation:
    """The emulation, prepared now if it is not yet (a few minutes the first time, mostly downloads)."""
    say = say or (lambda _msg: None)
    pins = wheel_pins()
    key = cache_key(pins)
    root = root or cache_root()
    final = root / key
    qemu_path()  # a missing qemu is said first, even when the sysroot is cached
    if (final / "ready").is_file():
        return Emulation(final, key)
    tools = _need_tools()
    root.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock, Timeout

    try:
        with FileLock(str(root / f"{key}.lock"), timeout=LOCK_TIMEOUT_S):
            if (final / "ready").is_file():
                return Emulation(final, key)
            for stale in root.glob(f".tmp-{key}-*"):  # left by a preparation that was killed
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():  # cannot happen through rename; a hand-made directory is not trusted
                shutil.rmtree(final)
            tmp = root / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                _build(tmp, pins, tools, say)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(root)
    except Timeout:
        raise EmulationError(f"another preparation of {final} held its lock for {LOCK_TIMEOUT_S:.0f} s; "
                             f"remove {root / (key + '.lock')} if no other deploy runs") from None
    say(f"emulate: prepared {final}")
    return Emulation(final, key)


def _run(cmd: list, what: str, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise EmulationError(f"{what} took more than {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("E:", "ERROR", "error"))] or lines[-1:] or ["no output"]
        raise EmulationError(f"{what} failed (exit {proc.returncode}): {errors[0]}")
    return proc


def _apt_config(apt: Path) -> Path:
    """A private apt: our own lists, cache and sources, arm64 only; the host's apt state is not touched."""
    for sub in ("lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    keyring = f"[arch=arm64 signed-by={DEBIAN_KEYRING}]"
    (apt / "sources.list").write_text(
        f"deb {keyring} {mirror()} {DEBIAN_SUITE} main\n"
        f"deb {keyring} {mirror()} {DEBIAN_SUITE}-updates main\n"
        f"deb {keyring} {security_mirror()} {DEBIAN_SUITE}-security main\n")
    user = getpass.getuser() if os.getuid() == 0 else ""
    conf = apt / "apt.conf"
    conf.write_text("\n".join([
        f'Dir::State "{apt}";', f'Dir::State::Lists "{apt}/lists";', f'Dir::State::status "{apt}/status";',
        f'Dir::Cache "{apt}/cache";', f'Dir::Etc::SourceList "{apt}/sources.list";',
        f'Dir::Etc::SourceParts "{apt}/sources.list.d";', f'Dir::Etc::Preferences "{apt}/preferences";',
        f'Dir::Etc::PreferencesParts "{apt}/preferences.d";', 'APT::Architecture "arm64";',
        'APT::Architectures { "arm64"; };', 'Acquire::Languages "none";',
        *([f'APT::Sandbox::User "{user}";'] if user else []), ""]))
    return conf


_WRAPPER = """#!/bin/sh
# An aarch64 Python {python} under qemu user-mode emulation; written by host/emulate/sysroot.py.
# The guest's sys.executable is this script, so its own subprocesses (python -m ...) are emulated too.
# DEPLOY_EMULATE_QEMU: the qemu to run (default: {qemu} on PATH); DEPLOY_EMULATE_CPU: its CPU model (default max).
self=$(readlink -f "$0")
root=${{self%/usr/bin/*}}
unset LD_LIBRARY_PATH LD_PRELOAD PYTHONHOME
exec "${{DEPLOY_EMULATE_QEMU:-{qemu}}}" -cpu "${{DEPLOY_EMULATE_CPU:-max}}" -L "$root" -0 "$0" \\
  "$root/usr/bin/python{python}" "$@"
"""

_SMOKE = """
import json, platform, ssl, sqlite3, ctypes, zlib, bz2, lzma, time
import numpy, grpc, google.protobuf, onnxruntime
t = time.monotonic()
import tvm
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(), "numpy": numpy.__version__,
                  "grpcio": grpc.__version__, "protobuf": google.protobuf.__version__,
                  "onnxruntime": onnxruntime.__version__, "tvm": tvm.__version__,
                  "tvm_import_s": round(time.monotonic() - t, 1)}))
"""


def _build(tmp: Path, pins: list, tools: dict, say: Say) -> None:
    timings: dict = {}
    sysroot, wheels, debs = tmp / "sysroot", tmp / "wheels", tmp / "debs"
    for d in (sysroot, wheels, debs):
        d.mkdir()
    conf = _apt_config(tmp / "apt")
    env = dict(os.environ, APT_CONFIG=str(conf), DEBIAN_FRONTEND="noninteractive", LC_ALL="C")

    t = time.monotonic()
    say(f"emulate: Debian {DEBIAN_SUITE} arm64 package lists ({mirror()})")
    _run([tools["apt-get"], "-q", "update"], "apt-get update (arm64 lists)", 600, env=env)
    say(f"emulate: downloading {len(DEBIAN_PACKAGES)} arm64 packages (Python {PYTHON} and its libraries)")
    _run([tools["apt-get"], "-q", "download", *(f"{p}:arm64" for p in DEBIAN_PACKAGES)], "apt-get download",
         900, env=env, cwd=str(debs))
    timings["debian_download_s"] = round(time.monotonic() - t, 2)

    t = time.monotonic()
    packages = {}
    for deb in sorted(debs.glob("*.deb")):
        _run([tools["dpkg-deb"], "-x", str(deb), str(sysroot)], f"dpkg -x {deb.name}", 300)
        fields = _run([tools["dpkg-deb"], "-f", str(deb), "Package", "Version"], "dpkg-deb -f", 60).stdout
        info = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
        packages[info.get("Package", deb.name)] = info.get("Version", "")
    missing = set(DEBIAN_PACKAGES) - set(packages)
    if missing:
        raise EmulationError(f"apt-get download gave no package for {', '.join(sorted(missing))}")
    python = sysroot / "usr" / "bin" / f"python{PYTHON}"
    if not python.is_file():
        raise EmulationError(f"the arm64 packages hold no {python.relative_to(sysroot)}")
    wrapper = sysroot / "usr" / "bin" / "python3-emulated"
    wrapper.write_text(_WRAPPER.format(python=PYTHON, qemu=QEMU))
    wrapper.chmod(0o755)
    shutil.rmtree(debs)
    same_python = f"{sys.version_info.major}.{sys.version_info.minor}" == PYTHON
    if same_python:  # bytecode is the same on both CPUs: compiling here spares the emulated first start
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(sysroot / "usr" / "lib" /
                                                                             f"python{PYTHON}")],
                       capture_output=True, timeout=600)
    timings["unpack_s"] = round(time.monotonic() - t, 2)

    t = time.monotonic()
    say(f"emulate: aarch64 wheels: {' '.join(pins)}")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input",
           "--target", str(wheels), "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
           *(a for p in WHEEL_PLATFORMS for a in ("--platform", p)), *([] if same_python else ["--no-compile"]),
           *pins]
    _run(cmd, "pip install of the aarch64 wheels", 1800)
    timings["wheels_s"] = round(time.monotonic() - t, 2)

    t = time.monotonic()
    say("emulate: checking the aarch64 interpreter (imports numpy, grpc, onnxruntime, tvm under qemu)")
    smoke_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
                 "PYTHONPATH": str(wheels), "DEPLOY_EMULATE_QEMU": tools["qemu"], "LC_ALL": "C.UTF-8"}
    out = _run([str(wrapper), "-c", _SMOKE], "the emulated interpreter's import check", 600, env=smoke_env).stdout
    smoke = json.loads(out.strip().splitlines()[-1])
    if smoke.get("machine") != "aarch64":
        raise EmulationError(f"the emulated interpreter reports machine {smoke.get('machine')!r}, not aarch64")
    timings["check_s"] = round(time.monotonic() - t, 2)

    qemu_version = subprocess.run([tools["qemu"], "--version"], capture_output=True, text=True).stdout
    record = {"format": FORMAT, "suite": DEBIAN_SUITE, "mirror": mirror(), "packages": packages, "pins": pins,
              "platforms": list(WHEEL_PLATFORMS), "qemu": qemu_version.splitlines()[0] if qemu_version else "",
              "check": smoke, "timings": timings, "prepared": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (tmp / "emulation.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    with open(tmp / "ready", "w") as f:
        f.write(cache_key(pins) + "\n")
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(tmp)
