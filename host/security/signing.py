"""Signing a bundle's manifest with the fleet's keys: the TUF metadata that travels with the bundle.

The targets role names the manifest (`manifests/<sha256 of manifest.json>`, with its length and hash); the manifest
pins every file of the bundle, so one signature covers them all and signed pieces cannot be recombined (SWUpdate's
rule). Each signing makes targets, snapshot and timestamp one version newer, so a device that saw version N refuses
metadata older than N (replay). What travels (`wire`) is one JSON object: the metadata files by the names a TUF
client asks for (`2.root.json` ... the current root, `timestamp.json`, `snapshot.json`, `targets.json`) and the
target's name. The agent (`device_agent/trust.py`) verifies it with `tuf.ngclient` offline.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Dict, Optional

from device_agent.archive import manifest_bytes_of_archive
from device_agent.manifest import MANIFEST_NAME

from .keys import KeyDir, default_dir, expiry, now_utc

WIRE_FORMAT = "deploy-tuf/1"
TARGET_PREFIX = "manifests/"
MAX_TARGETS = 128  # manifests the targets role lists at once (about 150 bytes each on the wire)
#: Metadata whose timestamp expires sooner than this is signed again rather than sent as it is.
RESIGN_BEFORE = _dt.timedelta(days=1)


def target_name(manifest_bytes: bytes) -> str:
    return TARGET_PREFIX + hashlib.sha256(manifest_bytes).hexdigest()


def sign_targets(kd: KeyDir, add: Dict[str, bytes], *, now: Optional[_dt.datetime] = None,
                 days: Optional[Dict[str, int]] = None) -> None:
    """Targets (the last MAX_TARGETS manifests signed, plus `add`: name -> bytes), snapshot and timestamp, each one
    version newer, signed by their roles' keys under the current root. The caller holds the key directory's lock.

    Earlier manifests stay listed, so the newest metadata vouches for every recent bundle: a device that saw
    version N takes any of them with metadata N or newer, and older metadata is refused whatever it names."""
    from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Targets, Timestamp

    now = now or now_utc()
    root = kd.read("root.json")

    def version(name: str) -> int:
        return kd.read(name).signed.version + 1 if (kd.metadata / name).is_file() else 1

    t = Targets(version=version("targets.json"), expires=expiry("targets", now, days))
    if (kd.metadata / "targets.json").is_file():
        t.targets.update(kd.read("targets.json").signed.targets)
    for name, data in add.items():
        t.targets.pop(name, None)  # re-added last: the newest stay when the oldest are dropped
        t.targets[name] = TargetFile.from_data(name, data, ["sha256"])
    for name in list(t.targets)[:-MAX_TARGETS]:
        del t.targets[name]
    s = Snapshot(version=version("snapshot.json"), expires=expiry("snapshot", now, days))
    s.meta["targets.json"] = MetaFile(version=t.version)
    ts = Timestamp(version=version("timestamp.json"), expires=expiry("timestamp", now, days))
    ts.snapshot_meta = MetaFile(version=s.version)
    for name, signed in (("targets.json", t), ("snapshot.json", s), ("timestamp.json", ts)):
        md = Metadata(signed)
        for signer in kd.signers(root, signed.type):
            md.sign(signer, append=True)
        kd.write(name, md)


def wire(kd: KeyDir, target: str) -> bytes:
    """The metadata a device needs to verify `target`, from any root version it may hold."""
    files = {f"{v}.root.json": (kd.metadata / "root_history" / f"{v}.root.json").read_text()
             for v in kd.root_versions() if v > 1}
    for name in ("timestamp.json", "snapshot.json", "targets.json"):
        files[name] = (kd.metadata / name).read_text()
    return json.dumps({"format": WIRE_FORMAT, "target": target, "metadata": files},
                      sort_keys=True, separators=(",", ":")).encode()


def _current(kd: KeyDir, name: str, now: _dt.datetime) -> bool:
    """Whether the current metadata already lists `name` and stays valid for a while."""
    if not (kd.metadata / "timestamp.json").is_file():
        return False
    if name not in kd.read("targets.json").signed.targets:
        return False
    soonest = min(kd.read(f"{r}.json").signed.expires for r in ("targets", "snapshot", "timestamp"))
    return soonest - now > RESIGN_BEFORE


def sign_manifest(manifest_bytes: bytes, directory: Optional[Path] = None, *, now: Optional[_dt.datetime] = None,
                  days: Optional[Dict[str, int]] = None, force: bool = False) -> bytes:
    """The wire metadata vouching for one manifest: the current metadata when it lists the manifest and is not
    about to expire, else a new targets, snapshot and timestamp version (`force`: always new)."""
    kd = KeyDir(Path(directory) if directory else default_dir()).require()
    name = target_name(manifest_bytes)
    with kd.lock():
        if force or days is not None or not _current(kd, name, now or now_utc()):
            sign_targets(kd, {name: manifest_bytes}, now=now, days=days)
        return wire(kd, name)


def manifest_of_archive(archive: Path) -> bytes:
    """The bytes of `manifest.json` in a bundle archive, or of a bundle directory (a bundle by parts, whose
    identity they are: device_agent/parts.py), as the agent will hash them."""
    if Path(archive).is_dir():
        return (Path(archive) / MANIFEST_NAME).read_bytes()
    return manifest_bytes_of_archive(archive)


def keys_present(directory: Optional[Path] = None) -> bool:
    return KeyDir(Path(directory) if directory else default_dir()).exists()


def metadata_for(archive: Path, directory: Optional[Path] = None) -> Optional[bytes]:
    """The signing metadata to send with a bundle archive, or with the manifest of a bundle directory sent by parts
    (host/client/parts.py), or None when this host has no keys (signing off).

    A manifest already listed by valid metadata is not signed again: a fleet warm or rollout signs once and sends
    the same metadata to every device."""
    kd_path = Path(directory) if directory else default_dir()
    if not KeyDir(kd_path).exists():
        return None
    return sign_manifest(manifest_of_archive(Path(archive)), kd_path)
