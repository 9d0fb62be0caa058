"""Disk use of the agent's store: list and prune uploaded bundles, files and partial uploads (ListStore, PruneStore).

A Jetson Nano has 16 GB of eMMC and every pushed version of a model adds its bundle to the store and an unpacked
copy beside it; nothing else ever removes them. Pruning is least recently used first (a bundle is used when it
is stored or opened by Build, Run or Benchmark; a partial upload when it last received bytes), removes the
unpacked copy with the archive, and leaves alone an upload that is receiving bytes right now. Engines built from
a pruned bundle stay in the engine cache; the bundle is sent again by the next push.

A bundle that came by parts (device_agent/parts.py) is its manifest's blob: listed with the bytes of every part
it names, and removed with those of its parts that no remaining bundle names; a part any kept bundle names is
never removed. Parts no manifest names (a push cut off before its manifest arrived) are listed and pruned alone.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set

from protos import agent_pb2

from .errors import DeployError, InvalidInput
from .manifest import Manifest
from .parts import is_manifest_blob, manifest_parts
from .store import Store, parse_digest


def _tree_bytes(root: Path) -> int:
    """Bytes of the files under `root`; a file linked to a stored part (more than one link) is the part's."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if st.st_nlink == 1:
                total += st.st_size
    return total


def _manifests(store: Store, readable: Callable[[str], bool]) -> Dict[str, List[str]]:
    """Stored manifests (bundles by parts) and the part digests each names; with a trust root only the manifests
    this agent verified are read (an unverified one is an ordinary blob: nothing parses it)."""
    out: Dict[str, List[str]] = {}
    for digest, _size, complete, _used in store.entries():
        path = store.path_of(digest) if complete else None
        try:
            if path is not None and is_manifest_blob(path) and readable(digest):
                out[digest] = manifest_parts(Manifest.from_json(path.read_bytes()))
        except (OSError, DeployError):
            continue  # unreadable or invalid: an ordinary blob
    return out


class StoreUsage:
    def __init__(self, store: Store, unpacked: Optional[object] = None, unpacked_root: Optional[Path] = None,
                 pinned: Callable[[], Set[str]] = set, readable: Callable[[str], bool] = lambda _d: True) -> None:
        self.store = store
        self.readable = readable  # with a trust root (device_agent/trust.py): only verified manifests are parsed
        self.pinned = pinned  # bundles of kept model versions (device_agent/models.py): never removed
        self.unpacked = unpacked  # device_agent.unpacked.UnpackedBundles, when the engine service runs
        self.unpacked_root = unpacked_root
        self._parts: Dict[str, List[str]] = {}  # manifest -> its parts, as `entries` last found them
        self._blob_bytes = 0

    def _unpacked_dir(self, digest: str) -> Optional[Path]:
        return self.unpacked_root / parse_digest(digest) if self.unpacked_root is not None else None

    def _drop_unpacked(self, digest: str) -> None:
        if self.unpacked is not None:
            self.unpacked.forget(digest)  # type: ignore[attr-defined]
        elif (where := self._unpacked_dir(digest)) is not None:
            shutil.rmtree(where, ignore_errors=True)

    def entries(self) -> list[agent_pb2.StoreEntry]:
        """Bundles (archives, manifests with their parts), parts no manifest names, partial uploads."""
        self._parts = _manifests(self.store, self.readable)
        named = {p for parts in self._parts.values() for p in parts}
        blobs = {d: s for d, s, complete, _ in self.store.entries() if complete}
        self._blob_bytes = sum(blobs.values())
        out = []
        for digest, size, complete, used in self.store.entries():
            if complete and digest in named and digest not in self._parts:
                continue  # listed with the bundles that name it
            where = self._unpacked_dir(digest) if complete else None
            unpacked = _tree_bytes(where) if where is not None and where.is_dir() else 0
            parts = self._parts.get(digest, [])
            size += sum(blobs.get(p, 0) for p in parts)
            out.append(agent_pb2.StoreEntry(digest=digest, size=size, complete=complete, last_used=used,
                                            unpacked_bytes=unpacked, parts=len(parts)))
        out.sort(key=lambda e: (e.last_used, e.digest))
        return out

    def _total(self, entries: list) -> int:
        """Bytes on disk: every blob once (a part two bundles share counts once), partial uploads, unpacked copies."""
        return self._blob_bytes + sum((0 if e.complete else e.size) + e.unpacked_bytes for e in entries)

    def list(self) -> agent_pb2.ListStoreReply:
        entries = self.entries()
        return agent_pb2.ListStoreReply(entries=entries, total_bytes=self._total(entries),
                                        free_bytes=self.store.free_bytes())

    def prune(self, request: agent_pb2.PruneStoreRequest) -> agent_pb2.PruneStoreReply:
        max_bytes = request.max_bytes if request.HasField("max_bytes") else None
        if sum([max_bytes is not None, bool(request.digests), request.all]) != 1:
            raise InvalidInput("say what to prune from the store: exactly one of max_bytes, digests or all")
        entries = self.entries()
        for d in request.digests:
            parse_digest(d)  # a malformed digest is refused before anything is removed
        candidates = entries
        if request.digests:
            known = {e.digest for e in entries}
            missing = [d for d in request.digests if d not in known]
            if missing:
                raise InvalidInput(f"{missing[0]} is not in this agent's store; list it with `deploy store ls`")
            wanted = set(request.digests)
            candidates = [e for e in entries if e.digest in wanted]
        return self._remove(candidates, entries, max_bytes)

    def bound(self, max_bytes: int, keep: str) -> agent_pb2.PruneStoreReply:
        """--store-max-bytes after an upload: least recently used first, never `keep` (what just arrived)."""
        entries = self.entries()
        return self._remove([e for e in entries if e.digest != keep], entries, max_bytes)

    def _remove(self, candidates: list, everything: list, max_bytes: Optional[int]) -> agent_pb2.PruneStoreReply:
        """Remove `candidates` in order (least recently used first) until `everything` fits `max_bytes`; a
        bundle's parts go with it unless a remaining bundle names them."""
        total = self._total(everything)
        reply = agent_pb2.PruneStoreReply()
        pinned = self.pinned()
        remaining = dict(self._parts)
        for e in candidates:
            if max_bytes is not None and total <= max_bytes:
                break
            if e.digest in pinned:
                reply.kept.append(e.digest)
                continue
            freed = self.store.try_remove(e.digest)
            if freed is None:
                reply.busy.append(e.digest)
                continue
            parts = remaining.pop(e.digest, [])
            still = {p for named in remaining.values() for p in named}
            for part in parts:
                if part not in still:
                    freed += self.store.try_remove(part) or 0  # busy (being sent again right now): left
            if e.complete:
                self._drop_unpacked(e.digest)
            reply.removed.append(e.digest)
            reply.freed_bytes += freed + e.unpacked_bytes
            total -= freed + e.unpacked_bytes
        reply.total_bytes = max(0, total)
        return reply
