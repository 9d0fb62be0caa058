"""Build, Run, Benchmark and the engine-cache RPCs on real agents over gRPC on loopback (onnxruntime backend)."""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from device_agent import bench_runner
from protos import agent_pb2
from tests.device_agent.onnx_models import (conv_net, max_rel_err, single_segment_bundle,
                                             wide_mlp)

Stage = agent_pb2.SegmentEvent


def client_for(agent) -> AgentClient:
    return AgentClient(Device(name="t", address=agent.address))


def build(client, digest, **options):
    events = list(client.build(digest, agent_pb2.BuildOptions(**options)))
    segs = [e.segment for e in events if e.WhichOneof("event") == "segment"]
    summary = events[-1].summary
    assert events[-1].WhichOneof("event") == "summary"
    return segs, summary


def tensor(name, arr):
    arr = np.ascontiguousarray(arr)
    return agent_pb2.Tensor(name=name, dtype=arr.dtype.name, shape=list(arr.shape), data=arr.tobytes())


def output(reply, name):
    t = next(t for t in reply.outputs if t.name == name)
    return np.frombuffer(t.data, dtype=t.dtype).reshape(list(t.shape))


@pytest.fixture
def bundle(tmp_path):
    return single_segment_bundle(tmp_path, conv_net(seed=3), "convnet")


def test_build_streams_events_then_second_build_is_a_fast_cache_hit(agent, bundle):
    archive, feeds, want = bundle
    with client_for(agent) as client:
        digest = client.upload(archive).digest
        segs, summary = build(client, digest)
        assert [s.stage for s in segs] == [Stage.STARTED, Stage.CACHE_MISS, Stage.PARSED, Stage.BUILT]
        built = segs[-1]
        assert built.engine_bytes > 0 and built.build_s > 0 and built.backend == "onnxruntime" and built.cache_key
        assert (summary.segments, summary.built, summary.cache_hits, summary.failed) == (1, 1, 0, 0)
        first = output(client.run(agent_pb2.RunRequest(bundle_digest=digest,
                                                       inputs=[tensor("x", feeds["x"])])), "y")
        segs2, summary2 = build(client, digest)
        assert [s.stage for s in segs2] == [Stage.STARTED, Stage.CACHE_HIT]
        assert segs2[1].cache_key == built.cache_key and segs2[1].lookup_s < 0.1
        assert summary2.cache_hits == 1 and summary2.built == 0
        second = output(client.run(agent_pb2.RunRequest(bundle_digest=digest,
                                                        inputs=[tensor("x", feeds["x"])])), "y")
    agent.restart()  # a new process: the plan comes from the disk cache, not from memory
    with client_for(agent) as client:
        segs3, _ = build(client, digest)
        assert segs3[-1].stage == Stage.CACHE_HIT and segs3[-1].lookup_s < 0.1
        third = output(client.run(agent_pb2.RunRequest(bundle_digest=digest,
                                                       inputs=[tensor("x", feeds["x"])])), "y")
    assert np.array_equal(first, second) and np.array_equal(first, third)
    assert max_rel_err(first, want["y"]) < 1e-4


def test_verify_mode_reports_error_against_the_bundles_reference(agent, bundle):
    archive, _, _ = bundle
    with client_for(agent) as client:
        digest = client.upload(archive).digest
        reply = client.run(agent_pb2.RunRequest(bundle_digest=digest, verify=True))
    assert reply.HasField("max_rel_err") and reply.max_rel_err < 1e-4 and reply.backend == "onnxruntime"


def test_cache_key_changes_with_precision_and_profile(agent, tmp_path):
    archive, _, _ = single_segment_bundle(tmp_path, conv_net(batch="N", seed=4), "dyn")
    with client_for(agent) as client:
        digest = client.upload(archive).digest
        keys = {}
        for label, opts in {"fp32": {}, "fp16": {"fp16": True}, "batch4": {"batch": 4, "multi_engine_mode": 1},
                            "ws": {"max_workspace_bytes": 1 << 20}}.items():
            segs, _ = build(client, digest, **opts)
            keys[label] = segs[-1].cache_key
        assert len(set(keys.values())) == 4
        listed = client.list_engines()
        assert len(listed.engines) == 4 and listed.total_bytes == sum(e.size for e in listed.engines)


