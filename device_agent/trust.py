"""Verifying what the fleet's keys vouch for, before any parser sees the bytes (`--trust-root FILE`).

A bundle arrives with TUF metadata (host/security/signing.py): root versions, timestamp, snapshot and targets;
targets names the bundle's manifest by hash and length, and the manifest pins every file. The agent runs the `tuf`
library's client (`tuf.ngclient.Updater`) on that metadata offline (a fetcher that serves the uploaded files), over
a copy of the metadata it trusts now, so TUF's own rules apply: signatures by the thresholds of the current root
(unknown or revoked keys fail), expiry, versions that never go back (replay), roots chained version by version
(rotation). Then the manifest's hash, then every archive member against the manifest. Only when all of it passes is
the copy made the trusted state (one symlink swap) and the bundle recorded as verified; a refusal leaves the device
as it was. `tuf`, `securesystemslib` and `cryptography` are optional: probed at start, needed only with a root.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import threading
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from .bounded_json import loads_bounded
from .errors import DeployError, InvalidInput, NotFound, PermissionDenied, PreconditionFailed
from .fileio import atomic_write, fsync_dir

log = logging.getLogger(__name__)
WIRE_FORMAT = "deploy-tuf/1"
TARGET_PREFIX = "manifests/"
MAX_WIRE_BYTES = 4 * 1024 * 1024
MAX_ROOT_BYTES = 512 * 1024
_BUF = 1 << 20


def probe() -> str:
    """"" when the libraries verification needs are importable, else the missing module's name."""
    for module in ("tuf.ngclient", "securesystemslib.signer", "cryptography"):
        try:
            __import__(module)
        except ImportError as exc:
            return exc.name or module
    return ""


def load(settings: Any) -> Optional["Trust"]:
    """The agent's trust, or None (signing off). A root without the libraries, or --require-signed without a
    root, is a start-up error in one line."""
    root = getattr(settings, "trust_root", None)
    if root is None:
        if getattr(settings, "require_signed", False):
            raise InvalidInput("--require-signed needs --trust-root FILE (the fleet's trust_root.json, which "
                               "`deploy keys ls` names and `deploy agent install` puts on the device)")
        return None
    missing = probe()
    if missing:
        raise InvalidInput(f"--trust-root {root} needs the tuf library, but {missing} is missing on this device; "
                           "install the agent's [trust] extra (pip install 'jetson-deploy[trust]')")
    return Trust(Path(root), Path(settings.data_dir) / "trust")


class _WireFetcher:
    """A tuf fetcher serving the metadata that came with the bundle; anything else is 404 (offline by design)."""

    def __new__(cls, files: Dict[str, bytes]) -> Any:
        from tuf.api.exceptions import DownloadHTTPError
        from tuf.ngclient.fetcher import FetcherInterface

        class Fetcher(FetcherInterface):
            def _fetch(self, url: str) -> Iterator[bytes]:
                name = url.rsplit("/", 1)[-1]
                if name not in files:
                    raise DownloadHTTPError(f"{name} is not in the bundle's signing metadata", 404)
                return iter([files[name]])

        return Fetcher()


def _is_manifest_blob(path: Path) -> bool:
    from .parts import is_manifest_blob  # a bundle by parts: its manifest is a blob of its own

    try:
        return is_manifest_blob(path)
    except OSError:
        return False


@dataclass
class Verified:
    """What a verification established, kept beside the store as the bundle's record."""

    digest: str
    manifest: str
    targets_version: int
    root_version: int


