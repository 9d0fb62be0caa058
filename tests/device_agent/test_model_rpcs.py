"""The model RPCs on a real agent over gRPC: what a version records, what it takes to activate one, what a device
upgrade or a lost engine makes of it, and that nothing the agent keeps for a version is pruned."""
from __future__ import annotations

import json
import shutil

import grpc
import numpy as np
import pytest

from device_agent.errors import EngineMissing, InvalidInput, PreconditionFailed
from device_agent.runtime import open_model
from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from protos import agent_pb2
from tests.device_agent.onnx_models import conv_net, single_segment_bundle


@pytest.fixture
def agent_with_bundles(agent_factory, tmp_path):
    """An agent (keep 2 versions) holding two built bundles of one model (different weights)."""
    handle = agent_factory(backend="onnxruntime", keep_versions=2)
    client = AgentClient(Device(name="a", address=handle.address))
    bundles = []
    for seed in (1, 2, 3):
        archive, feeds, want = single_segment_bundle(tmp_path / f"b{seed}", conv_net(seed=seed), f"det{seed}")
        digest = client.upload(archive).digest
        bundles.append((digest, feeds, want))
    yield handle, client, bundles
    client.close()


def _build(client: AgentClient, digest: str) -> None:
    for _ in client.build(digest):
        pass


def _register(client: AgentClient, digest: str, name: str = "det", **kw) -> agent_pb2.RegisterVersionReply:
    kw.setdefault("tolerance", 1e-3)
    return client.register_version(agent_pb2.RegisterVersionRequest(name=name, bundle_digest=digest, **kw))


def test_a_version_needs_its_engines_built_and_records_the_agents_own_verify(agent_with_bundles):
    _handle, client, bundles = agent_with_bundles
    digest = bundles[0][0]
    with pytest.raises(AgentError) as refused:
        _register(client, digest)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION and "has no engine" in refused.value.message
    _build(client, digest)
    first = _register(client, digest)
    v = first.version
    assert first.created and v.version == 1 and v.state == "verified" and v.verify_passed
    assert v.max_rel_err == 0.0 and v.build["backend"] == "onnxruntime" and v.build["precision"] == "fp32"
    again = _register(client, digest)  # the same bundle and engines again: no new version
    assert not again.created and again.version.version == 1
    strict = _register(client, digest, tolerance=1e-30)  # the same engines, another verify verdict: recorded
    assert strict.created and strict.version.version == 2
    assert strict.version.state == "verified"  # 0 <= 1e-30: an exact engine passes any bound


def test_bad_requests_change_nothing(agent_with_bundles):
    _handle, client, bundles = agent_with_bundles
    digest = bundles[0][0]
    _build(client, digest)
    for kw, code, words in [(dict(name="../x"), grpc.StatusCode.INVALID_ARGUMENT, "bad model name"),
                            (dict(tolerance=0.0), grpc.StatusCode.INVALID_ARGUMENT, "tolerance must be above 0"),
                            (dict(bundle_digest="sha256:" + "0" * 64), grpc.StatusCode.NOT_FOUND, "upload it first")]:
        request = dict(name="det", bundle_digest=digest, tolerance=1e-3)
        request.update(kw)
        with pytest.raises(AgentError) as refused:
            client.register_version(agent_pb2.RegisterVersionRequest(**request))
        assert refused.value.code == code and words in refused.value.message, refused.value
    assert list(client.list_models().models) == []
    for call, words in [(lambda: client.activate("det"), "no model named 'det'"),
                        (lambda: client.rollback("det"), "no model named 'det'")]:
        with pytest.raises(AgentError) as refused:
            call()
        assert refused.value.code == grpc.StatusCode.NOT_FOUND and words in refused.value.message


def test_an_unverified_version_cannot_be_activated(agent_with_bundles):
    _handle, client, bundles = agent_with_bundles
    _build(client, bundles[0][0])
    v = _register(client, bundles[0][0], skip_verify=True, tolerance=0.0).version
    assert v.state == "unverified" and "--no-verify" in v.why and not v.HasField("verify_passed")
    with pytest.raises(AgentError) as refused:
        client.activate("det")
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION and "not verified" in refused.value.message
    assert not client.list_models("det").models[0].HasField("active")


