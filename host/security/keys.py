"""The fleet's signing keys and TUF trust metadata on the host (`deploy keys init / rotate / ls`).

One key directory (0700) holds one private key file per role key (`<role>-<keyid12>.key`, PEM PKCS#8 ed25519,
0600) and the repository's metadata (`metadata/`): every root version ever made (`root_history/N.root.json`, so a
device on an old root can walk the chain to the current one, as TUF clients do) and the current targets, snapshot
and timestamp. `trust_root.json` is the current root: the file agents are given. Metadata is made and signed with
the `tuf` library's Metadata API and `securesystemslib`'s CryptoSigner, so thresholds, expiry and version rules are
TUF's own. A rotation makes root N+1 signed by root N's threshold and by the new keys; the replaced key's private
file is deleted (revoked: no later root lists it).
"""
from __future__ import annotations

import datetime as _dt
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from device_agent.errors import InvalidInput, NotFound
from device_agent.fileio import atomic_write

ROLES = ("root", "targets", "snapshot", "timestamp")
#: How long each role's metadata stays valid. Targets, snapshot and timestamp are signed again at every push, so
#: their lifetime bounds how long a device may hold back (freeze) or an offline device may still take a bundle.
EXPIRY_DAYS = {"root": 365, "targets": 90, "snapshot": 30, "timestamp": 7}
METADATA_DIR = "metadata"
TRUST_ROOT = "trust_root.json"
LOCK = ".lock"


class KeyError_(InvalidInput):
    """A key directory or key file cannot be used as it is; the message says what to change."""


def default_dir() -> Path:
    import platformdirs

    return Path(os.environ.get("DEPLOY_KEYS_DIR") or Path(platformdirs.user_config_dir("deploy")) / "keys")


def now_utc() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


def expiry(role: str, now: Optional[_dt.datetime] = None, days: Optional[Dict[str, int]] = None) -> _dt.datetime:
    return (now or now_utc()) + _dt.timedelta(days=(days or EXPIRY_DAYS)[role])


