"""The agent's cudnn_conv_algo_search setting (onnxruntime-cuda): flag or variable, checked at start.

EXHAUSTIVE, onnxruntime's default, lets cuDNN's benchmark pick algorithms each time a session loads; HEURISTIC
picks the same ones every load, which makes benchmarks of one model comparable across loads (docs/hardware.md g).
"""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from device_agent import engines
from device_agent.config import add_arguments, from_namespace
from device_agent.engine_service import EngineService


def _settings(argv: list[str], environ: dict[str, str]):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_namespace(parser.parse_args(argv), environ)


def test_the_setting_defaults_to_onnxruntimes_exhaustive_and_takes_a_flag_or_variable_in_any_case():
    assert _settings([], {}).cudnn_conv_algo_search == "EXHAUSTIVE"
    assert _settings([], {"DEPLOY_AGENT_CUDNN_CONV_ALGO_SEARCH": "heuristic"}).cudnn_conv_algo_search == "HEURISTIC"
    assert _settings(["--cudnn-conv-algo-search", "DEFAULT"],
                     {"DEPLOY_AGENT_CUDNN_CONV_ALGO_SEARCH": "HEURISTIC"}).cudnn_conv_algo_search == "DEFAULT"


def test_an_unknown_value_is_refused_naming_where_it_came_from_and_the_values_allowed():
    with pytest.raises(SystemExit) as exc:
        _settings([], {"DEPLOY_AGENT_CUDNN_CONV_ALGO_SEARCH": "FASTEST"})
    msg = str(exc.value)
    assert "'FASTEST'" in msg and "DEPLOY_AGENT_CUDNN_CONV_ALGO_SEARCH" in msg and "EXHAUSTIVE, HEURISTIC, DEFAULT" in msg


def test_the_agent_process_exits_at_start_with_one_line_for_an_unknown_value(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "device_agent", "--listen", "127.0.0.1:0", "--store",
                           str(tmp_path / "store"), "--cudnn-conv-algo-search", "FASTEST"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is not one of EXHAUSTIVE, HEURISTIC, DEFAULT" in lines[0]


def test_the_engine_service_hands_the_setting_to_the_onnxruntime_cuda_backend(tmp_path):
    settings = _settings(["--store", str(tmp_path / "store"), "--cudnn-conv-algo-search", "HEURISTIC"], {})
    backend = engines.get("onnxruntime-cuda")
    try:
        EngineService(settings, store=None)
        assert backend.conv_algo_search == "HEURISTIC"
    finally:
        backend.conv_algo_search = "EXHAUSTIVE"
