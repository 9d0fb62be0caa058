"""A bundle as parts: its manifest names every file by digest and size, and each file travels and is stored once.

The bundle's identity is the digest of its canonical manifest (`Bundle.manifest_digest`). The agent's store holds
the manifest and every part as blobs by digest (device_agent/store.py), so a part two bundles share (an unchanged
backbone tensor, the same reference data) is received and kept once. `assemble` makes the bundle directory from
the store by hard links (a copy where the file system refuses one), each part checked against its digest first;
a part that changed at rest is removed from the store and the build fails with DATA_LOSS, so the host sends that
part again. Archives of the bundle (`deploy compile -o`, hosts before parts) are still stored and unpacked whole.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, List

from .bundle import Bundle
from .errors import DataLoss, NotFound
from .fileio import fsync_dir, place_dir, sha256_file
from .manifest import MANIFEST_NAME, FileEntry, Manifest
from .store import Store

#: How many digests one FindMissingBlobs call may ask about (a bundle has at most MAX_ARCHIVE_MEMBERS files).
MAX_FIND_DIGESTS = 20_000


def file_entries(bundle_dir: Path) -> List[FileEntry]:
    """(path, digest, size) of every file of a bundle directory besides the manifest, sorted by path."""
    root = Path(bundle_dir)
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != MANIFEST_NAME:
            out.append(FileEntry(rel, sha256_file(p), p.stat().st_size))
    return sorted(out, key=lambda e: e.path)


def is_manifest_blob(path: Path) -> bool:
    """A stored manifest (JSON, starts with '{') rather than a bundle archive (tar, starts with a member name)."""
    with open(path, "rb") as f:
        return f.read(1) == b"{"


def manifest_parts(manifest: Manifest) -> List[str]:
    """The part digests a manifest names, each once."""
    return sorted({digest for _path, digest in manifest.files()})


def read_stored_manifest(store: Store, digest: str) -> Manifest:
    path = store.path_of(digest)
    if path is None:
        raise NotFound(f"bundle {digest} is not on this agent; upload it first (deploy push)")
    return Manifest.from_json(path.read_bytes())


def missing(store: Store, digests: Iterable[str]) -> List[str]:
    """The digests of `digests` the store holds no complete blob of, in the order asked."""
    return [d for d in digests if store.path_of(d) is None]


def assemble(store: Store, digest: str, dest: Path) -> Path:
    """The bundle directory of stored manifest `digest` at `dest`: complete and checked, or absent."""
    manifest = read_stored_manifest(store, digest)
    lacking = missing(store, manifest_parts(manifest))
    if lacking:
        raise NotFound(f"bundle {digest[:19]}... lacks {len(lacking)} of its parts on this agent (first "
                       f"{lacking[0][:19]}...); push it again, which sends only those")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        damaged = [(rel, part) for rel, part in manifest.files() if sha256_file(store.path_of(part)) != part]
        if damaged:
            for _rel, part in damaged:
                store.remove(part)
            rel, part = damaged[0]
            raise DataLoss(f"{len(damaged)} part(s) of bundle {digest[:19]}... changed on this device's disk (first "
                           f"{part[:19]}..., {rel}); removed from the store: push again (deploy push sends them)")
        for rel, part in manifest.files():
            blob = store.path_of(part)
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(blob, out)  # type: ignore[arg-type]
        shutil.copyfile(store.path_of(digest), tmp / MANIFEST_NAME)  # type: ignore[arg-type]
        Bundle.open(tmp)
        fsync_dir(tmp)
        return place_dir(tmp, dest, lambda d: (d / MANIFEST_NAME).is_file())  # or another request's, first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _link_or_copy(blob: Path, out: Path) -> None:
    """A hard link, so the part is stored once; a copy where the file system has none (EXDEV, EPERM, FAT)."""
    try:
        os.link(blob, out)
    except OSError:
        shutil.copyfile(blob, out)
