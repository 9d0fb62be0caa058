"""One build deadline for `push` and `fleet warm` (issue 29): `DEPLOY_BUILD_TIMEOUT_S`, read by the one consumer of
the Build stream (host/pipeline/build_stream.py).

Push used to build under the client's generic stream deadline (1 h) and warm under its own (3 h), so a Nano build
of between one and three hours failed under `deploy push` and succeeded under `fleet warm`. Here the hours become
fractions of a second: the generic deadline is shortened below a real onnxruntime build of a 16 MiB model on a real
agent (about 0.3 s on an idle machine), and the build setting is put below it, then above it. Both paths must give up
at the setting and both must finish past the old push deadline; a path with a deadline of its own fails one half.
"""
from __future__ import annotations

from pathlib import Path

import grpc
import pytest

import host.client.agent
from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.fleet.warm import ClassPlan, WarmResult, Warmer
from host.inventory import Device
from host.pipeline.build_stream import DEFAULT_BUILD_TIMEOUT_S, ENV_BUILD_TIMEOUT, build_timeout_s
from host.pipeline.push import PushOptions, PushResult, push
from device_agent.errors import InvalidInput
from tests.device_agent.onnx_models import single_segment_bundle, wide_mlp

pytestmark = pytest.mark.timeout(180)

#: The old push deadline (the client's generic 1 h stream deadline), modelled shorter than any build below.
OLD_PUSH_DEADLINE_S = 0.05


def slow_bundle(tmp_path: Path, seed: int) -> Path:
    """A bundle whose one segment takes a real build of some tenths of a second (a new engine key per seed)."""
    archive, _, _ = single_segment_bundle(tmp_path, wide_mlp(1024, 4, seed=seed), f"mlp{seed}")
    return archive


def push_to(agent, archive: Path) -> PushResult:
    with AgentClient(Device(name="pushed", address=agent.address, profile="x86-cpu")) as client:
        return push(client, archive, PushOptions(verify=False))


def warm_on(agent, archive: Path) -> WarmResult:
    device = Device(name="warmed", address=agent.address, profile="x86-cpu")
    return Warmer([device], lambda cls, info, dev: ClassPlan(archive)).run()


def test_push_and_warm_build_under_the_one_setting_past_the_old_push_deadline(agent_factory, tmp_path, monkeypatch):
    push_agent, warm_agent = agent_factory(), agent_factory()
    monkeypatch.setattr(host.client.agent, "STREAM_TIMEOUT_S", OLD_PUSH_DEADLINE_S)

    # the setting below the build: both paths give up at it
    monkeypatch.setenv(ENV_BUILD_TIMEOUT, str(OLD_PUSH_DEADLINE_S))
    first = slow_bundle(tmp_path, seed=81)
    with pytest.raises(AgentError) as caught:
        push_to(push_agent, first)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED, caught.value
    warmed = warm_on(warm_agent, first)
    [c] = warmed.classes
    assert not warmed.ok and c.builds == 0 and [f.device for f in c.failed] == ["warmed"], c.to_dict()
    assert "DEADLINE_EXCEEDED" in c.failed[0].reason, c.failed[0]

    # the setting above the build, the old push deadline still below it: both complete
    monkeypatch.setenv(ENV_BUILD_TIMEOUT, "120")
    second = slow_bundle(tmp_path, seed=82)
    pushed = push_to(push_agent, second)
    assert pushed.build.built == 1 and pushed.build.seconds > OLD_PUSH_DEADLINE_S, pushed.build
    warmed = warm_on(warm_agent, second)
    [c] = warmed.classes
    assert warmed.ok and c.built_on == "warmed" and c.builds == 1, c.to_dict()
    assert c.build_s > OLD_PUSH_DEADLINE_S, c.to_dict()  # the device's own build seconds


def test_the_build_deadline_setting_defaults_to_3_hours_and_refuses_nonsense():
    assert build_timeout_s({}) == DEFAULT_BUILD_TIMEOUT_S == 3 * 3600.0
    assert build_timeout_s({ENV_BUILD_TIMEOUT: " 14400 "}) == 14400.0
    for bad in ("0", "-5", "soon", "nan", "inf"):
        with pytest.raises(InvalidInput, match=ENV_BUILD_TIMEOUT):
            build_timeout_s({ENV_BUILD_TIMEOUT: bad})
