"""Disk use of the agent's store: list and prune uploaded bundles, files and partial uploads (ListStore, PruneStore).

A Jetson Nano has 16 GB of eMMC and every pushed version of a model adds its bundle to the store and an unpacked
copy beside it; nothing else ever removes them. Pruning is least recently used first (a bundle is used when it
is stored or opened by Build, Run or Benchmark; a partial upload when it last received bytes), removes the
unpacked copy with the archive, and leaves alone an upload that is receiving bytes right now. Engines built from
a pruned bundle stay in the engine cache; the bundle is sent again by the next push.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Optional, Set

from protos import agent_pb2

from .errors import InvalidInput
from .store import Store, parse_digest


def _tree_bytes(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


class StoreUsage:
    def __init__(self, store: Store, unpacked: Optional[object] = None, unpacked_root: Optional[Path] = None,
                 pinned: Callable[[], Set[str]] = set) -> None:
        self.store = store
        self.pinned = pinned  # bundles of kept model versions (device_agent/models.py): never removed
        self.unpacked = unpacked  # device_agent.unpacked.UnpackedBundles, when the engine service runs
        self.unpacked_root = unpacked_root

    def _unpacked_dir(self, digest: str) -> Optional[Path]:
        return self.unpacked_root / parse_digest(digest) if self.unpacked_root is not None else None

    def _drop_unpacked(self, digest: str) -> None:
        if self.unpacked is not None:
            self.unpacked.forget(digest)  # type: ignore[attr-defined]
        elif (where := self._unpacked_dir(digest)) is not None:
            shutil.rmtree(where, ignore_errors=True)

    def entries(self) -> list[agent_pb2.StoreEntry]:
        out = []
        for digest, size, complete, used in self.store.entries():
            where = self._unpacked_dir(digest) if complete else None
            unpacked = _tree_bytes(where) if where is not None and where.is_dir() else 0
            out.append(agent_pb2.StoreEntry(digest=digest, size=size, complete=complete, last_used=used,
                                            unpacked_bytes=unpacked))
        out.sort(key=lambda e: (e.last_used, e.digest))
        return out

    def list(self) -> agent_pb2.ListStoreReply:
        entries = self.entries()
        return agent_pb2.ListStoreReply(entries=entries, total_bytes=sum(e.size + e.unpacked_bytes for e in entries),
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
        """Remove `candidates` in order (least recently used first) until `everything` fits `max_bytes`."""
        total = sum(e.size + e.unpacked_bytes for e in everything)
        reply = agent_pb2.PruneStoreReply()
        pinned = self.pinned()
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
            if e.complete:
                self._drop_unpacked(e.digest)
            reply.removed.append(e.digest)
            reply.freed_bytes += freed + e.unpacked_bytes
            total -= e.size + e.unpacked_bytes
        reply.total_bytes = max(0, total)
        return reply