class Trust:
    """The trusted TUF state under `<data>/trust` and the records of verified bundles."""

    def __init__(self, root_file: Path, state: Path) -> None:
        try:
            self.root_bytes = root_file.read_bytes()[:MAX_ROOT_BYTES + 1]
        except OSError as exc:
            raise InvalidInput(f"--trust-root {root_file}: {exc.strerror or exc}") from None
        if len(self.root_bytes) > MAX_ROOT_BYTES:
            raise InvalidInput(f"--trust-root {root_file} is larger than {MAX_ROOT_BYTES} bytes; not a root.json")
        self.root_file = root_file
        self.state = state
        self.records = state / "bundles"
        self.records.mkdir(parents=True, exist_ok=True)
        self.refusals: Counter = Counter()  # (what, reason) -> count, for /metrics
        self._lock = threading.Lock()
        self.versions: Dict[str, int] = {}
        current = self.current.resolve() if self.current.exists() else None
        for stale in state.glob("m-*"):  # copies of a verification cut off by a crash or a kill
            if stale != current:
                shutil.rmtree(stale, ignore_errors=True)
        try:
            with self._updating() as updater:  # checks the root (self-signed by its threshold) and adopts it
                self._note_versions(updater)
        except DeployError:
            raise
        except Exception as exc:  # noqa: BLE001 - tuf's errors: the file is not a valid root
            raise InvalidInput(f"--trust-root {root_file} is not a valid TUF root: {type(exc).__name__}: {exc}") \
                from None

    # ------------------------------------------------------------------ state
    @property
    def current(self) -> Path:
        return self.state / "current"

    @contextmanager
    def _updating(self, files: Optional[Dict[str, bytes]] = None, *, refresh: bool = False) -> Iterator[Any]:
        """A tuf Updater over a copy of the trusted state; the copy becomes the state only if the body succeeds."""
        from tuf.ngclient import Updater

        work = self.state / f"m-{uuid.uuid4().hex[:12]}"
        if self.current.exists():
            shutil.copytree(self.current.resolve(), work, symlinks=True)
        else:
            work.mkdir(parents=True)
        try:
            updater = Updater(str(work), "mem:///", fetcher=_WireFetcher(files or {}), bootstrap=self.root_bytes)
            if refresh:
                updater.refresh()
            yield updater
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        self._commit(work)

    def _commit(self, work: Path) -> None:
        old = self.current.resolve() if self.current.exists() else None
        link = self.state / f".current-{uuid.uuid4().hex[:8]}"
        os.symlink(work.name, link)
        os.replace(link, self.current)
        fsync_dir(self.state)
        if old is not None and old != work:
            shutil.rmtree(old, ignore_errors=True)

    def _note_versions(self, updater: Any) -> None:
        ts = updater._trusted_set  # the versions now trusted, for GetInfo (tuf keeps no public accessor)
        self.versions = {"root": ts.root.version}
        for role in ("timestamp", "snapshot", "targets"):
            try:
                self.versions[role] = ts[role].version
            except KeyError:  # not loaded (at start): the version of the trusted file on disk
                path = self.current / f"{role}.json"
                if path.is_file():
                    try:
                        self.versions[role] = int(json.loads(path.read_bytes())["signed"]["version"])
                    except (OSError, ValueError, KeyError, TypeError):
                        pass

    def refuse(self, what: str, reason: str, exc: DeployError) -> DeployError:
        self.refusals[(what, reason)] += 1
        log.warning("refused %s (%s): %s", what, reason, exc)
        return exc

    # ------------------------------------------------------------------ bundles
    def verified(self, digest: str) -> bool:
        return (self.records / digest.split(":", 1)[-1]).is_file()

    def require(self, digest: str) -> None:
        """Before a stored bundle is unpacked: it must have been verified by this agent."""
        if not self.verified(digest):
            raise self.refuse("bundle", "unverified", PermissionDenied(
                f"bundle {digest[:19]}... on this agent was never verified against the fleet's signatures (it "
                "came before the trust root, or unsigned); push it again from a host with the fleet's keys"))

    def verify_bundle(self, digest: str, archive: Path, wire: bytes, store: Optional[Any] = None) -> Verified:
        """Verify `archive` (not yet published in the store) against `wire`; record it, or raise and change
        nothing. PERMISSION_DENIED: unsigned, bad or unknown signatures, a file that differs; FAILED_PRECONDITION:
        expired metadata, or metadata older than this device has seen. A bundle verified before has its files
        checked no more (its archive is content-addressed), but the metadata is: newer metadata, and a rotated
        root, are taken from any signed upload.

        `archive` may be a bundle's manifest blob (a bundle by parts, device_agent/parts.py): its bytes are then
        the signed target itself, and every part it pins must be in `store` (each was digest-checked on receipt;
        assembly links exactly those digests and checks them again), else NOT_FOUND and nothing recorded."""
        short = f"bundle {digest[:19]}..."
        if not wire:
            raise self.refuse("bundle", "unsigned", PermissionDenied(
                f"{short} is unsigned and this agent takes only bundles signed by the fleet's keys; make the keys "
                "with `deploy keys init` on the host and push again"))
        files, target = self._parse_wire(short, wire)
        from tuf.api import exceptions as tx

        with self._lock:
            try:
                with self._updating(files, refresh=True) as updater:
                    manifest = self._check_target(short, updater, target, archive)
                    if _is_manifest_blob(archive):
                        self._check_parts(short, manifest, store)
                    elif not self.verified(digest):
                        self._check_files(short, archive, manifest)
                    self._note_versions(updater)
            except tx.ExpiredMetadataError as exc:
                raise self.refuse("bundle", "expired", PreconditionFailed(
                    f"{short} refused: its signing metadata expired ({exc}); push again to sign it anew")) from None
            except tx.BadVersionNumberError as exc:
                raise self.refuse("bundle", "replay", PreconditionFailed(
                    f"{short} refused: its signing metadata is older than what this device has seen ({exc}); "
                    "old metadata offered as new is a replay: push again to sign it anew")) from None
            except tx.UnsignedMetadataError as exc:
                raise self.refuse("bundle", "bad_signature", PermissionDenied(
                    f"{short} refused: its metadata is not signed by the keys this device trusts ({exc}); an "
                    "unknown or revoked key, or another fleet's")) from None
            except (tx.RepositoryError, tx.DownloadError) as exc:
                raise self.refuse("bundle", "bad_metadata", PermissionDenied(
                    f"{short} refused: its signing metadata does not verify: {type(exc).__name__}: {exc}")) from None
            except PermissionDenied as exc:
                raise self.refuse("bundle", "tampered", exc) from None
            record = Verified(digest, target, self.versions.get("targets", 0), self.versions["root"])
            atomic_write(self.records / digest.split(":", 1)[-1], json.dumps(record.__dict__).encode())
        return record

    @staticmethod
    def _parse_wire(short: str, wire: bytes) -> Tuple[Dict[str, bytes], str]:
        bad = lambda why: PermissionDenied(f"{short} refused: its signing metadata is malformed ({why})")
        doc = loads_bounded(wire, MAX_WIRE_BYTES, bad)
        if not isinstance(doc, dict) or doc.get("format") != WIRE_FORMAT:
            raise bad(f"expected an object of format {WIRE_FORMAT!r}")
        meta, target = doc.get("metadata"), doc.get("target")
        if not isinstance(meta, dict) or not isinstance(target, str) or not target.startswith(TARGET_PREFIX):
            raise bad("no metadata files or no manifest target")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise bad("metadata files must be strings")
        return {k: v.encode() for k, v in meta.items()}, target

    @staticmethod
    def _check_target(short: str, updater: Any, target: str, archive: Path) -> bytes:
        """The manifest's bytes, once the signed targets vouch for exactly them."""
        from .archive import manifest_bytes_of_archive
        from .manifest import MAX_MANIFEST_BYTES

        try:
            if _is_manifest_blob(archive):  # by parts: the blob is the manifest, its digest the bundle's
                with open(archive, "rb") as f:
                    data = f.read(MAX_MANIFEST_BYTES + 1)
                data = b"" if len(data) > MAX_MANIFEST_BYTES else data
            else:
                data = manifest_bytes_of_archive(archive)
        except (InvalidInput, OSError):
            data = b""
        name = TARGET_PREFIX + hashlib.sha256(data).hexdigest()
        info = updater.get_targetinfo(name)
        if not data or name != target or info is None:
            raise PermissionDenied(f"{short} refused: its manifest is not one the fleet's keys signed (the "
                                   f"archive's manifest hashes to {name[len(TARGET_PREFIX):][:16]}..., the "
                                   f"metadata names {target[len(TARGET_PREFIX):][:16]}...)")
        from tuf.api.exceptions import LengthOrHashMismatchError

        try:
            info.verify_length_and_hashes(data)
        except LengthOrHashMismatchError as exc:
            raise PermissionDenied(f"{short} refused: its manifest differs from the signed one ({exc})") from None
        return data

    @staticmethod
    def _check_files(short: str, archive: Path, manifest_bytes: bytes) -> None:
        """Every member of the archive is the manifest or a file it pins, with the pinned digest; none missing."""
        from .manifest import MANIFEST_NAME, MAX_ARCHIVE_MEMBERS, Manifest

        pinned = dict(Manifest.from_json(manifest_bytes).files())  # signed bytes: safe to read now
        seen = set()
        try:
            with tarfile.open(archive, mode="r:") as tar:
                for i, m in enumerate(tar):
                    name = m.name.rstrip("/")
                    if i >= MAX_ARCHIVE_MEMBERS:
                        raise PermissionDenied(f"{short} refused: more than {MAX_ARCHIVE_MEMBERS} members")
                    if m.isdir() or name == MANIFEST_NAME:
                        continue
                    want = pinned.get(name)
                    if want is None or not m.isreg():
                        raise PermissionDenied(f"{short} refused: it holds {name!r}, which the signed manifest "
                                               "does not pin")
                    h = hashlib.sha256()
                    f = tar.extractfile(m)
                    while f is not None:
                        block = f.read(_BUF)
                        if not block:
                            break
                        h.update(block)
                    if "sha256:" + h.hexdigest() != want:
                        raise PermissionDenied(f"{short} refused: {name} differs from what the signed manifest "
                                               f"pins (sha256:{h.hexdigest()[:16]}..., signed {want[:23]}...)")
                    seen.add(name)
        except tarfile.TarError as exc:
            raise PermissionDenied(f"{short} refused: its archive cannot be read ({exc})") from None
        missing = sorted(set(pinned) - seen)
        if missing:
            raise PermissionDenied(f"{short} refused: {missing[0]}, pinned by the signed manifest, is missing")

    @staticmethod
    def _check_parts(short: str, manifest_bytes: bytes, store: Optional[Any]) -> None:
        """A bundle by parts: every part the signed manifest pins is in the store (content-addressed, its digest
        checked when it arrived), so the bundle assembled from them is the signed one."""
        from .manifest import Manifest
        from .parts import manifest_parts, missing

        if store is None:
            raise PermissionDenied(f"{short} refused: a manifest without a store of parts to check it against")
        lacking = missing(store, manifest_parts(Manifest.from_json(manifest_bytes)))  # signed bytes: safe to read
        if lacking:
            raise NotFound(f"{short} lacks {len(lacking)} of the parts its signed manifest pins (first "
                           f"{lacking[0][:19]}...); push it again, which sends them before the manifest")

    # ------------------------------------------------------------------ facts
    def describe(self) -> Dict[str, int]:
        return dict(self.versions)
