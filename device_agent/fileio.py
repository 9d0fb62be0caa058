"""Small file primitives every part shares: sha256 digests of files and bytes, durable writes."""
from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, Union

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


@contextlib.contextmanager
def atomic_file(path: PathLike, mode: Optional[int] = None) -> Iterator[BinaryIO]:
    """The one way a file appears whole or not at all: yields a temp file beside `path` to write; on a normal
    exit it is fsynced, renamed onto `path` and the directory fsynced (`publish`); on an exception it is removed
    and `path` is left as it was. The parent directory is created when missing.

    ``mode`` (e.g. 0o600 for a private key) is set on the temp file before any byte is written, so the data is
    never readable with wider rights; without it the file gets 0o666 less the umask, as ``open`` would give.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        if mode is not None:
            os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        with os.fdopen(fd, "wb") as f:
            fd = -1
            yield f
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def place_dir(tmp: Path, dest: Path, complete: Callable[[Path], bool]) -> Path:
    """Rename the finished directory `tmp` onto `dest`, so `dest` appears whole or not at all. When another writer
    placed `dest` first (the rename fails and `complete(dest)` holds), theirs is kept and `tmp` removed; any other
    failure is raised. The one way an unpacked or assembled bundle directory appears (archive.py, parts.py)."""
    try:
        os.rename(tmp, dest)
    except OSError:
        if not complete(dest):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def atomic_write(path: PathLike, data: bytes, mode: Optional[int] = None) -> None:
    """Replace `path` with `data` whole or not at all (`atomic_file`)."""
    with atomic_file(path, mode) as f:
        f.write(data)


def is_disk_full(exc: BaseException) -> bool:
    import errno

    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
