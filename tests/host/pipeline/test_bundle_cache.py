"""The host compile cache: atomic entries, one compile for concurrent pushes, damaged entries dropped."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from host.pipeline import bundle_cache


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _fake_bundle(tmp: Path, payload: bytes = b"x" * 100):
    from host.client.digests import hash_file

    bdir = tmp / "bundle"
    bdir.mkdir()
    (bdir / "manifest.json").write_text("{}")
    archive = tmp / "bundle.tar"
    archive.write_bytes(payload)
    return bdir, archive, hash_file(archive)


def test_a_compile_that_fails_leaves_no_entry_and_no_temp_dir():
    def boom(tmp: Path):
        _fake_bundle(tmp)
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError):
        bundle_cache.get_or_compile("k1", boom)
    assert bundle_cache.lookup("k1") is None
    assert [p.name for p in bundle_cache.root().iterdir() if not p.name.endswith(".lock")] == []


def test_concurrent_requests_for_one_key_compile_once_and_agree():
    calls = []

    def slow(tmp: Path):
        calls.append(1)
        time.sleep(0.3)
        return _fake_bundle(tmp)

    results = []
    threads = [threading.Thread(target=lambda: results.append(bundle_cache.get_or_compile("k2", slow)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len({r.digest for r in results}) == 1 and sum(not r.hit for r in results) == 1


def test_an_entry_whose_archive_changed_is_dropped_and_recompiled():
    first = bundle_cache.get_or_compile("k3", _fake_bundle)
    assert bundle_cache.lookup("k3").digest == first.digest
    first.archive.write_bytes(b"y" * 101)  # damaged behind our back
    assert bundle_cache.lookup("k3") is None
    again = bundle_cache.get_or_compile("k3", _fake_bundle)
    assert again.hit is False and again.digest == first.digest


def test_the_key_changes_with_model_target_and_options():
    base = bundle_cache.cache_key("sha256:a", {"profile": "x86-cpu"}, {"fp16": False})
    assert base == bundle_cache.cache_key("sha256:a", {"profile": "x86-cpu"}, {"fp16": False})
    assert base != bundle_cache.cache_key("sha256:b", {"profile": "x86-cpu"}, {"fp16": False})
    assert base != bundle_cache.cache_key("sha256:a", {"profile": "jetson-nano"}, {"fp16": False})
    assert base != bundle_cache.cache_key("sha256:a", {"profile": "x86-cpu"}, {"fp16": True})


def test_the_options_part_of_the_key_comes_from_compile_options_and_keeps_its_earlier_shape():
    import numpy as np

    from host.compiler.options import CompileOptions
    from host.pipeline.tensors import samples_digest

    sample = {"x": np.ones((1, 4), np.float32)}
    opts = CompileOptions(profile="jetson-nano", trt_version="8.2.1", fp16=True, input_shapes={"x": (1, 4)},
                          batch="1:2:4", exclude_ops=("Softmax", "Erf"), sample_inputs=sample)
    # the dict PushOptions.compile_options() gave before: keys of earlier compiles stay valid
    assert bundle_cache.options_key(opts) == {"fp16": True, "input_shapes": {"x": [1, 4]}, "batch": "1:2:4",
                                              "exclude_ops": ["Erf", "Softmax"], "samples": samples_digest(sample)}
    assert bundle_cache.options_key(CompileOptions()) == bundle_cache.options_key(CompileOptions(profile="x"))
    base = bundle_cache.options_key(CompileOptions())
    for change in ({"fp16": True}, {"batch": "1:2:4"}, {"exclude_ops": ("Relu",)}, {"input_shapes": {"x": [2]}},
                   {"sample_inputs": sample}, {"seed": 1}, {"fold": False}, {"use_implicit_batch": True},
                   {"remove_no_mac_subgraphs": True}, {"max_workspace_size": 1 << 20}, {"remainder_device": "cpu"},
                   {"host_check": False}):
        key = bundle_cache.options_key(CompileOptions(**change))
        assert key != base, change
        assert bundle_cache.cache_key("sha256:a", {}, key) != bundle_cache.cache_key("sha256:a", {}, base), change


def test_push_options_take_flat_keywords_into_one_compile_options():
    from host.pipeline.push import PushOptions

    opts = PushOptions.from_flat(fp16=True, profile="jetson-orin", batch_range="1:4:8", batch=4, exclude_ops=["Erf"],
                                 max_workspace_size=1 << 20, bench=True)
    assert (opts.compile.fp16, opts.compile.profile, opts.compile.batch, opts.compile.exclude_ops) == \
        (True, "jetson-orin", "1:4:8", ["Erf"])
    assert opts.batch == 4 and opts.max_workspace_size == 1 << 20 and opts.compile.max_workspace_size is None
    assert opts.bench and PushOptions.from_flat() == PushOptions()
    with pytest.raises(TypeError, match="nope"):
        PushOptions.from_flat(nope=1)
