"""The engine cache on a real directory: keys, atomic commits, digest checks, LRU pruning, one build per key."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from device_agent.cache import DEVICE_CLASS_FIELDS, EngineCache, cache_key
from device_agent.errors import DataLoss, InvalidInput, NotFound, PreconditionFailed

REPO = Path(__file__).resolve().parents[2]


def parts(**over):
    base = {"schema": 1, "segment": "sha256:" + "a" * 64, "backend": "onnxruntime", "backend_version": "1.32.0",
            "gpu": "", "cc": "", "l4t": "", "arch": "x86_64", "precision": "fp32", "workspace": 1 << 30,
            "profiles": [], "flags": []}
    base.update(over)
    return base


@pytest.mark.parametrize("field, value", [
    ("precision", "fp16"), ("profiles", [[{"name": "x", "min": [1], "opt": [4], "max": [8]}]]),
    ("backend_version", "1.32.1"), ("backend", "tensorrt"), ("workspace", 1 << 28), ("cc", "8.7"),
    ("gpu", "Orin"), ("l4t", "36.3.0"), ("flags", ["SPARSE_WEIGHTS"]), ("segment", "sha256:" + "b" * 64),
])
def test_key_changes_with_every_part(field, value):
    assert cache_key(parts(**{field: value})) != cache_key(parts())


def test_key_ignores_dict_order_and_refuses_missing_parts():
    p = parts()
    assert cache_key(dict(reversed(list(p.items())))) == cache_key(p)
    p.pop("l4t")
    with pytest.raises(InvalidInput, match="l4t"):
        cache_key(p)


def test_put_then_read_returns_the_same_bytes(tmp_path):
    cache = EngineCache(tmp_path)
    entry = cache.put(parts(), b"plan-bytes")
    got = cache.read(entry.key)
    assert got is not None and got[1] == b"plan-bytes"
    assert [e.key for e in cache.list()] == [entry.key]
    assert cache.list(segment_digest="sha256:" + "f" * 64) == []


def test_a_corrupted_plan_is_removed_never_returned(tmp_path):
    cache = EngineCache(tmp_path)
    entry = cache.put(parts(), b"A" * 1000)
    plan = entry.path / "plan"
    data = bytearray(plan.read_bytes())
    data[500] ^= 0xFF  # same size, different bytes: only the digest can tell
    plan.write_bytes(bytes(data))
    assert cache.read(entry.key) is None
    assert cache.get(entry.key) is None and not entry.path.exists()
    built = []
    _, plan_bytes, hit = cache.get_or_build(parts(), lambda: built.append(1) or b"A" * 1000)
    assert not hit and built == [1] and plan_bytes == b"A" * 1000


def test_full_cache_prunes_least_recently_used_first(tmp_path):
    cache = EngineCache(tmp_path, max_bytes=2500)
    keys = []
    for i in range(3):
        keys.append(cache.put(parts(segment=f"sha256:{i:064x}"), bytes([i]) * 1000).key)
        os.utime(cache.entries_dir / keys[-1] / "meta.json", (1000 + i, 1000 + i))
    # 3000 bytes > 2500: the first (oldest) went when the third arrived
    assert cache.get(keys[0]) is None and cache.get(keys[1]) and cache.get(keys[2])
    cache.read(keys[1])  # now keys[2] is the least recently used
    os.utime(cache.entries_dir / keys[2] / "meta.json", (1, 1))
    k3 = cache.put(parts(segment="sha256:" + "9" * 64), b"z" * 1000).key
    assert cache.get(keys[2]) is None and cache.get(keys[1]) and cache.get(k3)
    assert cache.total_bytes() <= 2500


def test_prune_by_key_by_size_and_all(tmp_path):
    cache = EngineCache(tmp_path)
    keys = [cache.put(parts(segment=f"sha256:{i:064x}"), b"x" * 100).key for i in range(4)]
    removed, freed = cache.prune(keys=[keys[0]])
    assert removed == [keys[0]] and freed == 100
    with pytest.raises(NotFound, match="ListEngines"):
        cache.prune(keys=[keys[0]])
    removed, _ = cache.prune(max_bytes=200)
    assert len(removed) == 1 and cache.total_bytes() == 200
    removed, freed = cache.prune(all=True)
    assert len(removed) == 2 and freed == 200 and cache.list() == []


def test_import_refuses_another_device_class(tmp_path):
    cache = EngineCache(tmp_path)
    p = parts(backend="tensorrt", backend_version="10.3.0", gpu="Orin", cc="8.7", l4t="36.3.0", arch="aarch64")
    plan = b"engine"
    from device_agent.cache import sha256_digest

    here = {f: p[f] for f in DEVICE_CLASS_FIELDS}
    entry, present = cache.put_external(cache_key(p), p, plan, sha256_digest(plan), here)
    assert not present and cache.read(entry.key)[1] == plan
    other = dict(here, cc="7.2", backend_version="8.5.2")
    with pytest.raises(PreconditionFailed, match=r"cc: entry '8.7', this agent '7.2'"):
        cache.put_external(cache_key(p), p, plan, sha256_digest(plan), other)
    with pytest.raises(DataLoss, match="send it again"):
        cache.put_external(cache_key(p), p, plan + b"!", sha256_digest(plan), here)
    with pytest.raises(InvalidInput, match="does not match its parts"):
        cache.put_external("0" * 64, p, plan, sha256_digest(plan), here)
    assert cache.put_external(cache_key(p), p, plan, sha256_digest(plan), here)[1] is True


def test_concurrent_builds_of_one_key_build_once(tmp_path):
    cache = EngineCache(tmp_path)
    calls = []

    def build():
        calls.append(threading.get_ident())
        time.sleep(0.3)
        return b"built once"

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_build(parts(), build)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(hit for _, _, hit in results) == [False, True, True, True]
    assert {plan for _, plan, _ in results} == {b"built once"}


def test_writer_killed_at_any_moment_leaves_only_valid_entries(tmp_path):
    """SIGKILL a process that keeps writing 40 MB plans: every entry a new cache sees reads back whole."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from device_agent.cache import EngineCache
        cache = EngineCache({str(tmp_path)!r})
        base = {parts()!r}
        for i in range(1000):
            cache.put(dict(base, segment="sha256:%064x" % i), bytes([i % 251]) * (40 << 20))
            print("put", i, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"put 0")
    time.sleep(0.15)  # somewhere inside a later put
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    leftovers = list((tmp_path / "tmp").iterdir())
    cache = EngineCache(tmp_path)
    entries = cache.list()
    assert entries, "the first put was committed"
    for e in entries:
        found = cache.read(e.key)
        assert found is not None and len(found[1]) == 40 << 20
    assert list((tmp_path / "tmp").iterdir()) == []  # the killed writer's temp files are gone
    print("temp dirs left by the kill:", leftovers)


def test_check_skips_rehashing_only_an_unchanged_plan(tmp_path):
    cache = EngineCache(tmp_path)
    entry = cache.put(parts(), b"B" * 4096)
    assert cache.check(entry.key) is not None  # written here: known good
    plan = entry.path / "plan"
    data = bytearray(plan.read_bytes())
    data[0] ^= 1
    time.sleep(0.01)
    plan.write_bytes(bytes(data))  # rewritten in place: new mtime, so check hashes again
    assert cache.check(entry.key) is None and cache.get(entry.key) is None
    # a fresh process (new cache object) always hashes before its first hit
    entry = cache.put(parts(), b"C" * 4096)
    assert EngineCache(tmp_path).check(entry.key) is not None
