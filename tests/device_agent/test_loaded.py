"""Loaded engines without gRPC: the agent's engine service in-process, and `LoadedModels` as the runtime will use it."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from device_agent.config import AgentSettings
from device_agent.engine_service import EngineService
from device_agent.errors import EngineMissing, PreconditionFailed
from device_agent.fileio import sha256_file
from device_agent.info import probe_device
from device_agent.loaded import LOADED_ENGINES, LoadedModels
from device_agent.store import Store
from protos import agent_pb2
from tests.device_agent.onnx_models import conv_net, max_rel_err, single_segment_bundle

FACTS = probe_device()


def stored(tmp_path, settings: AgentSettings, batch: int = 2):
    """A dynamic-batch bundle in the settings' store: (store, digest, reference inputs, reference outputs)."""
    archive, feeds, want = single_segment_bundle(tmp_path / "src", conv_net(batch="N", seed=5), batch=batch)
    store = Store(settings.store, settings.max_upload_bytes, 4 * settings.chunk_bytes)
    digest = sha256_file(archive)
    store.receive(digest, archive.stat().st_size, 0, [archive.read_bytes()])
    return store, digest, feeds, want


def tensor(name, arr):
    arr = np.ascontiguousarray(arr)
    return agent_pb2.Tensor(name=name, dtype=arr.dtype.name, shape=list(arr.shape), data=arr.tobytes())


def test_the_per_key_load_locks_do_not_outlive_the_loads_of_many_distinct_keys(tmp_path):
    settings = AgentSettings(store=tmp_path / "store", backend="onnxruntime", multi_engine_mode=1)
    store, digest, feeds, _ = stored(tmp_path, settings)
    service = EngineService(settings, store, FACTS)
    x = feeds["x"][:1]
    batches = range(1, 2 * LOADED_ENGINES + 1)  # mode 1: one engine, one key, per batch size
    for b in batches:
        reply = service.Run(agent_pb2.RunRequest(bundle_digest=digest, inputs=[tensor("x", np.repeat(x, b, 0))]),
                            None)
        assert reply.outputs[0].shape[0] == b
    assert len(service.cache.list()) == len(batches)
    assert service.loaded._key_locks == {}
    assert len(service.loaded._loaded) <= LOADED_ENGINES

    errors = []

    def run_batch(b: int) -> None:  # threads loading the same keys at once, some after their engines were dropped
        try:
            service.Run(agent_pb2.RunRequest(bundle_digest=digest, inputs=[tensor("x", np.repeat(x, b, 0))]), None)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run_batch, args=(1 + i % 6,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and service.loaded._key_locks == {}


def test_loaded_models_runs_a_built_bundle_from_the_cache_without_grpc_and_never_builds(tmp_path):
    settings = AgentSettings(store=tmp_path / "store", backend="onnxruntime")
    store, digest, feeds, want = stored(tmp_path, settings)

    models = LoadedModels.from_settings(settings, FACTS)
    with pytest.raises(EngineMissing) as missing:  # nothing built yet: one clear error, and still nothing built
        models.open(digest)
    assert isinstance(missing.value, PreconditionFailed)
    assert "segment seg0" in str(missing.value) and "build it first" in str(missing.value)
    assert models.cache.list() == []

    agent = EngineService(settings, store, FACTS)  # what deploy push does on the agent: Build
    events = list(agent.Build(agent_pb2.BuildRequest(bundle_digest=digest), None))
    assert events[-1].summary.built == 1

    model = LoadedModels.from_settings(settings, FACTS).open(digest)  # a fresh process's view: disk only
    assert [t.name for t in model.inputs] == ["x"] and [t.name for t in model.outputs] == ["y"]
    out = model.run(feeds)
    assert max_rel_err(out["y"], want["y"]) < 1e-4
    with pytest.raises(EngineMissing):  # another batch is another key (mode 0 covers only smaller ones)
        model.run({"x": np.repeat(feeds["x"], 3, 0)})
    assert len(models.cache.list()) == 1