def test_a_version_built_for_another_backend_version_is_stale_and_says_how_to_fix_it(agent_with_bundles):
    """What a JetPack upgrade does: the device's backend version is no longer the one the engines were built by
    (here the record is edited to an older onnxruntime, as a record from before an upgrade would read)."""
    handle, client, bundles = agent_with_bundles
    _build(client, bundles[0][0])
    _register(client, bundles[0][0])
    record = handle.store_dir.parent / "models" / "det" / "versions" / "1.json"
    doc = json.loads(record.read_text())
    doc["build"]["backend_version"] = "1.16.0"
    record.write_text(json.dumps(doc))
    v = client.list_models("det").models[0].versions[0]
    assert v.state == "stale" and "backend_version 1.16.0" in v.why and "push it again" in v.why
    with pytest.raises(AgentError) as refused:
        client.activate("det", 1)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION and "cannot be activated" in refused.value.message
    assert "backend_version 1.16.0" in refused.value.message


def test_a_lost_engine_makes_the_version_missing_and_the_runtime_says_push_first(agent_with_bundles):
    handle, client, bundles = agent_with_bundles
    digest = bundles[0][0]
    _build(client, digest)
    key = _register(client, digest).version.engine_keys[0]
    client.activate("det")
    with open_model("det", store=handle.store_dir) as m:
        assert m.version == 1
    shutil.rmtree(handle.store_dir.parent / "engines" / "entries" / key)  # a disk that lost it
    assert client.list_models("det").models[0].versions[0].state == "missing"
    with pytest.raises(EngineMissing, match="nothing is built here"):
        open_model("det", store=handle.store_dir)
    with pytest.raises(AgentError) as refused:
        client.rollback("det")
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_kept_versions_pin_their_bundles_and_engines_against_prune(agent_with_bundles):
    handle, client, bundles = agent_with_bundles
    keys = []
    for digest, _feeds, _want in bundles:
        _build(client, digest)
        keys.append(_register(client, digest).version.engine_keys[0])
    client.activate("det", 3)
    kept = [v.version for v in client.list_models("det").models[0].versions]
    assert kept == [2, 3]  # --keep-versions 2: version 1 released
    store = client.prune_store(agent_pb2.PruneStoreRequest(all=True))
    assert sorted(store.kept) == sorted(d for d, _, _ in bundles[1:]) and bundles[0][0] in store.removed
    cache = client.prune(agent_pb2.PruneRequest(all=True))
    assert sorted(cache.kept) == sorted(keys[1:]) and keys[0] in cache.removed
    with open_model("det", store=handle.store_dir) as m:  # the active version still opens and runs
        feeds, want = bundles[2][1], bundles[2][2]
        out = m.run(feeds)
        assert np.allclose(out[next(iter(want))], next(iter(want.values())), rtol=1e-4, atol=1e-5)


def test_the_runtime_refuses_an_input_of_the_wrong_name_dtype_or_shape_in_one_line(agent_with_bundles):
    handle, client, bundles = agent_with_bundles
    digest, feeds, _ = bundles[0]
    _build(client, digest)
    _register(client, digest)
    client.activate("det")
    name, x = next(iter(feeds.items()))
    with open_model("det", store=handle.store_dir) as m:
        for bad, words in [({"nope": x}, "has no input 'nope'"), ({name: x.astype(np.float64)}, "not float64"),
                           ({name: x[..., :-1]}, "it takes")]:
            with pytest.raises(InvalidInput, match=words):
                m.run(bad)
        assert m.version == 1 and m.run(feeds)


def test_tritonclient_and_an_agent_share_one_process(serve, tmp_path):
    """The agent's OIP messages are its own package, so an application holding tritonclient's can embed an agent
    (both packages had been `inference`: the second import failed with a duplicate symbol)."""
    import tritonclient.grpc as tc

    server = serve(backend="onnxruntime")
    client = AgentClient(Device(name="a", address=server.address))
    archive, feeds, want = single_segment_bundle(tmp_path / "b", conv_net(seed=4), "det")
    digest = client.upload(archive).digest
    _build(client, digest)
    _register(client, digest)
    client.activate("det")
    triton = tc.InferenceServerClient(server.address)
    (name, x), = feeds.items()
    given = tc.InferInput(name, list(x.shape), "FP32")
    given.set_data_from_numpy(x)
    result = triton.infer("det", [given])
    (out, ref), = want.items()
    assert result.get_response().model_version == "1"
    assert np.allclose(result.as_numpy(out), ref, rtol=1e-4, atol=1e-5)
    triton.close()
    client.close()


