"""The command line and environment that run the device agent as an aarch64 process under qemu.

The agent's own code travels as a directory of two symlinks, `device_agent` and `protos`, to where this host
imports them from: the emulated agent sees exactly the code the host runs, and nothing of `host/`.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .sysroot import Emulation, EmulationError, qemu_path

#: qemu's model of the profile's CPU where qemu 7.2 has one (Nano: Cortex-A57, ARMv8.0); Xavier's Carmel and
#: Orin's Cortex-A78AE have no model there, so those get `max` (every feature qemu emulates).
CPU_BY_PROFILE = {"jetson-nano": "cortex-a57"}
AGENT_PACKAGES = ("device_agent", "protos")
#: Host variables that must not reach the guest: they name x86 libraries or the host's own Python.
_DROP = ("LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV",
         "PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__", "QEMU_LD_PREFIX", "QEMU_CPU")


def cpu_for(profile: str) -> str:
    return CPU_BY_PROFILE.get(profile, "max")


def _sources() -> dict:
    import device_agent
    import protos

    return {name: Path(mod.__file__).resolve().parent for name, mod in (("device_agent", device_agent),
                                                                         ("protos", protos))}


def code_dir(emu: Emulation) -> Path:
    """<emulation>/code/<hash of the source paths>/{device_agent,protos} -> this host's packages."""
    sources = _sources()
    digest = hashlib.sha256("\0".join(str(p) for p in sources.values()).encode()).hexdigest()[:12]
    final = emu.root / "code" / digest
    if all((final / name).resolve() == path for name, path in sources.items()):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{digest}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    for name, path in sources.items():
        (tmp / name).symlink_to(path, target_is_directory=True)
    try:
        os.rename(tmp, final)
    except OSError:  # made meanwhile by another caller (or stale): replace a stale one
        if not all((final / name).resolve() == path for name, path in sources.items()):
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def python_environment(emu: Emulation, cpu: str = "max", base: Optional[Mapping[str, str]] = None,
                       pythonpath: Sequence[Path] = ()) -> dict:
    """Environment for the emulated interpreter: PYTHONPATH = PYTHONPATH + the wheel set, qemu and its CPU model."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _DROP}
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in pythonpath), str(emu.wheels)])
    env["DEPLOY_EMULATE_QEMU"] = qemu_path()
    env["DEPLOY_EMULATE_CPU"] = cpu
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def agent_environment(emu: Emulation, cpu: str = "max", base: Optional[Mapping[str, str]] = None) -> dict:
    """python_environment with this host's agent code first on PYTHONPATH."""
    return python_environment(emu, cpu, base, [code_dir(emu)])


def agent_command(emu: Emulation, agent_args: Sequence[str]) -> list:
    """`python -m device_agent ARGS` run by the emulated interpreter (an aarch64 process under qemu)."""
    if not emu.python.is_file():
        raise EmulationError(f"{emu.python} is missing; remove {emu.root} and prepare again")
    return [str(emu.python), "-m", "device_agent", *agent_args]
