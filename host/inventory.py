"""The device inventory: `deploy.toml` in the working directory, else the user config dir.

Validated with pydantic so a typo in the file becomes one clear line naming the device and the field.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from device_agent.errors import InvalidInput, NotFound
from device_agent.fileio import atomic_write

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

INVENTORY_NAME = "deploy.toml"
LOCAL = "local"


class TlsFiles(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ca: Path
    cert: Optional[Path] = None
    key: Optional[Path] = None


class Device(BaseModel):
    """One inventory entry; `address` is HOST:PORT of its agent."""

    model_config = ConfigDict(extra="forbid")
    name: str = ""
    address: str
    profile: str = ""
    tags: list[str] = Field(default_factory=list)
    tls: Optional[TlsFiles] = None
    token_file: Optional[Path] = None
    ssh: Optional[str] = None  # user@host[:port] the agent was installed through

    @field_validator("address")
    @classmethod
    def _has_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"address {value!r} must be HOST:PORT")
        return value


class Inventory(BaseModel):
    model_config = ConfigDict(extra="forbid")
    devices: dict[str, Device] = Field(default_factory=dict)
    path: Optional[Path] = None

    def select(self, tags: Optional[list[str]] = None) -> list[Device]:
        wanted = set(tags or [])
        return [d for d in self.devices.values() if wanted.issubset(d.tags)]


def default_path() -> Path:
    """`$DEPLOY_INVENTORY`, else ./deploy.toml, else the user config dir's."""
    env = os.environ.get("DEPLOY_INVENTORY")
    if env:
        return Path(env)
    local = Path.cwd() / INVENTORY_NAME
    if local.exists():
        return local
    return Path(platformdirs.user_config_dir("deploy")) / INVENTORY_NAME


def load(path: Optional[Path] = None) -> Inventory:
    path = Path(path) if path else default_path()
    if not path.exists():
        return Inventory(path=path)
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"inventory {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"devices"}
    if unknown:
        raise InvalidInput(f"inventory {path}: unknown table(s) {sorted(unknown)}; only [devices.NAME] is allowed")
    devices: dict[str, Device] = {}
    for name, entry in (data.get("devices") or {}).items():
        if not isinstance(entry, dict):
            raise InvalidInput(f"inventory {path}: devices.{name} must be a table [devices.{name}]")
        try:
            devices[name] = Device(**{**entry, "name": name})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidInput(f"inventory {path}: devices.{name}.{where}: {first['msg']}") from None
    return Inventory(devices=devices, path=path)


def save(inventory: Inventory, path: Optional[Path] = None) -> Path:
    """Write atomically, so a crash never leaves half an inventory."""
    import tomli_w

    path = Path(path or inventory.path or default_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"devices": {name: d.model_dump(mode="json", exclude_none=True, exclude={"name"})
                        for name, d in inventory.devices.items()}}
    for entry in data["devices"].values():
        if not entry.get("tags"):
            entry.pop("tags", None)
    atomic_write(path, tomli_w.dumps(data).encode("utf-8"))
    return path


def resolve(spec: str, inventory: Optional[Inventory] = None) -> Device:
    """An inventory name, `local`, or a literal HOST:PORT."""
    inventory = inventory if inventory is not None else load()
    if spec in inventory.devices:
        return inventory.devices[spec]
    if spec == LOCAL:
        return Device(name=LOCAL, address="local:0")
    host, sep, port = spec.rpartition(":")
    if sep and host and port.isdigit():
        return Device(name=spec, address=spec)
    names = ", ".join(sorted(inventory.devices)) or "none"
    raise NotFound(f"unknown device {spec!r}: not in the inventory ({inventory.path}; devices: {names}) "
                   "and not HOST:PORT")
