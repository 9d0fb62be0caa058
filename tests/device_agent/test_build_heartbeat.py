"""A running build streams PROGRESS heartbeats with the elapsed time between CACHE_MISS and BUILT (a real agent, a
real onnxruntime build of a 16 MiB model, the heartbeat interval set low through the agent's own setting)."""
from __future__ import annotations

import pytest

from protos import agent_pb2
from tests.device_agent.onnx_models import single_segment_bundle, wide_mlp
from tests.device_agent.test_faults import client_for

pytestmark = pytest.mark.timeout(120)
Stage = agent_pb2.SegmentEvent


def test_heartbeat_events_arrive_while_a_segment_builds_and_a_cache_hit_has_none(agent_factory, tmp_path):
    agent = agent_factory(build_heartbeat_s=0.005)
    archive, _, _ = single_segment_bundle(tmp_path, wide_mlp(1024, 4, seed=71), "mlp")
    with client_for(agent) as client:
        digest = client.upload(archive).digest
        events = [e.segment for e in client.build(digest) if e.WhichOneof("event") == "segment"]
        again = [e.segment for e in client.build(digest) if e.WhichOneof("event") == "segment"]
    stages = [e.stage for e in events]
    beats = [e for e in events if e.stage == Stage.PROGRESS]
    assert beats, [Stage.Stage.Name(s) for s in stages]
    assert all(b.progress_kind == "heartbeat" for b in beats)  # onnxruntime has no progress monitor
    assert stages.index(Stage.CACHE_MISS) < stages.index(Stage.PROGRESS) < stages.index(Stage.BUILT)
    elapsed = [b.elapsed_s for b in beats]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    assert Stage.PROGRESS not in [e.stage for e in again] and Stage.CACHE_HIT in [e.stage for e in again]
    from host.pipeline.push import progress_text  # what push's live view shows for it

    assert progress_text(beats[-1]) == f"{beats[-1].elapsed_s:.0f} s"
