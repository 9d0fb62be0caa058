"""The wheels a device needs: the agent's own, built here, and its dependencies for the device's platform.

Devices are assumed to have no network (shop floors, vehicles), so the host fetches dependency wheels for the
device's Python and CPU (`pip download --platform ...`) into a cache and the device installs offline from them.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from device_agent.errors import InvalidInput, PreconditionFailed

_SOURCE_PARTS = ("pyproject.toml", "README.md", "device_agent", "protos", "host")


@dataclass(frozen=True)
class RemotePython:
    """What the device's interpreter is, as far as wheel tags are concerned."""

    version: tuple            # (3, 10)
    machine: str              # "aarch64", "x86_64"
    glibc: tuple              # (2, 35); (0, 0) when not glibc
    installed: dict = field(default_factory=dict)  # distribution name (normalised) -> version

    @property
    def tag(self) -> str:
        return f"cp{self.version[0]}{self.version[1]}-{self.machine}-glibc{self.glibc[0]}.{self.glibc[1]}"


def source_root() -> Path:
    """The checkout this package runs from; the agent wheel is built from it."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "device_agent").is_dir():
        raise PreconditionFailed("cannot find the project source to build the agent wheel; build it with "
                                 "`pip wheel --no-deps .` and pass --agent-wheel FILE")
    return root


def build_agent_wheel(out_dir: Path, root: Optional[Path] = None) -> Path:
    """`pip wheel --no-deps` of a clean copy of the source, so the build never writes into the checkout."""
    root = root or source_root()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="deploy-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
        for part in _SOURCE_PARTS:
            p = root / part
            if p.is_dir():
                shutil.copytree(p, src / part, ignore=ignore)
            elif p.is_file():
                shutil.copy2(p, src / part)
        env = dict(os.environ, SOURCE_DATE_EPOCH="315532800", PIP_DISABLE_PIP_VERSION_CHECK="1")
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                               "-w", str(Path(tmp) / "out"), str(src)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PreconditionFailed(f"building the agent wheel failed: {tail[0]}")
        built = sorted((Path(tmp) / "out").glob("*.whl"))
        if len(built) != 1:
            raise PreconditionFailed(f"building the agent wheel gave {len(built)} wheels, expected one")
        target = out_dir / built[0].name
        shutil.copy2(built[0], target)
        return target


def wheel_content_digest(path: Path) -> str:
    """Digest of the files inside a wheel (names and bytes), blind to zip timestamps: equal code, equal digest."""
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as zf:
        for name in sorted(zf.namelist()):
            if name.endswith(".dist-info/RECORD"):
                continue
            h.update(name.encode() + b"\0")
            h.update(hashlib.sha256(zf.read(name)).digest())
    return "sha256:" + h.hexdigest()


def wheel_requirements(path: Path) -> list:
    """The unconditional `Requires-Dist` lines of a wheel (extras and markers are the host's business)."""
    with zipfile.ZipFile(path) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode("utf-8")
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.startswith("Requires-Dist:") and ";" not in line]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_requirements(requirements: Sequence[str], remote: RemotePython) -> list:
    """The requirements the device's own site-packages do not already satisfy."""
    from packaging.requirements import Requirement
    from packaging.version import InvalidVersion, Version

    missing = []
    for text in requirements:
        req = Requirement(text)
        have = remote.installed.get(normalise(req.name))
        try:
            ok = have is not None and req.specifier.contains(Version(have), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            missing.append(text)
    return missing


def _platforms(remote: RemotePython) -> list:
    arch = remote.machine
    if remote.glibc == (0, 0):
        raise PreconditionFailed("the device's libc is not glibc; pass --wheels DIR with wheels built for it")
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(17, remote.glibc[1] + 1)]
    tags += [f"manylinux2014_{arch}"]
    if arch == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return tags


def download_dependencies(requirements: Sequence[str], remote: RemotePython, dest: Path) -> list:
    """Wheels for REQUIREMENTS (and pip itself) for the device's platform, from the host's package index.

    DEST should be empty: exactly what pip resolved now ends up there (pip's own HTTP cache makes repeats cheap).
    """
    dest.mkdir(parents=True, exist_ok=True)
    ver = f"{remote.version[0]}.{remote.version[1]}"
    abi = f"cp{remote.version[0]}{remote.version[1]}"
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(dest),
           "--only-binary=:all:", "--python-version", ver, "--implementation", "cp",
           "--abi", abi, "--abi", "abi3", "--abi", "none"]
    for tag in _platforms(remote):
        cmd += ["--platform", tag]
    proc = subprocess.run(cmd + ["pip", *requirements], capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")] or ["no detail"]
        raise PreconditionFailed(
            f"cannot fetch dependency wheels for the device ({remote.tag}): {errors[0]}; "
            "pass --wheels DIR holding them, or install grpcio, protobuf and numpy on the device")
    return select_wheels(dest, ["pip", *requirements])


def select_wheels(directory: Path, requirements: Sequence[str]) -> list:
    """Every wheel in DIRECTORY (pip picks among them offline); refuse a directory without any."""
    wheels = sorted(Path(directory).glob("*.whl"))
    if not wheels:
        raise InvalidInput(f"no wheels in {directory}; it must hold wheels for the device's Python and CPU")
    if not any(w.name.lower().startswith("pip-") for w in wheels):
        raise InvalidInput(f"{directory} holds no pip wheel; add one (`pip download pip -d {directory}`)")
    return wheels