def test_deactivate_leaves_no_version_active_and_the_runtime_says_so(agent_with_bundles):
    handle, client, bundles = agent_with_bundles
    _build(client, bundles[0][0])
    _register(client, bundles[0][0])
    client.activate("det")
    reply = client.deactivate("det")
    assert reply.previous == 1 and not reply.HasField("active")
    info = client.list_models("det").models[0]
    assert not info.HasField("active") and [v.version for v in info.versions] == [1]  # kept, not active
    assert client.deactivate("det").HasField("previous") is False  # again: nothing to do
    with pytest.raises(PreconditionFailed, match="no active version"):
        open_model("det", store=handle.store_dir)
    assert client.activate("det").active.version == 1  # and back, no rebuild


def test_a_version_that_failed_verify_is_refused_by_name_and_the_active_one_keeps_serving(agent_with_bundles,
                                                                                          tmp_path):
    """The bundle's reference outputs are another model's: the agent's own verify fails, and activating it is one
    FAILED_PRECONDITION line that says so; the version active before stays active and serving."""
    handle, client, bundles = agent_with_bundles
    good, feeds, want = bundles[0]
    _build(client, good)
    _register(client, good)
    client.activate("det")
    archive, _feeds, _want = single_segment_bundle(tmp_path / "bad", conv_net(seed=1), "bad",
                                                   reference_from=conv_net(seed=9))
    bad = client.upload(archive).digest
    _build(client, bad)
    v = _register(client, bad).version
    assert v.version == 2 and v.state == "failed_verify" and not v.verify_passed and v.max_rel_err > v.tolerance
    assert "failed verify on this device" in v.why
    state = handle.store_dir.parent / "models" / "det" / "state.json"
    before = state.read_bytes()
    with pytest.raises(AgentError) as refused:
        client.activate("det", 2)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "version 2 cannot be activated: failed verify on this device (max rel err" in refused.value.message
    assert "\n" not in refused.value.message
    assert state.read_bytes() == before, "nothing changed on the device"
    with open_model("det", store=handle.store_dir) as m:
        out = m.run_versioned(feeds)
        assert out.version == 1
        (name, ref), = want.items()
        assert np.allclose(out.outputs[name], ref, rtol=1e-4, atol=1e-5)


def test_rollback_switches_at_once_with_no_build_and_the_runtime_finds_the_store_as_the_agent_does(
        agent_with_bundles, monkeypatch):
    """Rollback only rewrites the active pointer: the engines in the cache are the very files they were (no entry
    added, none rewritten). The runtime opened without store= finds the agent's store through DEPLOY_AGENT_STORE,
    as `deploy-agent` itself reads it."""
    handle, client, bundles = agent_with_bundles
    for digest, _feeds, _want in bundles[:2]:
        _build(client, digest)
        _register(client, digest)
    client.activate("det", 1)
    client.activate("det", 2)
    entries = handle.store_dir.parent / "engines" / "entries"

    def engines() -> dict:
        return {p.parent.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in entries.glob("*/plan")}

    before = engines()
    reply = client.rollback("det")
    assert (reply.active.version, reply.previous) == (1, 2) and reply.seconds < 1.0
    assert engines() == before, "a rollback builds nothing and rewrites no engine"
    monkeypatch.setenv("DEPLOY_AGENT_STORE", str(handle.store_dir))
    with open_model("det") as m:
        feeds, want = bundles[0][1], bundles[0][2]
        (name, ref), = want.items()
        assert m.version == 1 and np.allclose(m.run(feeds)[name], ref, rtol=1e-4, atol=1e-5)
    assert engines() == before, "opening the model builds nothing either"


def test_the_size_bounds_never_remove_a_kept_versions_bundle_or_engine(agent_factory, tmp_path):
    """--store-max-bytes and --cache-max-bytes of 1 byte: every upload and every build prunes all it may. The
    kept versions' bundles and engines stay; a released version's go at the next upload and build."""
    handle = agent_factory(backend="onnxruntime", keep_versions=2, store_max_bytes=1, cache_max_bytes=1)
    client = AgentClient(Device(name="a", address=handle.address))
    try:
        pushed = []
        for seed in (1, 2, 3, 4):
            archive, feeds, want = single_segment_bundle(tmp_path / f"b{seed}", conv_net(seed=seed), f"det{seed}")
            digest = client.upload(archive).digest
            _build(client, digest)
            key = _register(client, digest).version.engine_keys[0] if seed < 4 else None  # 4: only bounds
            pushed.append((digest, key, feeds, want))
        kept = [v.version for v in client.list_models("det").models[0].versions]
        assert kept == [2, 3], "version 1 was released when version 3 came"
        store = {e.digest for e in client.list_store().entries}
        engines = {e.key for e in client.list_engines().engines}
        assert pushed[1][0] in store and pushed[2][0] in store, "kept versions' bundles stay under the bound"
        assert pushed[1][1] in engines and pushed[2][1] in engines, "kept versions' engines stay under the bound"
        assert pushed[0][0] not in store and pushed[0][1] not in engines, "a released version's files are bounded"
        client.activate("det", 2)
        with open_model("det", store=handle.store_dir) as m:
            (name, ref), = pushed[1][3].items()
            assert m.version == 2 and np.allclose(m.run(pushed[1][2])[name], ref, rtol=1e-4, atol=1e-5)
    finally:
        client.close()