def test_multi_engine_mode_0_rebuilds_one_engine_for_a_larger_batch(agent, tmp_path):
    archive, _, _ = single_segment_bundle(tmp_path, conv_net(batch="N", seed=5), "dyn0")
    with client_for(agent) as client:
        digest = client.upload(archive).digest
        x = lambda b: tensor("x", np.ones((b, 3, 16, 16), np.float32))
        client.run(agent_pb2.RunRequest(bundle_digest=digest, inputs=[x(2)]))
        assert [e.attributes["profiles"] for e in client.list_engines().engines][0].count('"max": [2')
        client.run(agent_pb2.RunRequest(bundle_digest=digest, inputs=[x(1)]))  # fits the batch-2 engine
        assert len(client.list_engines().engines) == 1
        reply = client.run(agent_pb2.RunRequest(bundle_digest=digest, inputs=[x(6)]))  # larger: rebuilt
        assert output(reply, "y").shape == (6, 10)
        engines = client.list_engines().engines
        assert len(engines) == 1 and '"max": [6' in engines[0].attributes["profiles"]
        segs, _ = build(client, digest, batch=3)  # covered by the batch-6 engine
        assert segs[-1].stage == Stage.CACHE_HIT


def test_multi_engine_mode_1_keeps_one_engine_per_batch(agent_factory, tmp_path):
    agent = agent_factory(multi_engine_mode=1)
    archive, _, _ = single_segment_bundle(tmp_path, conv_net(batch="N", seed=6), "dyn1")
    with client_for(agent) as client:
        digest = client.upload(archive).digest
        for b in (1, 2, 4, 2):
            client.run(agent_pb2.RunRequest(bundle_digest=digest,
                                            inputs=[tensor("x", np.ones((b, 3, 16, 16), np.float32))]))
        assert len(client.list_engines().engines) == 3


def test_bad_run_requests_get_clear_errors_and_the_agent_keeps_serving(agent, bundle):
    archive, _, _ = bundle
    with client_for(agent) as client:
        digest = client.upload(archive).digest
        cases = [
            (agent_pb2.RunRequest(bundle_digest=digest, inputs=[agent_pb2.Tensor(
                name="x", dtype="float32", shape=[1, 3, 16, 16], data=b"\0" * 12)]), "carries 12 bytes"),
            (agent_pb2.RunRequest(bundle_digest=digest, inputs=[tensor("x", np.ones((1, 3, 16, 16)))]),
             "dtype float64"),
            (agent_pb2.RunRequest(bundle_digest=digest, inputs=[tensor("x", np.ones((1, 3, 16, 16), "f4"))],
                                  verify=True), "send no inputs"),
            (agent_pb2.RunRequest(bundle_digest="sha256:" + "0" * 64), "upload it first"),
            (agent_pb2.RunRequest(bundle_digest=digest, options=agent_pb2.BuildOptions(backend="nope")),
             "unknown backend"),
        ]
        for request, words in cases:
            with pytest.raises(AgentError) as err:
                client.run(request)
            assert words in err.value.message, err.value.message
            assert err.value.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        assert client.run(agent_pb2.RunRequest(bundle_digest=digest, verify=True)).max_rel_err < 1e-4