def check_private(path: Path) -> None:
    """Refuse a key file that others can read or write (as OpenSSH does)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyError_(f"key file {path} has loose permissions ({oct(mode)}); others must not read it: "
                        f"chmod 600 {path}")


def write_private(path: Path, data: bytes) -> None:
    atomic_write(path, data, mode=0o600)


@dataclass
class KeyDir:
    """A key directory: its private keys (loaded on demand, permissions checked) and metadata files."""

    path: Path

    @property
    def metadata(self) -> Path:
        return self.path / METADATA_DIR

    @property
    def trust_root(self) -> Path:
        return self.path / TRUST_ROOT

    def exists(self) -> bool:
        return (self.metadata / "root.json").is_file()

    def require(self) -> "KeyDir":
        if not self.exists():
            raise NotFound(f"no signing keys in {self.path}; make them with `deploy keys init`")
        return self

    def key_path(self, role: str, keyid: str) -> Path:
        return self.path / f"{role}-{keyid[:12]}.key"

    def signer(self, role: str, keyid: str, public: Any) -> Any:
        """The CryptoSigner of one key of `role`; its file must be 0600 and match the public key in root."""
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        from securesystemslib.signer import CryptoSigner

        path = self.key_path(role, keyid)
        if not path.is_file():
            raise NotFound(f"the private key of {role} key {keyid[:12]} is not in {self.path} ({path.name}); "
                           "sign on the host that holds it, or rotate the key (deploy keys rotate)")
        check_private(path)
        return CryptoSigner(load_pem_private_key(path.read_bytes(), None), public)

    def read(self, name: str) -> Any:
        from tuf.api.metadata import Metadata

        return Metadata.from_bytes((self.metadata / name).read_bytes())

    def root_versions(self) -> List[int]:
        return sorted(int(p.name.split(".", 1)[0]) for p in (self.metadata / "root_history").glob("*.root.json"))

    def write(self, name: str, md: Any) -> bytes:
        from tuf.api.serialization.json import JSONSerializer

        data = md.to_bytes(JSONSerializer(compact=True))
        atomic_write(self.metadata / name, data)
        return data

    def signers(self, root: Any, role: str) -> List[Any]:
        """Signers for `role` under `root`: every key of the role whose private file is here."""
        out = []
        for keyid in root.signed.roles[role].keyids:
            if self.key_path(role, keyid).is_file():
                out.append(self.signer(role, keyid, root.signed.keys[keyid]))
        if len(out) < root.signed.roles[role].threshold:
            raise NotFound(f"{len(out)} of the {role} role's threshold of {root.signed.roles[role].threshold} "
                           f"private keys are in {self.path}; sign where the others are")
        return out

    def lock(self) -> Any:
        from filelock import FileLock

        return FileLock(str(self.path / LOCK))


def _new_key(kd: KeyDir, role: str) -> Any:
    from securesystemslib.signer import CryptoSigner

    signer = CryptoSigner.generate_ed25519()
    write_private(kd.key_path(role, signer.public_key.keyid), signer.private_bytes)
    return signer


def _sign(md: Any, signers: List[Any]) -> None:
    md.signatures.clear()
    for s in signers:
        md.sign(s, append=True)


def _publish_root(kd: KeyDir, md: Any) -> None:
    data = kd.write(f"root_history/{md.signed.version}.root.json", md)
    atomic_write(kd.metadata / "root.json", data)
    atomic_write(kd.trust_root, data)


def init(directory: Path, *, root_keys: int = 1, root_threshold: int = 1, force: bool = False) -> KeyDir:
    """Make one key per role (root: `root_keys`, `root_threshold` of them needed) and version 1 of every role."""
    from tuf.api.metadata import Metadata, Root

    kd = KeyDir(Path(directory))
    if kd.exists() and not force:
        raise KeyError_(f"{kd.path} already holds the fleet's keys; rotate one with `deploy keys rotate ROLE`, or "
                        "start a new fleet trust with `deploy keys init --force` (devices then need the new "
                        "trust root installed again)")
    if not 1 <= root_threshold <= root_keys <= 16:
        raise KeyError_(f"--root-threshold {root_threshold} must be between 1 and --root-keys {root_keys} (<= 16)")
    kd.path.mkdir(parents=True, exist_ok=True)
    os.chmod(kd.path, 0o700)
    if force:
        for p in kd.path.glob("*.key"):
            p.unlink()
        for p in (kd.metadata / "root_history").glob("*.json") if kd.metadata.is_dir() else ():
            p.unlink()
    (kd.metadata / "root_history").mkdir(parents=True, exist_ok=True)
    now = now_utc()
    root = Root(expires=expiry("root", now), consistent_snapshot=False)
    signers: Dict[str, List[Any]] = {}
    for role in ROLES:
        signers[role] = [_new_key(kd, role) for _ in range(root_keys if role == "root" else 1)]
        for s in signers[role]:
            root.add_key(s.public_key, role)
    root.roles["root"].threshold = root_threshold
    md = Metadata(root)
    _sign(md, signers["root"])
    _publish_root(kd, md)
    with kd.lock():
        from .signing import sign_targets

        sign_targets(kd, {}, now=now)
    return kd


def rotate(directory: Path, role: str, *, now: Optional[_dt.datetime] = None) -> Dict[str, Any]:
    """Replace every key of `role` with a new one: root N+1 lists the new key, signed by root N's threshold and by
    the new root keys; the old private keys are deleted. Devices take root N+1 with the next signed bundle."""
    if role not in ROLES:
        raise KeyError_(f"unknown role {role!r}; rotate one of {', '.join(ROLES)}")
    kd = KeyDir(Path(directory)).require()
    with kd.lock():
        old = kd.read("root.json")
        old_signers = kd.signers(old, "root")
        for other in ROLES:  # every key usable (present, 0600) before anything is written
            kd.signers(old, other)
        new = kd.read("root.json")
        retired = list(new.signed.roles[role].keyids)
        fresh = [_new_key(kd, role) for _ in retired]
        for keyid in retired:
            new.signed.revoke_key(keyid, role)
        for s in fresh:
            new.signed.add_key(s.public_key, role)
        new.signed.version += 1
        new.signed.expires = expiry("root", now)
        _sign(new, old_signers + ([s for s in fresh] if role == "root" else kd.signers(new, "root")))
        _publish_root(kd, new)
        for keyid in retired:
            kd.key_path(role, keyid).unlink(missing_ok=True)
        from .signing import sign_targets

        sign_targets(kd, {}, now=now)  # the other roles signed again under the new root
    return {"role": role, "root_version": new.signed.version, "revoked": [k[:12] for k in retired],
            "new": [s.public_key.keyid[:12] for s in fresh]}


def listing(directory: Path) -> Dict[str, Any]:
    """Roles with their keys (and whether each private key is here), thresholds, versions, expiry; trust root."""
    kd = KeyDir(Path(directory)).require()
    root = kd.read("root.json")
    roles = []
    for role in ROLES:
        md = root if role == "root" else kd.read(f"{role}.json")
        r = root.signed.roles[role]
        roles.append({"role": role, "threshold": r.threshold, "version": md.signed.version,
                      "expires": md.signed.expires.isoformat(),
                      "keys": [{"keyid": k, "type": root.signed.keys[k].keytype,
                                "private_here": kd.key_path(role, k).is_file()} for k in r.keyids]})
    return {"dir": str(kd.path), "trust_root": str(kd.trust_root), "root_version": root.signed.version,
            "roles": roles}
