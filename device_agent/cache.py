"""The engine cache: one directory per key, committed by an atomic rename, verified on every read.

An entry is ``entries/<key>/{plan,meta.json}``; it is written whole under ``tmp/`` (each file
fsynced) and then renamed into place, so an agent killed mid-write leaves only a ``tmp/`` leftover
that no reader ever looks at. The meta file's mtime is the entry's last use (LRU pruning).
No pickle: metadata is JSON, plans are the backend's own bytes.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from device_agent.errors import (Aborted, DataLoss, InvalidInput, NotFound, PermissionDenied, PreconditionFailed,
                                  ResourceExhausted)
from device_agent.fileio import fsync_dir, is_disk_full, write_synced
from device_agent.fileio import sha256_bytes as sha256_digest

SCHEMA = 1
#: Key parts that say which devices a plan is valid for; an imported entry must match this agent on each.
DEVICE_CLASS_FIELDS = ("backend", "backend_version", "gpu", "cc", "l4t", "arch")
KEY_FIELDS = ("schema", "segment", *DEVICE_CLASS_FIELDS, "precision", "workspace", "profiles", "flags")
#: Key parts hashed only when present, so the keys of engines without them stay what they were.
OPTIONAL_KEY_FIELDS = ("calibration",)  # INT8: digest of the calibration samples behind the Q/DQ scales
_TMP_MAX_AGE_S = 3600.0
#: How long a Build waits for another build of the same key (the host waits as long: DEPLOY_BUILD_TIMEOUT_S,
#: host/pipeline/build_stream.py).
LOCK_WAIT_S = 3 * 3600.0


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def cache_key(parts: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON of exactly the key fields; a missing field is an error, not a default."""
    missing = [f for f in KEY_FIELDS if f not in parts]
    if missing:
        raise InvalidInput(f"engine key parts lack {missing}")
    fields = KEY_FIELDS + tuple(f for f in OPTIONAL_KEY_FIELDS if parts.get(f))
    return hashlib.sha256(canonical_json({f: parts[f] for f in fields})).hexdigest()


def device_class(parts: Mapping[str, Any]) -> str:
    return "|".join(f"{f}={parts.get(f, '')}" for f in DEVICE_CLASS_FIELDS)


@dataclass
class CacheEntry:
    key: str
    parts: Dict[str, Any]
    size: int
    digest: str
    created: float
    last_used: float
    path: Path = field(repr=False)

    @property
    def device_class(self) -> str:
        return device_class(self.parts)

    @property
    def segment_digest(self) -> str:
        return str(self.parts.get("segment", ""))