def test_a_segment_the_backend_cannot_load_is_reported_per_segment(agent, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    # a valid ONNX file whose op no runtime has: the backend's own message must come back in FAILED
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.none")], "bad",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("example.none", 1)])
    good_archive, _, _ = single_segment_bundle(tmp_path / "g", conv_net(seed=7), "good")
    d = tmp_path / "b"
    bad_bytes = model.SerializeToString()
    # the reference cannot be computed for an op nobody runs: write the bundle by hand without samples
    from device_agent.archive import write_archive
    from device_agent.fileio import sha256_bytes
    from device_agent.manifest import Manifest, Segment, Target, TensorSpec, write_manifest

    (d / "bad" / "segments").mkdir(parents=True)
    (d / "bad" / "segments" / "seg0.onnx").write_bytes(bad_bytes)
    io = [TensorSpec("x", "float32", [1, 4])], [TensorSpec("y", "float32", [1, 4])]
    write_manifest(d / "bad", Manifest(
        name="bad", source_digest=sha256_bytes(bad_bytes), inputs=io[0], outputs=io[1],
        target=Target("x86-cpu", "10.3.0", None, "cpu", "x86_64"), segments=[Segment(
            "seg0", "segments/seg0.onnx", sha256_bytes(bad_bytes), ["NoSuchOp"], io[0], io[1], 17)]))
    write_archive(d / "bad", d / "bad.tar")
    with client_for(agent) as client:
        digest = client.upload(d / "bad.tar").digest
        segs, summary = build(client, digest)
        assert [s.stage for s in segs] == [Stage.STARTED, Stage.CACHE_MISS, Stage.FAILED]
        assert "NoSuchOp" in " ".join(segs[-1].messages) and segs[-1].error
        assert summary.failed == 1 and client.list_engines().engines == []
        good = client.upload(good_archive).digest
        assert build(client, good)[1].built == 1  # still serving


def test_benchmark_streams_progress_and_ends_with_statistics(agent, bundle):
    archive, _, _ = bundle
    with client_for(agent) as client:
        digest = client.upload(archive).digest
        events = list(client.benchmark(agent_pb2.BenchmarkRequest(bundle_digest=digest, warmup=5,
                                                                   duration_s=1.2)))
    progress = [e.progress for e in events if e.WhichOneof("event") == "progress"]
    result = events[-1].result
    assert len(progress) >= 2 and progress[-1].done == result.latency.iterations
    lat = result.latency
    assert 0 < lat.min_ms <= lat.p50_ms <= lat.p90_ms <= lat.p95_ms <= lat.p99_ms <= lat.max_ms
    assert lat.iterations > 10 and lat.throughput > 0 and result.backend == "onnxruntime"
    # a tiny model on a fast machine runs past the sample cap: the first MAX_SAMPLES travel back
    assert len(lat.samples_ms) == min(lat.iterations, bench_runner.MAX_SAMPLES)


def test_engines_move_between_agents_and_foreign_ones_are_refused(agent_factory, bundle):
    archive, _, _ = bundle
    a, b = agent_factory(), agent_factory()
    with client_for(a) as ca, client_for(b) as cb:
        digest = ca.upload(archive).digest
        build(ca, digest)
        (entry,) = ca.list_engines().engines
        chunks = list(ca.fetch_engine(entry.key))
        assert chunks[0].entry.key == entry.key
        reply = cb.put_engine(iter(chunks))
        assert reply.key == entry.key and not reply.already_present
        assert cb.put_engine(iter(chunks)).already_present
        cb.upload(archive)
        segs, _ = build(cb, digest)
        assert segs[-1].stage == Stage.CACHE_HIT  # b never built it: warmed by the copy
        # the same engine claiming another device class is refused
        foreign = agent_pb2.EngineEntry()
        foreign.CopyFrom(chunks[0].entry)
        import json

        parts = json.loads(foreign.attributes["parts"])
        parts["cc"] = "7.2"
        foreign.attributes["parts"] = json.dumps(parts)
        with pytest.raises(AgentError) as err:
            cb.put_engine(iter([agent_pb2.EngineChunk(entry=foreign)] + chunks[1:]))
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "cc: entry '7.2'" in err.value.message
        # a corrupted copy is refused by its digest
        bad = [chunks[0]] + [agent_pb2.EngineChunk(chunk=c.chunk[:-1] + b"\x00") for c in chunks[1:]]
        cb.prune(agent_pb2.PruneRequest(all=True))
        with pytest.raises(AgentError) as err:
            cb.put_engine(iter(bad))
        assert err.value.code == grpc.StatusCode.DATA_LOSS


def test_prune_rpc_and_size_bound_remove_least_recently_used_first(agent_factory, tmp_path):
    agent = agent_factory(cache_max_bytes=30_000)
    with client_for(agent) as client:
        digests = []
        for i in range(3):
            archive, _, _ = single_segment_bundle(tmp_path / str(i), conv_net(seed=10 + i, channels=64), f"m{i}")
            digests.append(client.upload(archive).digest)
        sizes, keys = [], []
        for d in digests:
            segs, _ = build(client, d)
            keys.append(segs[-1].cache_key)
            sizes.append(segs[-1].engine_bytes)
            time.sleep(0.05)
        assert 10_000 < sizes[0] < 15_000, sizes  # two fit under the bound, three do not
        left = {e.key for e in client.list_engines().engines}
        assert left == {keys[1], keys[2]}  # the oldest went
        reply = client.prune(agent_pb2.PruneRequest(keys=[keys[1]]))
        assert list(reply.removed) == [keys[1]] and reply.freed_bytes == sizes[1]
        assert client.prune(agent_pb2.PruneRequest(all=True)).total_bytes == 0


@pytest.mark.slow
def test_agent_killed_during_a_build_leaves_no_entry_a_restart_would_load(agent_factory, tmp_path):
    from device_agent.cache import EngineCache

    agent = agent_factory()
    archive, _, _ = single_segment_bundle(tmp_path, wide_mlp(2048, 3, seed=20), "big")  # a 48 MB plan
    with client_for(agent) as client:
        digest = client.upload(archive).digest
        for ev in client.build(digest):
            if ev.WhichOneof("event") == "segment" and ev.segment.stage == Stage.CACHE_MISS:
                time.sleep(0.05)
                agent.kill()  # SIGKILL while the backend builds or the cache writes
                break
    cache_root = agent.store_dir.parent / "engines"
    entries = list((cache_root / "entries").iterdir())
    print("entries after the kill:", len(entries), "temp dirs:", len(list((cache_root / "tmp").iterdir())))
    for entry in entries:  # whatever is there must be whole
        assert EngineCache(cache_root).read(entry.name) is not None
    agent.start()
    with client_for(agent) as client:
        reply = client.run(agent_pb2.RunRequest(bundle_digest=digest, verify=True))
        assert reply.max_rel_err < 1e-4


def test_getinfo_lists_backends_with_versions(agent):
    with client_for(agent) as client:
        info = client.info()
    names = {b.name: b for b in info.backends}
    assert {"tensorrt", "trtexec", "onnxruntime", "tvm"} <= set(names)
    assert names["onnxruntime"].available and names["onnxruntime"].version
    assert info.tvm_runtime == names["tvm"].available


def test_agent_settings_set_defaults_that_each_request_can_override(agent_factory, tmp_path):
    archive, _, _ = single_segment_bundle(tmp_path, conv_net(seed=30), "settings")
    by_flag = agent_factory(fp16=True, max_workspace_bytes=1 << 24)
    by_env = agent_factory(env={"DEPLOY_AGENT_FP16": "1", "DEPLOY_AGENT_MAX_WORKSPACE_BYTES": str(1 << 24)})
    plain = agent_factory()
    keys = {}
    for name, a in (("flag", by_flag), ("env", by_env), ("plain", plain)):
        with client_for(a) as client:
            digest = client.upload(archive).digest
            keys[name] = build(client, digest)[0][-1].cache_key
            (entry,) = client.list_engines().engines
            assert entry.attributes["precision"] == ("fp32" if name == "plain" else "fp16")
            assert entry.attributes["workspace"] == str(1 << 30 if name == "plain" else 1 << 24)
            if name == "flag":  # the request's fields win over the agent's settings
                segs, _ = build(client, digest, fp16=False, max_workspace_bytes=1 << 30)
                keys["flag, request fp32"] = segs[-1].cache_key
    assert keys["flag"] == keys["env"] != keys["plain"]
    assert keys["flag, request fp32"] == keys["plain"]


def test_concurrent_builds_of_one_bundle_build_each_segment_once(agent, tmp_path):
    archive, _, _ = single_segment_bundle(tmp_path, wide_mlp(1024, 2, seed=31), "concurrent")
    with client_for(agent) as client:
        digest = client.upload(archive).digest
    results = []

    def one():
        with client_for(agent) as c:
            results.append(build(c, digest)[0][-1].stage)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted([Stage.BUILT, Stage.CACHE_HIT, Stage.CACHE_HIT])


def test_a_corrupted_cache_entry_is_rebuilt_never_loaded(agent, bundle):
    from device_agent.cache import EngineCache

    archive, _, _ = bundle
    with client_for(agent) as client:
        digest = client.upload(archive).digest
        key = build(client, digest)[0][-1].cache_key
    agent.stop()
    plan = agent.store_dir.parent / "engines" / "entries" / key / "plan"
    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the digest can tell
    plan.write_bytes(bytes(data))
    agent.start()
    with client_for(agent) as client:
        segs, summary = build(client, digest)
        assert [s.stage for s in segs] == [Stage.STARTED, Stage.CACHE_MISS, Stage.PARSED, Stage.BUILT]
        assert client.run(agent_pb2.RunRequest(bundle_digest=digest, verify=True)).max_rel_err < 1e-4
    assert EngineCache(agent.store_dir.parent / "engines").read(key) is not None  # whole again


def test_put_engine_refuses_malformed_streams_with_what_was_wrong(agent_factory, bundle):
    archive, _, _ = bundle
    src, dst = agent_factory(), agent_factory(cache_max_bytes=1 << 20)
    with client_for(src) as cs, client_for(dst) as cd:
        build(cs, cs.upload(archive).digest)
        (entry,) = cs.list_engines().engines
        chunks = list(cs.fetch_engine(entry.key))
        head = chunks[0].entry

        def put(msgs):
            with pytest.raises(AgentError) as err:
                cd.put_engine(iter(msgs))
            return err.value

        assert "must start with the engine's entry" in put(chunks[1:]).message
        big = agent_pb2.EngineEntry()
        big.CopyFrom(head)
        big.size = 2 << 20
        e = put([agent_pb2.EngineChunk(entry=big)] + chunks[1:])
        assert e.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit" in e.message
        bare = agent_pb2.EngineEntry()
        bare.CopyFrom(head)
        del bare.attributes["parts"]
        assert "key parts" in put([agent_pb2.EngineChunk(entry=bare)] + chunks[1:]).message
        short = [chunks[0], agent_pb2.EngineChunk(chunk=chunks[1].chunk[:10])]
        assert put(short).code == grpc.StatusCode.DATA_LOSS
        assert cd.list_engines().engines == []  # nothing partial is visible
        assert cd.put_engine(iter(chunks)).key == entry.key  # and a whole one still goes in