@pytest.mark.parametrize("policy, order", [
    ("availability", ["load 1", "load 2", "close 1"]),  # TF Serving's: the new version in before the old goes
    ("resource", ["load 1", "close 1", "load 2"]),      # where two do not fit: the old one released first
])
def test_a_swap_loads_the_new_version_before_releasing_the_old_unless_policy_resource(agent_with_bundles, policy,
                                                                                      order):
    """The real loader of open_model, with each load and release written down in the order they happen."""
    from pathlib import Path

    from device_agent.models import ModelRepository
    from device_agent.runtime import Loaded, Model
    from device_agent.runtime.load import settings_for, version_loader

    handle, client, bundles = agent_with_bundles
    for digest, _feeds, _want in bundles[:2]:
        _build(client, digest)
        _register(client, digest)
    client.activate("det", 1)
    settings = settings_for(handle.store_dir)
    load = version_loader(settings)
    seen: list = []

    def logged(record) -> Loaded:
        loaded = load(record)
        seen.append(f"load {record.version}")
        close = loaded.close

        def closing() -> None:
            seen.append(f"close {record.version}")
            close()

        loaded.close = closing
        return loaded

    with Model("det", ModelRepository(Path(settings.data_dir) / "models"), logged, policy) as m:
        client.activate("det", 2)
        assert m.run_versioned(bundles[1][1]).version == 2
        assert seen == order


def test_the_runtime_follows_activations_without_the_counter_file_through_state_json(agent_with_bundles):
    """A repository an older agent wrote has no `generation` counter: the runtime then stats state.json on each run
    (each commit renames a new file in) and still answers with each new version right after its activation."""
    handle, client, bundles = agent_with_bundles
    for digest, _feeds, _want in bundles[:2]:
        _build(client, digest)
        _register(client, digest)
    client.activate("det", 1)
    (handle.store_dir.parent / "models" / "det" / "generation").unlink()
    with open_model("det", store=handle.store_dir) as m:
        for version in (2, 1, 2):
            client.activate("det", version)
            feeds, want = bundles[version - 1][1], bundles[version - 1][2]
            (name, ref), = want.items()
            out = m.run_versioned(feeds)
            assert out.version == version and np.allclose(out.outputs[name], ref, rtol=1e-4, atol=1e-5)


def test_an_activate_whose_caller_gave_up_while_it_waited_for_another_switch_never_switches(agent_factory, tmp_path):
    """A rollout's deadline can pass while its Activate waits behind another switch of the name (whose health check
    holds the name); the host then puts the device back, so the late request must not switch the device after."""
    import threading
    import time

    handle = agent_factory(backend="onnxruntime", health_cmd=f"touch {tmp_path}/checked.$DEPLOY_MODEL_VERSION; sleep 2")
    client = AgentClient(Device(name="a", address=handle.address))
    for seed in (1, 2):
        archive, _feeds, _want = single_segment_bundle(tmp_path / f"b{seed}", conv_net(seed=seed), f"det{seed}")
        digest = client.upload(archive).digest
        _build(client, digest)
        assert _register(client, digest).version.version == seed
    first = threading.Thread(target=client.activate, args=("det", 1))
    first.start()
    deadline = time.monotonic() + 30
    while not (tmp_path / "checked.1").exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # the first switch is in its health check, holding the name
    with pytest.raises(AgentError) as late:
        client.activate("det", 2, timeout=0.5)
    assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    first.join(30)
    end = time.monotonic() + 1.5  # the queued request runs as soon as the first ends: it would switch within ms
    while time.monotonic() < end:
        assert not (tmp_path / "checked.2").exists(), "the abandoned activation ran its health check"
        time.sleep(0.05)
    (model,) = client.list_models("det").models
    assert model.active == 1
    client.close()
