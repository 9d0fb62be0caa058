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
