"""A ranged bundle (--shape-range) on a real agent over gRPC: one engine runs every shape in its profiles, a shape
outside them is INVALID_ARGUMENT before anything is built, and bundles with other profiles never share an engine."""
from __future__ import annotations

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from host.client.errors import AgentError
from host.compiler.api import compile_model
from protos import agent_pb2
from tests.device_agent.test_engine_rpcs import build, client_for, output, tensor
from tests.host.cli.helpers import check_schema, tiny_conv_net

NARROW = [[1, 3, 16, 16], [1, 3, 24, 24], [1, 3, 32, 32]]
WIDE = [[1, 3, 16, 16], [1, 3, 48, 48], [1, 3, 64, 64]]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """The same H x W model compiled with one narrow profile and with one wide profile."""
    tmp = tmp_path_factory.mktemp("ranged")
    model = tiny_conv_net(tmp / "m.onnx", size=("H", "W"))
    narrow = compile_model(model, tmp / "narrow", shape_profiles=[{"input": NARROW}])
    wide = compile_model(model, tmp / "wide", shape_profiles=[{"input": WIDE}])
    return model, narrow.archive, wide.archive


def test_a_shape_outside_every_profile_is_refused_before_any_build(agent, bundles):
    model, narrow, _ = bundles
    with client_for(agent) as client:
        digest = client.upload(narrow).digest
        big = np.zeros((1, 3, 40, 16), np.float32)
        with pytest.raises(AgentError) as err:
            client.run(agent_pb2.RunRequest(bundle_digest=digest, inputs=[tensor("input", big)]))
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert ("input 'input' has shape 1x3x40x16, outside every optimization profile of this bundle "
                "(input: 1x3x16x16..1x3x32x32)") in str(err.value)
        assert not client.list_engines().engines  # nothing was built for it


def test_one_engine_runs_every_shape_in_range_and_other_profiles_get_their_own(agent, bundles):
    model, narrow, wide = bundles
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    with client_for(agent) as client:
        keys = []
        for archive, hi in ((narrow, 32), (wide, 64)):
            digest = client.upload(archive).digest
            segs, summary = build(client, digest)
            assert summary.built == 1
            keys.append(segs[-1].cache_key)
            for i, (h, w) in enumerate([(16, 16), (hi, hi), (hi // 2 + 3, 17)]):
                x = np.random.default_rng(i).standard_normal((1, 3, h, w)).astype(np.float32)
                reply = client.run(agent_pb2.RunRequest(bundle_digest=digest, inputs=[tensor("input", x)]))
                np.testing.assert_allclose(output(reply, "logits"), sess.run(None, {"input": x})[0],
                                           rtol=1e-4, atol=1e-5)
        # the segment ONNX is the same file in both bundles; the profiles alone keep their engines apart
        engines = client.list_engines().engines
        assert len({e.key for e in engines}) == 2 and set(keys) == {e.key for e in engines}


def test_verify_runs_the_reference_at_min_opt_and_max_of_each_profile(agent, bundles, tmp_path):
    import json
    import shutil

    from device_agent.archive import write_archive
    from device_agent.fileio import sha256_file

    _, narrow, _ = bundles
    src = tmp_path / "b"
    shutil.copytree(narrow.parent / "bundle", src)
    manifest = json.loads((src / "manifest.json").read_text())
    labels = [s["label"] for s in manifest["reference"]["at_shapes"]]
    assert labels == ["profile 0 min", "profile 0 max"]  # OPT is the main reference
    with client_for(agent) as client:
        digest = client.upload(narrow).digest
        ok = client.run(agent_pb2.RunRequest(bundle_digest=digest, verify=True))
        assert ok.max_rel_err < 1e-4
        # the reference at MAX made wrong by 1.0 (digests kept whole): verify must see it
        entry = manifest["reference"]["at_shapes"][1]["outputs"][0]
        path = src / entry["path"]
        np.save(path, np.load(path) + 1.0, allow_pickle=False)
        entry["digest"] = sha256_file(path)
        for pinned in manifest.get("files", []):  # the manifest's list of every file pins it too
            if pinned["path"] == entry["path"]:
                pinned.update(digest=entry["digest"], size=path.stat().st_size)
        (src / "manifest.json").write_text(json.dumps(manifest))
        bad = client.upload(write_archive(src, tmp_path / "bad.tar") and tmp_path / "bad.tar").digest
        reply = client.run(agent_pb2.RunRequest(bundle_digest=bad, verify=True))
        assert 0.99 < reply.max_abs_err < 1.01


def test_bench_at_min_and_max_gives_one_row_per_shape_with_the_first_call_apart(agent, bundles):
    from host import api

    _, narrow, _ = bundles
    data = api.bench(narrow, [agent.address], bench_points="min,max", iterations=5, warmup=1)
    check_schema("bench", data)  # what `deploy bench --json` prints
    rows = data["devices"][0]["shapes"]
    assert [(r["shape"], r["shapes"]["input"]) for r in rows] == [("p0 min", [1, 3, 16, 16]),
                                                                  ("p0 max", [1, 3, 32, 32])]
    assert all(r["first_call_ms"] > 0 and r["iterations"] == 5 and r["p50_ms"] > 0 for r in rows)
    with pytest.raises(AgentError, match="outside every optimization profile"):
        api.bench(narrow, [agent.address], bench_shape=["input=1x3x16x40"], iterations=5)
