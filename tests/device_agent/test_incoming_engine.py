"""One check for an engine from elsewhere: PutEngine and the registry pull refuse the same things, in one place."""
from __future__ import annotations

import json

import pytest

from device_agent.cache import EngineCache, cache_key
from device_agent.errors import InvalidInput, PreconditionFailed, ResourceExhausted
from device_agent.incoming_engine import MAX_ENGINE_BYTES, EngineSource, check_incoming

MINE = {"backend": "onnxruntime", "backend_version": "1.0", "gpu": "", "cc": "", "l4t": "", "arch": "x86_64"}
SOURCE = EngineSource("engine entry", "attributes['parts']", "; export it with FetchEngine")


def parts(**changes):
    p = {"schema": 1, "segment": "sha256:" + "a" * 64, **MINE, "precision": "fp32", "workspace": 0,
         "profiles": [], "flags": []}
    p.update(changes)
    return p


def check(cache, raw, size=100, key=None):
    key = key if key is not None else cache_key(json.loads(raw)) if raw.startswith("{") else "k" * 64
    return check_incoming(key, raw, size, "sha256:" + "b" * 64, cache, lambda backend: dict(MINE), SOURCE)


def test_a_sound_entry_passes_with_this_agents_expected_parts(tmp_path):
    cache = EngineCache(tmp_path / "engines", 1 << 20)
    got = check(cache, json.dumps(parts()))
    assert got.parts == parts() and got.expected == MINE and got.size == 100


def test_sizes_outside_one_byte_to_the_cache_bound_are_refused_for_every_source(tmp_path):
    small = EngineCache(tmp_path / "small", 1 << 20)
    unbounded = EngineCache(tmp_path / "unbounded", 0)
    for cache, size in ((small, 0), (small, (1 << 20) + 1), (unbounded, MAX_ENGINE_BYTES + 1)):
        with pytest.raises(ResourceExhausted) as err:
            check(cache, json.dumps(parts()), size=size)
        assert f"engine entry of {size} bytes is outside this cache's limit" in str(err.value)


def test_missing_malformed_or_foreign_key_parts_are_refused_naming_what_is_wrong(tmp_path):
    cache = EngineCache(tmp_path / "engines", 1 << 20)
    with pytest.raises(InvalidInput, match=r"lacks its key parts \(attributes\['parts'\]\); export it with Fetch"):
        check(cache, "")
    with pytest.raises(InvalidInput, match="are not JSON"):
        check(cache, "not json")
    with pytest.raises(InvalidInput, match="must be a JSON object"):
        check(cache, "[1, 2]", key="k" * 64)
    with pytest.raises(PreconditionFailed, match="another device class"):
        check(cache, json.dumps(parts(arch="aarch64")))
    with pytest.raises(InvalidInput, match="does not match its parts"):
        check(cache, json.dumps(parts()), key="0" * 64)
