"""Small file primitives every part shares: sha256 digests of files and bytes, durable writes."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]
_BUFSIZE = 4 * 1024 * 1024


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike, bufsize: int = _BUFSIZE) -> str:
    """`sha256:<hex>` of a file, read in blocks (hashlib releases the GIL on large blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(bufsize), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def fsync_dir(path: PathLike) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def publish(src: PathLike, dst: PathLike) -> None:
    """Rename a written and fsynced `src` to `dst`, then fsync the directories, so the commit survives a power cut.

    The order is the one the ALICE study (Pillai et al., OSDI 2014) shows file systems need: data durable first,
    then the rename, then the directory holding the new name (and the old one's, when they differ).
    """
    os.replace(src, dst)
    dst_dir = os.path.dirname(os.path.abspath(dst))
    src_dir = os.path.dirname(os.path.abspath(src))
    fsync_dir(dst_dir)
    if src_dir != dst_dir:
        fsync_dir(src_dir)


def atomic_write(path: PathLike, data: bytes) -> None:
    """Replace `path` with `data` whole or not at all: temp file beside it, fsync, rename, fsync the directory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write_synced(tmp, data)
        publish(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def is_disk_full(exc: BaseException) -> bool:
    import errno

    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
