"""The bundle archive: a deterministic, uncompressed tar of a bundle directory, and its safe unpacking.

The archive's ``"sha256:" + hex`` is the bundle digest the agent's store keys on (bundles before parts, and
``deploy compile -o``). Unpacking refuses links, devices, paths that leave the bundle, duplicate or conflicting
members and archives beyond the bounds, and says when the disk is too small before a byte is written.

stdlib only; Python >= 3.9.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import List, Tuple, Union

from device_agent.bundle import Bundle
from device_agent.errors import InvalidInput, ResourceExhausted
from device_agent.fileio import atomic_file, is_disk_full, place_dir, sha256_file
from device_agent.manifest import (
    MANIFEST_NAME, MAX_ARCHIVE_BYTES, MAX_ARCHIVE_MEMBERS, MAX_MANIFEST_BYTES, Manifest, check_relpath,
)

_CHUNK = 1 << 20


def _archive_members(root: Path) -> List[Tuple[str, Path]]:
    members = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink() or not (p.is_file() or p.is_dir()):
                raise InvalidInput(f"bundle member {rel} is not a regular file or directory")
            members.append((rel, p))
    members.sort(key=lambda m: m[0])
    return members


def write_archive(bundle_dir: Union[str, os.PathLike], archive_path: Union[str, os.PathLike]) -> str:
    """Write a deterministic uncompressed tar of ``bundle_dir``; return its digest."""
    root = Path(bundle_dir)
    Bundle.open(root)  # only archive something that is a bundle
    archive_path = Path(archive_path)
    if root.resolve() in archive_path.resolve().parents:
        raise InvalidInput(f"archive {archive_path} must not be written inside the bundle directory {root}")
    with atomic_file(archive_path) as raw:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for rel, p in _archive_members(root):
                info = tarfile.TarInfo(rel)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if p.is_dir():
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
                else:
                    info.type = tarfile.REGTYPE
                    info.mode = 0o644
                    info.size = p.stat().st_size
                    with open(p, "rb") as f:
                        tar.addfile(info, f)
    return archive_digest(archive_path)


def archive_digest(path: Union[str, os.PathLike]) -> str:
    return sha256_file(path)


def _check_member(m: tarfile.TarInfo, seen: set) -> str:
    name = m.name
    if name.endswith("/"):
        name = name.rstrip("/")
    if not (m.isreg() or m.isdir()):
        raise InvalidInput(f"bundle archive member {name!r} is not a regular file or directory "
                           "(links and devices are refused)")
    try:
        rel = check_relpath(name, "archive member") if name != MANIFEST_NAME else name
    except InvalidInput:
        raise InvalidInput(f"bundle archive member {name!r} is an absolute path or leaves the bundle; refused") from None
    if rel in seen:
        raise InvalidInput(f"bundle archive holds {rel!r} twice; refused")
    seen.add(rel)
    return rel


def extract_archive(archive_path: Union[str, os.PathLike], dest_dir: Union[str, os.PathLike], *,
                    max_members: int = MAX_ARCHIVE_MEMBERS, max_bytes: int = MAX_ARCHIVE_BYTES,
                    verify_files: bool = True) -> Path:
    """Safely unpack a bundle archive; ``dest_dir`` appears complete and verified, or not at all.

    ``verify_files=False`` skips hashing each file against the manifest, for an archive whose members were
    already checked against it (device_agent/trust.py did, for this archive digest).

    If ``dest_dir`` already exists (another extraction of the same digest won), it is kept.
    """
    dest = Path(dest_dir)
    needed = total = written = 0
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    except OSError as exc:
        if is_disk_full(exc):
            raise _disk_full(dest, 0, 0) from None
        raise
    try:
        try:
            tar = tarfile.open(archive_path, mode="r:")
        except (tarfile.TarError, OSError) as e:
            raise InvalidInput(f"{archive_path} is not an uncompressed tar bundle archive: {e}") from None
        with tar:
            seen: set = set()
            count = 0
            try:
                needed = _unpacked_bytes(tar, max_members)  # headers only: tarfile seeks past the data
                # a plausible size (no more than the archive holds, within the bound) that does not fit: refused
                # before a byte is written; an implausible one is left to the checks below (INVALID_ARGUMENT)
                plausible = needed <= min(max_bytes, os.path.getsize(archive_path))
                if plausible and needed > _free_bytes(dest.parent):
                    raise _disk_full(dest, needed, 0)
                for m in tar:
                    count += 1
                    if count > max_members:
                        raise InvalidInput(f"bundle archive has more than {max_members} members; refused")
                    rel = _check_member(m, seen)
                    out = tmp / rel
                    if m.isdir():
                        out.mkdir(parents=True, exist_ok=True)
                        continue
                    total += m.size
                    if total > max_bytes:
                        raise InvalidInput(f"bundle archive unpacks to more than {max_bytes} bytes; refused")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(m)
                    if src is None:
                        raise InvalidInput(f"bundle archive member {rel!r} cannot be read")
                    with src, open(out, "wb") as f:
                        remaining = m.size
                        while remaining > 0:
                            chunk = src.read(min(_CHUNK, remaining))
                            if not chunk:
                                raise InvalidInput(f"bundle archive is truncated inside {rel!r}")
                            f.write(chunk)
                            written += len(chunk)
                            remaining -= len(chunk)
                    os.chmod(out, 0o644)
            except tarfile.TarError as e:
                raise InvalidInput(f"bundle archive {archive_path} is corrupt: {e}") from None
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                # e.g. a file "segments" and then "segments/x": members that contradict each other
                raise InvalidInput("bundle archive members conflict (a path is both a file and a directory); "
                                   "refused") from None
        bundle = Bundle.open(tmp)
        if verify_files:
            bundle.verify()
        return place_dir(tmp, dest, lambda d: (d / MANIFEST_NAME).is_file())  # or another extraction's, first
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):  # ENOSPC part-way (the space went to someone else): nothing of this one is left
            raise _disk_full(dest, needed, written) from None
        raise


def _unpacked_bytes(tar: tarfile.TarFile, max_members: int) -> int:
    """The bytes the regular members of `tar` unpack to (the first `max_members`; the loop refuses more)."""
    needed = 0
    for i, m in enumerate(tar):
        if i >= max_members:
            break
        if m.isreg():
            needed += m.size
    return needed


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def _disk_full(dest: Path, needed: int, written: int) -> ResourceExhausted:
    """RESOURCE_EXHAUSTED for a bundle that does not fit where it is unpacked, with the numbers and what to do."""
    try:
        free = _free_bytes(dest.parent)
    except OSError:
        free = -1
    at = f" (disk full after {written} bytes)" if written else ""
    return ResourceExhausted(
        f"disk full unpacking bundle {dest.name[:16]}... into {dest.parent}: it needs {needed or 'unknown'} "
        f"bytes, {free} bytes free{at}; nothing of it was kept; free disk space, remove old bundles "
        "(deploy store prune) or prune the engine cache (deploy cache prune), then build again")


def read_manifest_from_archive(archive_path: Union[str, os.PathLike]) -> Manifest:
    """The manifest of an archive without unpacking it (for inspect and the store)."""
    return Manifest.from_json(manifest_bytes_of_archive(archive_path))


def manifest_bytes_of_archive(archive_path: Union[str, os.PathLike]) -> bytes:
    """The exact bytes of an archive's manifest.json, unparsed (what signatures cover: device_agent/trust.py)."""
    try:
        with tarfile.open(archive_path, mode="r:") as tar:
            try:
                m = tar.getmember(MANIFEST_NAME)
            except KeyError:
                raise InvalidInput(f"{archive_path} holds no {MANIFEST_NAME}; not a bundle archive") from None
            if not m.isreg() or m.size > MAX_MANIFEST_BYTES:
                raise InvalidInput(f"{archive_path}: {MANIFEST_NAME} is not a regular file of bounded size")
            f = tar.extractfile(m)
            assert f is not None
            data = f.read()
    except (tarfile.TarError, OSError) as e:
        raise InvalidInput(f"{archive_path} is not an uncompressed tar bundle archive: {e}") from None
    return data
