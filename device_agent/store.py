"""Content-addressed artifact store: resumable, atomic, one copy per digest.

Bytes land in `partial/<hex>` as they arrive; only a verified file is renamed into `blobs/<hex>`, so a reader never
sees a partial or corrupt artifact. The size of the partial file is the committed offset an upload resumes from.
"""
from __future__ import annotations

import hashlib
import os
import queue
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Optional

from .errors import Aborted, DataLoss, InvalidInput, PreconditionFailed, ResourceExhausted, Unavailable
from .fileio import is_disk_full, publish

_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
DISK_MARGIN_BYTES = 64 * 1024 * 1024  # never fill the disk to the last byte (at most 5 % of a small disk)
#: An upload of a digest already being received waits while that one makes progress; this long without any
#: is a stalled sender (the agent's keepalive drops a vanished client within about 40 s): ABORTED, retry.
UPLOAD_STALL_S = 45.0
#: The writer thread must take each chunk within this; a disk that stops accepting writes fails the upload.
WRITE_STALL_S = 120.0


def parse_digest(digest: str) -> str:
    """Return the hex part of a `sha256:<hex>` digest; anything else is refused (it becomes a file name)."""
    m = _DIGEST.match(digest or "")
    if not m:
        raise InvalidInput(f"bad digest {digest[:80]!r}: expected 'sha256:' followed by 64 lowercase hex digits")
    return m.group(1)


def _prefix_hash(path: Path, length: int, bufsize: int = 4 * 1024 * 1024) -> "hashlib._Hash":
    """sha256 state over the first `length` bytes already committed, so a resumed upload hashes in one pass."""
    h = hashlib.sha256()
    if length == 0:
        return h
    with open(path, "rb") as f:
        remaining = length
        while remaining:
            block = f.read(min(bufsize, remaining))
            if not block:
                break
            h.update(block)
            remaining -= len(block)
    return h


class _Writer:
    """A bounded queue and one thread that writes and hashes chunks in order; errors surface on the next put."""

    def __init__(self, f: BinaryIO, hasher: "hashlib._Hash", depth: int = 8) -> None:
        self._f = f
        self._hasher = hasher
        self._queue: "queue.Queue[Optional[bytes]]" = queue.Queue(maxsize=depth)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            if self._error is not None:
                continue  # drain after a failure, so put() never blocks forever
            try:
                self._f.write(chunk)
                self._hasher.update(chunk)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the receiving thread
                self._error = exc

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        try:
            self._queue.put(chunk, timeout=WRITE_STALL_S)
        except queue.Full:
            raise Unavailable(f"the store's disk took no data for {WRITE_STALL_S:.0f} s; is it failing?") from None

    def close(self) -> None:
        if self._thread.is_alive():
            try:
                self._queue.put(None, timeout=WRITE_STALL_S)
            except queue.Full:
                raise Unavailable(f"the store's disk took no data for {WRITE_STALL_S:.0f} s; is it failing?") \
                    from None
            self._thread.join(WRITE_STALL_S)
        if self._error is not None:
            error, self._error = self._error, None
            raise error


@dataclass
class UploadResult:
    digest: str
    size: int
    bytes_received: int
    already_present: bool


@dataclass
class UploadState:
    digest: str
    complete: bool
    committed_offset: int
    size: int


