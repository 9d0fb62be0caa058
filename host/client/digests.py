"""Remembered sha256 digests of local files, keyed by path, size, mtime and inode.

Re-sending a file the agent already has must cost one query, not a re-hash of hundreds of megabytes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from filelock import FileLock

from device_agent.fileio import atomic_write, sha256_file as hash_file

from .local import cache_dir

MAX_ENTRIES = 2000


def _db_path() -> Path:
    return cache_dir() / "digests.json"


def _key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


def _load() -> dict[str, str]:
    try:
        data = json.loads(_db_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def cached_digest(path: Path) -> Optional[str]:
    return _load().get(_key(path))


def digest_of(path: Path) -> str:
    """sha256 of the file, from the remembered table when the file has not changed."""
    path = Path(path)
    key = _key(path)
    known = _load().get(key)
    if known:
        return known
    digest = hash_file(path)
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / "digests.lock"), timeout=10):
        table = _load()
        table[key] = digest
        if len(table) > MAX_ENTRIES:
            table = dict(list(table.items())[-MAX_ENTRIES:])
        atomic_write(_db_path(), json.dumps(table).encode())
    return digest
