"""The agent's onnxruntime_spin setting: onnxruntime's intra-op threads busy-wait after each run only when asked.

Off by default: a run the agent makes once (a verify at every RegisterVersion of a rollout) cost about 30 ms of a
core afterwards with onnxruntime's own default, on a device whose CPU belongs to its application (docs/fleet.md,
"Rollout timing"). `--onnxruntime-spin` gives back onnxruntime's default for the lowest back-to-back latency.
"""
from __future__ import annotations

import argparse

from device_agent import engines
from device_agent.config import add_arguments, from_namespace
from device_agent.engine_service import EngineService
from tests.host.cli.helpers import tiny_conv_net

SPIN = "session.intra_op.allow_spinning"


def _settings(argv: list[str], environ: dict[str, str]):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_namespace(parser.parse_args(argv), environ)


def test_spinning_is_off_unless_a_flag_or_variable_turns_it_on():
    assert _settings([], {}).onnxruntime_spin is False
    assert _settings(["--onnxruntime-spin"], {}).onnxruntime_spin is True
    assert _settings([], {"DEPLOY_AGENT_ONNXRUNTIME_SPIN": "1"}).onnxruntime_spin is True


def test_sessions_the_agent_loads_sleep_between_runs_unless_spin_is_on(tmp_path):
    model = tiny_conv_net(tmp_path / "m.onnx", seed=1).read_bytes()
    backend = engines.get("onnxruntime")
    try:
        for argv, want in (([], "0"), (["--onnxruntime-spin"], None)):
            EngineService(_settings(["--store", str(tmp_path / "store"), *argv], {}), store=None)
            assert _spin_entry(backend.load_impl(model, None).session) == want, argv
    finally:
        backend.spin = True


def _spin_entry(session) -> "str | None":
    """The session's allow_spinning entry; None when never set (onnxruntime's default: it spins)."""
    try:
        return session.get_session_options().get_session_config_entry(SPIN)
    except Exception:  # noqa: BLE001 - onnxruntime raises for a key that was never set
        return None