class Store:
    """Artifacts by sha256 under one directory; safe for many concurrent uploads in one process."""

    def __init__(self, root: Path, max_upload_bytes: int, max_chunk_bytes: int) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.partial = self.root / "partial"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir(parents=True, exist_ok=True)
        self.max_upload_bytes = max_upload_bytes
        self.max_chunk_bytes = max_chunk_bytes
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, hex_digest: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(hex_digest, threading.Lock())

    def path_of(self, digest: str) -> Optional[Path]:
        """Path of a complete, verified artifact, or None."""
        path = self.blobs / parse_digest(digest)
        return path if path.is_file() else None

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def margin_bytes(self) -> int:
        return min(DISK_MARGIN_BYTES, shutil.disk_usage(self.root).total // 20)

    def _acquire(self, hex_digest: str, digest: str) -> threading.Lock:
        """The digest's lock; waits while another upload of it makes progress, ABORTED once it stalls."""
        lock = self._lock(hex_digest)
        part = self.partial / hex_digest
        last, since = -1, time.monotonic()
        while not lock.acquire(timeout=1.0):
            size = part.stat().st_size if part.is_file() else -1
            if size != last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since > UPLOAD_STALL_S:
                raise Aborted(f"another upload of {digest} has made no progress for {UPLOAD_STALL_S:.0f} s; "
                              "retry in a moment")
        return lock

    def query(self, digest: str) -> UploadState:
        hex_digest = parse_digest(digest)
        blob = self.blobs / hex_digest
        if blob.is_file():
            size = blob.stat().st_size
            return UploadState(digest, True, size, size)
        part = self.partial / hex_digest
        committed = part.stat().st_size if part.is_file() else 0
        return UploadState(digest, False, committed, 0)

    def entries(self) -> list[tuple[str, int, bool, float]]:
        """(digest, bytes, complete, last used) of every blob and partial upload."""
        out = []
        for folder, complete in ((self.blobs, True), (self.partial, False)):
            for p in folder.iterdir():
                try:
                    st = p.stat()
                except FileNotFoundError:  # removed meanwhile
                    continue
                out.append(("sha256:" + p.name, st.st_size, complete, st.st_mtime))
        return out

    def touch(self, digest: str) -> None:
        """Mark a stored artifact used now (its mtime), for least-recently-used pruning."""
        try:
            os.utime(self.blobs / parse_digest(digest))
        except OSError:
            pass

    def try_remove(self, digest: str) -> Optional[int]:
        """Remove blob and partial file unless an upload of it holds its lock now: the bytes freed, or None."""
        hex_digest = parse_digest(digest)
        lock = self._lock(hex_digest)
        if not lock.acquire(blocking=False):
            return None
        try:
            return self._unlink(hex_digest) or 0
        finally:
            lock.release()

    def _unlink(self, hex_digest: str) -> Optional[int]:
        """Delete the blob and partial file of a digest (caller holds its lock): bytes freed, None if neither was."""
        freed: Optional[int] = None
        for p in (self.blobs / hex_digest, self.partial / hex_digest):
            try:
                size = p.stat().st_size
                p.unlink()
            except FileNotFoundError:
                continue
            freed = (freed or 0) + size
        return freed

    def list(self) -> Iterator[tuple[str, int]]:
        for p in sorted(self.blobs.iterdir()):
            yield "sha256:" + p.name, p.stat().st_size

    def receive(self, digest: str, size: int, offset: int, chunks: Iterable[bytes],
                verify: Optional[Callable[[Path], None]] = None) -> UploadResult:
        """Append `chunks` at `offset` of the artifact's partial file, verify when complete, publish atomically.

        Concurrent calls for one digest run one after another; a later one finds the artifact present and
        consumes no payload. `verify` (the agent's signature check, device_agent/trust.py) sees the complete,
        digest-checked file before it is published; if it raises, the file is removed and nothing is stored.
        """
        hex_digest = parse_digest(digest)
        if size <= 0:
            raise InvalidInput(f"upload size must be positive, got {size}")
        if size > self.max_upload_bytes:
            raise ResourceExhausted(
                f"artifact of {size} bytes exceeds this agent's upload limit of {self.max_upload_bytes} bytes; "
                "raise --max-upload-bytes on the agent or send a smaller artifact")
        if offset < 0 or offset > size:
            raise InvalidInput(f"upload offset {offset} is outside the artifact's size {size}")
        lock = self._acquire(hex_digest, digest)
        try:
            return self._receive(digest, hex_digest, size, offset, chunks, verify)
        finally:
            lock.release()

    def _receive(self, digest: str, hex_digest: str, size: int, offset: int,
                 chunks: Iterable[bytes], verify: Optional[Callable[[Path], None]] = None) -> UploadResult:
        blob = self.blobs / hex_digest
        if blob.is_file():
            return UploadResult(digest, blob.stat().st_size, 0, True)
        part = self.partial / hex_digest
        committed = part.stat().st_size if part.is_file() else 0
        if offset > committed:
            raise PreconditionFailed(
                f"upload of {digest} resumes at offset {offset} but only {committed} bytes are committed; "
                "ask QueryUpload for the offset and resume from there")
        needed = size - offset
        free, margin = self.free_bytes(), self.margin_bytes()
        if needed + margin > free:
            raise ResourceExhausted(
                f"not enough free disk for {needed} more bytes in {self.root}: {free} bytes free, "
                f"{margin} kept in reserve; remove old bundles (deploy store prune), prune the engine cache "
                "(deploy cache prune) or free disk space")
        hasher = _prefix_hash(part, offset)
        try:
            received = self._append(part, offset, size, chunks, hasher)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            committed = part.stat().st_size if part.is_file() else 0
            raise ResourceExhausted(
                f"disk full in {self.root} after {committed} of {size} bytes of {digest} "
                f"({self.free_bytes()} bytes free); remove old bundles (deploy store prune), prune the engine "
                f"cache (deploy cache prune) or free disk space, then upload again: it resumes at byte {committed}") from None
        if part.stat().st_size != size:
            raise InvalidInput(
                f"upload of {digest} ended at {part.stat().st_size} of {size} bytes; "
                "resume from the committed offset")
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest:
            part.unlink(missing_ok=True)
            raise DataLoss(f"received bytes hash to {actual}, not the declared {digest}; nothing was stored, "
                           "upload again")
        if verify is not None:
            try:
                verify(part)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
        publish(part, blob)  # data fsynced by _append, then rename, then both directories fsynced
        return UploadResult(digest, size, received, False)

    def _append(self, part: Path, offset: int, size: int, chunks: Iterable[bytes], hasher: "hashlib._Hash") -> int:
        """Receive on this thread, write and hash on another: the network and the disk overlap."""
        received = 0
        with open(part, "ab") as f:
            f.truncate(offset)
            f.seek(offset)
            writer = _Writer(f, hasher)
            position = offset
            try:
                for chunk in chunks:
                    if not chunk:  # so the number of chunks is bounded by the declared size
                        raise InvalidInput("empty upload chunk; every chunk must carry bytes")
                    if len(chunk) > self.max_chunk_bytes:
                        raise InvalidInput(f"chunk of {len(chunk)} bytes exceeds the limit of "
                                           f"{self.max_chunk_bytes} bytes")
                    if position + len(chunk) > size:
                        writer.close()
                        f.truncate(offset)
                        raise InvalidInput(f"upload sends more than its declared size of {size} bytes")
                    writer.put(chunk)
                    position += len(chunk)
                    received += len(chunk)
            finally:
                # Whatever arrived intact is committed: a cut-off upload resumes from here.
                try:
                    writer.close()
                finally:
                    f.flush()
                    os.fsync(f.fileno())
        return received

    def remove(self, digest: str) -> bool:
        hex_digest = parse_digest(digest)
        lock = self._acquire(hex_digest, digest)
        try:
            return self._unlink(hex_digest) is not None
        finally:
            lock.release()
