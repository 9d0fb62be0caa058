"""TensorRT timing caches, one per device class: ``timing/<class-digest>.cache`` plus ``.json`` facts.

A timing cache records which tactic was fastest for each layer on one GPU with one TensorRT; it is only
valid within the class an engine is (DEVICE_CLASS_FIELDS), so each class has its own file and a cache
from another class is refused rather than silently ignored. The agent treats the bytes as opaque: only
TensorRT-family builds load them (engines/tensorrt.py); onnxruntime has no timing cache.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional

from device_agent.cache import DEVICE_CLASS_FIELDS, canonical_json, device_class
from device_agent.errors import DataLoss, InvalidInput, PreconditionFailed, ResourceExhausted
from device_agent.fileio import atomic_file, atomic_write, is_disk_full, sha256_file

#: A TensorRT timing cache is kilobytes to a few MiB; this bounds a put.
MAX_TIMING_CACHE_BYTES = 64 * 1024 * 1024


def class_facts(parts: Mapping[str, object]) -> Dict[str, str]:
    return {f: str(parts.get(f, "")) for f in DEVICE_CLASS_FIELDS}


def class_digest(facts: Mapping[str, str]) -> str:
    """Short, stable name of a class: sha256 over the canonical JSON of its facts, 16 hex digits."""
    return hashlib.sha256(canonical_json(class_facts(facts))).hexdigest()[:16]


@dataclass
class TimingCacheInfo:
    facts: Dict[str, str]
    size: int
    digest: str
    updated: float
    path: Path

    @property
    def device_class(self) -> str:
        return device_class(self.facts)

    @property
    def class_digest(self) -> str:
        return class_digest(self.facts)


class TimingCaches:
    """The directory of per-class timing caches; every write is atomic (temp, fsync, rename, fsync dir)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, facts: Mapping[str, str]) -> Path:
        """The class's cache file, with its facts sidecar written first so a listing can name the class."""
        facts = class_facts(facts)
        self.root.mkdir(parents=True, exist_ok=True)
        name = class_digest(facts)
        sidecar = self.root / f"{name}.json"
        if not sidecar.is_file():
            atomic_write(sidecar, canonical_json(facts))
        return self.root / f"{name}.cache"

    def info(self, facts: Mapping[str, str]) -> Optional[TimingCacheInfo]:
        path = self.root / f"{class_digest(facts)}.cache"
        return self._info(path, class_facts(facts))

    @staticmethod
    def _info(path: Path, facts: Dict[str, str]) -> Optional[TimingCacheInfo]:
        try:
            st = path.stat()
            digest = sha256_file(path)
        except FileNotFoundError:
            return None
        return TimingCacheInfo(facts, st.st_size, digest, st.st_mtime, path)

    def list(self) -> List[TimingCacheInfo]:
        out: List[TimingCacheInfo] = []
        if not self.root.is_dir():
            return out
        for path in sorted(self.root.glob("*.cache")):
            try:
                facts = json.loads((path.with_suffix(".json")).read_text())
            except (OSError, ValueError):
                continue  # no sidecar: not one of ours (or mid-write); never listed under a guessed class
            found = self._info(path, class_facts(facts))
            if found is not None:
                out.append(found)
        return out

    @staticmethod
    def check(facts: Mapping[str, str], mine: Mapping[str, str], size: int, digest: str) -> None:
        """What a put refuses before any byte: another class than this agent's, too large, no digest.

        TimingCachePut and a registry Pull both call it (the Pull before it fetches the layer)."""
        facts, mine = class_facts(facts), class_facts(mine)
        if facts != mine:
            raise PreconditionFailed(f"timing cache is for class {device_class(facts)}; this agent is "
                                     f"{device_class(mine)}; put it only on devices of its own class")
        if size > MAX_TIMING_CACHE_BYTES:
            raise ResourceExhausted(f"timing cache of {size} bytes is above the limit of {MAX_TIMING_CACHE_BYTES}")
        if not digest.startswith("sha256:"):
            raise InvalidInput("timing cache info lacks its digest ('sha256:<hex>'); fetch it with TimingCacheFetch")

    def put(self, facts: Mapping[str, str], mine: Mapping[str, str], chunks: Iterable[bytes], size: int,
            digest: str) -> "tuple[TimingCacheInfo, bool]":
        """Store a class's cache from a stream, refused unless the class is this agent's and the digest holds."""
        self.check(facts, mine, size, digest)
        facts = class_facts(facts)
        path = self.path_for(facts)
        have = self._info(path, facts)
        if have is not None and have.digest == digest:
            for _ in chunks:  # drain: the client streams regardless
                pass
            return have, True
        h = hashlib.sha256()
        got = 0
        try:
            with atomic_file(path) as f:  # an exception below leaves the old cache (or none) in place
                for chunk in chunks:
                    got += len(chunk)
                    if got > size:
                        raise InvalidInput(f"timing cache stream is longer than the {size} bytes announced")
                    h.update(chunk)
                    f.write(chunk)
                if got != size or "sha256:" + h.hexdigest() != digest:
                    raise DataLoss(f"timing cache arrived as {got} bytes with digest sha256:{h.hexdigest()}; "
                                   f"expected {size} bytes with {digest}; nothing was stored, send it again")
        except OSError as exc:
            if is_disk_full(exc):
                raise ResourceExhausted(f"disk full writing the timing cache under {self.root}; free space") from None
            raise
        info = self._info(path, facts)
        assert info is not None
        return info, False


def build_note(info: Optional[TimingCacheInfo], backend: str, tensorrt_family: bool) -> str:
    """What a build says about its class's timing cache; true for every backend."""
    if info is None:
        return "none for this class" + ("; this build writes one" if tensorrt_family else "")
    if tensorrt_family:
        return f"present ({info.digest}); loaded by this {backend} build"
    return f"present ({info.digest}); used by tensorrt builds, {backend} has none"


__all__ = ["MAX_TIMING_CACHE_BYTES", "TimingCacheInfo", "TimingCaches", "build_note", "class_digest",
           "class_facts"]
