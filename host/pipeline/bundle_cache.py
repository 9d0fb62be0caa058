"""The host compile cache: bundles already compiled, keyed by model digest + target + options + compiler.

A second push of the same model to the same kind of device must not pay for TVM. Entries live in the user cache
dir under `bundles/<key>/` ({bundle/, bundle.tar, entry.json}); each is built in a temp dir beside it and renamed
into place whole, so a crash or Ctrl-C mid-compile leaves nothing a later lookup would take for an entry. A per-key
file lock makes two concurrent pushes compile once.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional

from filelock import FileLock

from host.client.digests import digest_of
from host.client.local import cache_dir
from host.compiler.options import CompileOptions

SCHEMA = 1
MAX_ENTRIES = 32
LOCK_TIMEOUT_S = 3600.0
_ENTRY = "entry.json"


@dataclass
class CachedBundle:
    """A compiled bundle on the host: the directory, its archive and the archive's digest (the bundle digest)."""

    key: str
    bundle_dir: Path
    archive: Path
    digest: str
    hit: bool
    compile_s: float = 0.0


def root() -> Path:
    return cache_dir() / "bundles"


def compiler_fingerprint() -> str:
    """Changes whenever the compiler's code or TVM changes, so stale bundles are never reused."""
    from importlib import metadata

    h = hashlib.sha256()
    here = Path(__file__).resolve().parent.parent
    sources = sorted((here / "compiler").rglob("*.py")) + [here.parent / "device_agent" / "bundle.py"]
    for path in sources:
        try:
            h.update(path.relative_to(here.parent).as_posix().encode() + b"\0" + path.read_bytes())
        except (OSError, ValueError):
            continue
    for dist in ("apache-tvm", "onnx"):
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=none".encode())
    return h.hexdigest()[:16]


def cache_key(model_digest: str, target: dict[str, Any], options: dict[str, Any]) -> str:
    doc = {"schema": SCHEMA, "model": model_digest, "target": target, "options": options,
           "compiler": compiler_fingerprint()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


#: `CompileOptions` fields the key does not take from the options: the target part holds them
_TARGET_FIELDS = ("profile", "trt_version", "compute_capability")


def options_key(options: CompileOptions) -> dict[str, Any]:
    """The options' part of the key: every `CompileOptions` field that is not the target's.

    fp16, input shapes, batch range, excluded ops and a digest of the sample inputs always (the key's shape since
    schema 1); INT8 and every other field only when set away from its default, so the keys of earlier compiles
    stay what they were while any option that changes the bundle still changes the key."""
    from host.pipeline.tensors import samples_digest

    key: dict[str, Any] = {"fp16": options.fp16,
                           "input_shapes": {k: list(v) for k, v in sorted(options.input_shapes.items())},
                           "batch": options.batch, "exclude_ops": sorted(options.exclude_ops),
                           "samples": samples_digest(options.sample_inputs)}
    if options.int8 is not None:
        from host.pipeline.int8 import int8_cache_part

        key["int8"] = int8_cache_part(options.int8)
    for f in fields(options):
        if f.name in key or f.name in _TARGET_FIELDS or f.name in ("sample_inputs", "int8"):
            continue
        value = getattr(options, f.name)
        if value != (f.default_factory() if f.default is MISSING else f.default):  # type: ignore[misc]
            key[f.name] = value
    return key


def lookup(key: str) -> Optional[CachedBundle]:
    """The entry when it is complete and its archive still has the recorded digest; a damaged one is dropped."""
    entry_dir = root() / key
    try:
        entry = json.loads((entry_dir / _ENTRY).read_text())
        archive = entry_dir / entry["archive"]
        bundle_dir = entry_dir / entry["bundle_dir"]
        digest = str(entry["digest"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not archive.is_file() or not (bundle_dir / "manifest.json").is_file() or digest_of(archive) != digest:
        shutil.rmtree(entry_dir, ignore_errors=True)
        return None
    os.utime(entry_dir / _ENTRY)  # last use, for pruning
    return CachedBundle(key, bundle_dir, archive, digest, hit=True)


CompileFn = Callable[[Path], tuple[Path, Path, str]]


def get_or_compile(key: str, compile_into: CompileFn, meta: Optional[dict[str, Any]] = None) -> CachedBundle:
    """Return the cached bundle for `key`, or run `compile_into(tmp_dir) -> (bundle_dir, archive, digest)`
    and commit its output atomically."""
    found = lookup(key)
    if found:
        return found
    base = root()
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / f".{key}.lock"), timeout=LOCK_TIMEOUT_S):
        found = lookup(key)  # another process compiled it while we waited
        if found:
            return found
        started = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=base))
        try:
            bundle_dir, archive, digest = compile_into(tmp)
            entry = {"schema": SCHEMA, "digest": digest, "archive": archive.relative_to(tmp).as_posix(),
                     "bundle_dir": bundle_dir.relative_to(tmp).as_posix(), "created": time.time(),
                     **(meta or {})}
            (tmp / _ENTRY).write_text(json.dumps(entry, sort_keys=True))
            final = base / key
            if final.exists():
                shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    elapsed = time.perf_counter() - started
    archive = final / entry["archive"]
    digest_of(archive)  # remember the digest under the final path, so the next lookup does not re-hash
    prune()
    return CachedBundle(key, final / entry["bundle_dir"], archive, digest, hit=False, compile_s=elapsed)


def entries() -> list[dict[str, Any]]:
    out = []
    base = root()
    if not base.is_dir():
        return out
    for entry_dir in base.iterdir():
        path = entry_dir / _ENTRY
        try:
            data = json.loads(path.read_text())
            size = sum(p.stat().st_size for p in entry_dir.rglob("*") if p.is_file())
            out.append({**data, "key": entry_dir.name, "bytes": size, "last_used": path.stat().st_mtime})
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda e: e["last_used"], reverse=True)


def prune(max_entries: int = MAX_ENTRIES) -> list[str]:
    """Keep the `max_entries` most recently used bundles; also clear temp dirs older than a day."""
    removed = []
    for entry in entries()[max_entries:]:
        shutil.rmtree(root() / entry["key"], ignore_errors=True)
        removed.append(entry["key"])
    archives = sorted((root() / "archives").glob("*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in archives[max_entries:]:  # archives of given bundle directories (push BUNDLE_DIR)
        stale.unlink(missing_ok=True)
    now = time.time()
    for tmp in root().glob(".tmp-*"):
        try:
            if now - tmp.stat().st_mtime > 86400:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            continue
    return removed
