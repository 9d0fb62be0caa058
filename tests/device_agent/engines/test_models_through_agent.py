"""The compiler's models, compiled to bundles, built and run by a real agent, match onnxruntime on the original.

Covers whole-model bundles (one segment) and hybrid bundles whose TVM remainder calls segment engines.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from host.client.agent import AgentClient
from host.inventory import Device
from protos import agent_pb2
from tests.device_agent.onnx_models import max_rel_err, reference_run

REPO = Path(__file__).resolve().parents[3]
Stage = agent_pb2.SegmentEvent


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import make_models
    finally:
        sys.path.pop(0)
    out = tmp_path_factory.mktemp("models")
    return make_models.write_models(out)


@pytest.fixture(scope="module")
def compiled(models, tmp_path_factory):
    from host.compiler.api import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("bundles")
    cache = {}

    def get(model: str, exclude=()):
        key = (model, tuple(exclude))
        if key not in cache:
            out = root / f"{model}-{'-'.join(exclude) or 'all'}"
            cache[key] = compile_model(models[model], out, CompileOptions(profile="x86-cpu", exclude_ops=exclude))
        return cache[key]

    return get


def _tensor(name, arr):
    return agent_pb2.Tensor(name=name, dtype=arr.dtype.name, shape=list(arr.shape), data=arr.tobytes())


def _inputs(result, seed=123):
    rng = np.random.default_rng(seed)
    return {t.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in t.shape]).astype(t.dtype)
            for t in result.manifest.inputs}


@pytest.mark.slow
@pytest.mark.parametrize("model, exclude", [
    ("resnet18", ()), ("resnet50", ()), ("mobilenetv2", ()), ("transformer", ()),
    ("transformer", ("Softmax",)), ("resnet18", ("MaxPool",)),
])
def test_bundle_run_by_the_agent_matches_onnxruntime_on_the_original(agent, models, compiled, model, exclude):
    result = compiled(model, exclude)
    assert (result.manifest.remainder is not None) == bool(exclude)
    feeds = _inputs(result)
    want = reference_run(Path(models[model]).read_bytes(), feeds)
    with AgentClient(Device(name="t", address=agent.address)) as client:
        digest = client.upload(result.archive).digest
        events = list(client.build(digest))
        summary = events[-1].summary
        assert summary.built == len(result.manifest.segments) and summary.failed == 0
        reply = client.run(agent_pb2.RunRequest(bundle_digest=digest,
                                                inputs=[_tensor(k, v) for k, v in feeds.items()]))
        for out in reply.outputs:
            got = np.frombuffer(out.data, dtype=out.dtype).reshape(list(out.shape))
            assert max_rel_err(got, want[out.name]) < 1e-4, out.name
        verify = client.run(agent_pb2.RunRequest(bundle_digest=digest, verify=True))
        assert verify.max_rel_err < 1e-4
        again = list(client.build(digest))
        hits = [e.segment for e in again if e.WhichOneof("event") == "segment" and e.segment.stage == Stage.CACHE_HIT]
        assert len(hits) == len(result.manifest.segments)
        assert all(h.lookup_s < 0.1 for h in hits), [h.lookup_s for h in hits]


@pytest.mark.slow
def test_dynamic_batch_hybrid_bundle_runs_each_batch_with_onnxruntimes_result(agent, tmp_path):
    import onnx

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import make_models
    finally:
        sys.path.pop(0)
    from host.compiler.api import CompileOptions, compile_model

    model = tmp_path / "resnet18-dyn.onnx"
    onnx.save(make_models.resnet(18, batch="N"), str(model))
    result = compile_model(model, tmp_path / "out", CompileOptions(profile="x86-cpu", batch="1:2:4",
                                                                   exclude_ops=["GlobalAveragePool"]))
    assert result.manifest.remainder is not None and len(result.manifest.segments) == 2
    with AgentClient(Device(name="t", address=agent.address)) as client:
        digest = client.upload(result.archive).digest
        for batch in (3, 1):  # 3 builds engines for 1..3; 1 runs on them
            x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
            want = reference_run(model.read_bytes(), {"input": x})
            reply = client.run(agent_pb2.RunRequest(bundle_digest=digest, inputs=[_tensor("input", x)]))
            (out,) = reply.outputs
            got = np.frombuffer(out.data, dtype=out.dtype).reshape(list(out.shape))
            assert got.shape[0] == batch and max_rel_err(got, want[out.name]) < 1e-4
        engines = client.list_engines().engines
        assert len(engines) == 2 and all('"max": [3' in e.attributes["profiles"] for e in engines)