class EngineCache:
    """Content-keyed plans on disk, bounded in size, safe against concurrent builders and crashes."""

    def __init__(self, root: Path, max_bytes: int = 0) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)  # 0: unbounded
        self.entries_dir = self.root / "entries"
        self.tmp_dir = self.root / "tmp"
        self.locks_dir = self.root / "locks"
        for d in (self.entries_dir, self.tmp_dir, self.locks_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._mutex = threading.Lock()
        self.evictions = 0  # entries removed to stay within max_bytes (a metric: device_agent/metrics.py)
        #: keys no prune and no size bound removes: the engines of kept model versions (device_agent/models.py)
        self.pinned: Callable[[], Set[str]] = set
        # key -> (inode, size, mtime_ns) of a plan whose digest this process has checked or written
        self._verified: Dict[str, Tuple[int, int, int]] = {}
        #: device_agent/engine_seal.py, with a trust root: engines are signed as written, loaded only if sealed
        self.seal: Optional[Any] = None
        self._clean_tmp()

    # ---------------------------------------------------------------- reading
    def _meta(self, key: str) -> Optional[CacheEntry]:
        if not _is_key(key):
            return None
        d = self.entries_dir / key
        try:
            meta = json.loads((d / "meta.json").read_text())
            st = (d / "meta.json").stat()
            size = (d / "plan").stat().st_size
        except (OSError, ValueError):
            return None
        if meta.get("key") != key or meta.get("size") != size:
            return None
        return CacheEntry(key, dict(meta["parts"]), size, meta["digest"], float(meta["created"]),
                          st.st_mtime, d)

    def get(self, key: str) -> Optional[CacheEntry]:
        """The entry if it is complete on disk (the plan bytes are verified by ``read``)."""
        return self._meta(key)

    def _stamp(self, entry: CacheEntry) -> Optional[Tuple[int, int, int]]:
        try:
            st = (entry.path / "plan").stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def check(self, key: str) -> Optional[CacheEntry]:
        """The entry if valid, without re-hashing a plan this process already checked and that has not changed.

        For Build's cache hits (a 100 MB plan costs ~0.3 s to hash here); ``read``, which loading
        uses, always hashes, so a plan that rotted in place is still never loaded.
        """
        entry = self._meta(key)
        if entry is None:
            return None
        stamp = self._stamp(entry)
        if stamp is not None and self._verified.get(key) == stamp:
            self.touch(key)
            return entry
        found = self.read(key)
        return None if found is None else found[0]

    def read(self, key: str) -> Optional[Tuple[CacheEntry, bytes]]:
        """Plan bytes whose digest matches the entry; a mismatching entry is removed and None returned."""
        entry = self._meta(key)
        if entry is None:
            return None
        try:
            plan = (entry.path / "plan").read_bytes()
        except OSError:
            return None
        if sha256_digest(plan) != entry.digest:
            self._verified.pop(key, None)
            self.remove(key)
            return None
        if self.seal is not None and not self.seal.accepts(entry.path, key, entry.digest, entry.size):
            return None  # placed by hand or changed with its meta: never loaded (a Build writes it anew)
        stamp = self._stamp(entry)
        if stamp is not None:
            self._verified[key] = stamp
        self.touch(key)
        return entry, plan

    def touch(self, key: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.entries_dir / key / "meta.json")

    def list(self, segment_digest: str = "") -> List[CacheEntry]:
        out = []
        for d in self.entries_dir.iterdir():
            e = self._meta(d.name)
            if e is not None and (not segment_digest or e.segment_digest == segment_digest):
                out.append(e)
        return sorted(out, key=lambda e: e.last_used)

    def total_bytes(self) -> int:
        return sum(e.size for e in self.list())

    # ---------------------------------------------------------------- writing
    def put(self, parts: Mapping[str, Any], plan: bytes) -> CacheEntry:
        """Write an entry atomically (temp dir, fsync, rename), then prune to the size bound."""
        key = cache_key(parts)
        return self._commit(key, parts, lambda tmp: (write_synced(tmp / "plan", plan),
                                                      (len(plan), sha256_digest(plan)))[1], len(plan))

    def _commit(self, key: str, parts: Mapping[str, Any], write_plan: Callable[[Path], Tuple[int, str]],
                size_hint: int = 0, record: Optional[bytes] = None) -> CacheEntry:
        """`write_plan(tmp_dir)` writes and fsyncs `tmp_dir/plan`, returning (size, digest); the rest is atomic.

        Order of a commit (checked by tests/device_agent/test_commit_order.py): plan and meta.json fsynced, the
        temp dir fsynced, rename into entries/, entries/ and tmp/ fsynced. A full disk is RESOURCE_EXHAUSTED and
        leaves the cache as it was.
        """
        tmp = self.tmp_dir / f"{key}.{os.getpid()}.{threading.get_ident()}.{time.monotonic_ns()}"
        try:
            tmp.mkdir()
            size, digest = write_plan(tmp)
            meta = {"schema": SCHEMA, "key": key, "parts": dict(parts), "size": size, "digest": digest,
                    "created": time.time()}
            write_synced(tmp / "meta.json", canonical_json(meta))
            if self.seal is not None:  # the builder's record (engine_seal.py): ours, or the sender's, checked
                from .engine_seal import RECORD

                write_synced(tmp / RECORD, record if record is not None else self.seal.record(key, digest, size))
            fsync_dir(tmp)
            with self._mutex:
                final = self.entries_dir / key
                if final.exists():
                    shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
                fsync_dir(self.entries_dir)
                fsync_dir(self.tmp_dir)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            free = shutil.disk_usage(self.root).free
            raise ResourceExhausted(
                f"disk full writing engine {key[:16]}... ({size_hint or 'unknown'} bytes) into the engine cache "
                f"{self.root}: {free} bytes free, the cache holds {self.total_bytes()} bytes; prune it "
                "(deploy cache prune), remove old bundles (deploy store prune) or free disk space, then build again") from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        entry = self._meta(key)
        assert entry is not None
        stamp = self._stamp(entry)
        if stamp is not None:
            self._verified[key] = stamp
        if self.max_bytes:
            removed, _freed = self.prune(max_bytes=self.max_bytes, keep=(key,))
            self.evictions += len(removed)
        return entry

    def check_external(self, key: str, parts: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
        """An imported plan must be of this agent's device class and carry its own key."""
        wrong = [f"{f}: entry {parts.get(f, '')!r}, this agent {expected.get(f, '')!r}"
                 for f in DEVICE_CLASS_FIELDS if str(parts.get(f, "")) != str(expected.get(f, ""))]
        if wrong:
            raise PreconditionFailed("engine was built for another device class (" + "; ".join(wrong) +
                                     "); build it on this device or on one of its class")
        if cache_key(parts) != key:
            raise InvalidInput(f"engine key {key[:16]}... does not match its parts; re-export it")

    def put_external(self, key: str, parts: Mapping[str, Any], plan: bytes, digest: str,
                     expected: Mapping[str, Any]) -> Tuple[CacheEntry, bool]:
        """Import a plan built elsewhere: refused unless its device class is this agent's and its bytes check."""
        return self.put_external_stream(key, parts, [plan] if plan else [], len(plan), digest, expected)

    def put_external_stream(self, key: str, parts: Mapping[str, Any], chunks: Iterable[bytes], size: int,
                            digest: str, expected: Mapping[str, Any],
                            record: Optional[bytes] = None) -> Tuple[CacheEntry, bool]:
        """Import a streamed plan: written to disk and hashed as it arrives, never held whole in memory.

        Wrong size or digest is DATA_LOSS and leaves nothing. When a sound entry is already present the stream is
        still checked, but not written. With a seal, `record` is the builder's (checked by the caller); none is
        PERMISSION_DENIED, so an engine from elsewhere is never sealed as this agent's own.
        """
        self.check_external(key, parts, expected)
        if self.seal is not None and not record:
            self.seal.refusals[("engine", "unsigned")] += 1
            raise PermissionDenied(f"engine {key[:16]}... comes without its builder's signature; this agent takes "
                                   "only engines signed by the fleet agent that built them")
        existing = self.read(key)

        def receive(f: Optional[BinaryIO]) -> str:
            h = hashlib.sha256()
            received = 0
            for chunk in chunks:
                received += len(chunk)
                if received > size:
                    raise InvalidInput(f"engine data runs past its declared size of {size} bytes")
                if f is not None:
                    f.write(chunk)
                h.update(chunk)
            if received != size:
                raise DataLoss(f"engine data ended at {received} of {size} bytes; send it again")
            actual = "sha256:" + h.hexdigest()
            if actual != digest:
                raise DataLoss(f"engine {key[:16]}... arrived with digest {actual}, expected {digest}; "
                               "send it again")
            return actual

        if existing is not None:
            receive(None)
            return existing[0], True

        def write_plan(tmp: Path) -> Tuple[int, str]:
            with open(tmp / "plan", "wb") as f:
                actual = receive(f)
                f.flush()
                os.fsync(f.fileno())
            return size, actual

        return self._commit(key, parts, write_plan, size, record), False

    def remove(self, key: str) -> int:
        if not _is_key(key):
            return 0
        d = self.entries_dir / key
        size = 0
        with contextlib.suppress(OSError):
            size = (d / "plan").stat().st_size
        self._verified.pop(key, None)
        with self._mutex:
            # rename first so a reader never sees half a directory
            if not d.exists():
                return 0
            grave = self.tmp_dir / f"dead.{key}.{time.monotonic_ns()}"
            try:
                os.rename(d, grave)
            except OSError:
                return 0
        shutil.rmtree(grave, ignore_errors=True)
        return size

    def prune(self, max_bytes: Optional[int] = None, keys: Sequence[str] = (), all: bool = False,
              keep: Sequence[str] = ()) -> Tuple[List[str], int]:
        """Remove the named entries, or all, or least-recently-used ones until the total fits ``max_bytes``; never a
        pinned one (a kept model version's engine), nor those in `keep`."""
        removed: List[str] = []
        freed = 0
        for k in keys:
            if self._meta(k) is None:
                raise NotFound(f"no engine with key {k!r} in this cache; list them with ListEngines")
        pinned = self.pinned()
        keep = set(keep) | pinned
        targets = [e.key for e in self.list()] if all else list(keys)
        for k in targets:
            if k in pinned:
                continue
            size = self.remove(k)
            removed.append(k)
            freed += size
        if max_bytes is not None:
            entries = self.list()  # oldest use first
            total = sum(e.size for e in entries)
            for e in entries:
                if total <= max_bytes:
                    break
                if e.key in keep:
                    continue
                freed += self.remove(e.key)
                total -= e.size
                removed.append(e.key)
        return removed, freed

    # ---------------------------------------------------------------- building once
    @contextlib.contextmanager
    def lock(self, key: str, timeout: float = LOCK_WAIT_S) -> Iterator[None]:
        """Per-key lock across threads and processes (flock), so concurrent builds of one key build once;
        waiting more than `timeout` seconds for it is ABORTED."""
        if not _is_key(key):
            raise InvalidInput(f"bad engine key {key!r}")
        with open(self.locks_dir / f"{key}.lock", "a+b") as f:
            deadline = time.monotonic() + timeout
            pause = 0.005
            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise Aborted(f"another build of engine {key[:16]}... has held it for {timeout:.0f} s; "
                                      "retry later") from None
                    time.sleep(pause)
                    pause = min(0.2, pause * 2)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def get_or_build(self, parts: Mapping[str, Any],
                     build: Callable[[], bytes]) -> Tuple[CacheEntry, bytes, bool]:
        """(entry, plan, hit): the cached plan if valid, else ``build()`` once under the key's lock."""
        key = cache_key(parts)
        with self.lock(key):
            found = self.read(key)
            if found is not None:
                return found[0], found[1], True
            plan = build()
            return self.put(parts, plan), plan, False

    def _clean_tmp(self) -> None:
        """Drop leftovers of writers that died; a live writer's temp dir is recent and carries its pid."""
        now = time.time()
        for d in self.tmp_dir.iterdir():
            pid = _pid_of(d.name)
            alive = pid is not None and (pid == os.getpid() or _pid_alive(pid))
            with contextlib.suppress(OSError):
                if not alive or now - d.stat().st_mtime > _TMP_MAX_AGE_S:
                    shutil.rmtree(d, ignore_errors=True)


def _is_key(key: str) -> bool:
    return len(key) == 64 and all(c in "0123456789abcdef" for c in key)


def _pid_of(name: str) -> Optional[int]:
    bits = name.split(".")
    if len(bits) >= 2 and bits[1].isdigit():
        return int(bits[1])
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
