"""`deploy bench`: one or several devices side by side, the Markdown report, and Ctrl-C during a benchmark."""
from __future__ import annotations

import os
import time

import psutil

from tests.conftest import deploy_bin
from tests.host.cli.helpers import interrupt_after, parse_json


def test_bench_on_two_agents_gives_one_result_per_device_and_a_side_by_side_table(agent_factory, deploy,
                                                                                  tiny_model):
    a, b = agent_factory(), agent_factory()
    data = parse_json(deploy("bench", str(tiny_model), "-d", a.address, "-d", b.address, "-n", "20", "--json"))
    assert [d["device"] for d in data["devices"]] == [a.address, b.address]
    for d in data["devices"]:
        assert d["iterations"] == 20
        assert 0 < d["p50_ms"] <= d["p90_ms"] <= d["p99_ms"]
        assert d["throughput"] > 0 and d["mean_ms"] > 0
    assert data["devices"][0]["bundle_digest"] == data["devices"][1]["bundle_digest"]

    table = deploy("bench", str(tiny_model), "-d", a.address, "-d", b.address, "-n", "5")
    assert table.returncode == 0, table.stderr
    header = next(line for line in table.stdout.splitlines() if "latency" in line)
    assert a.address in header and b.address in header, table.stdout
    p50 = next(line for line in table.stdout.splitlines() if line.strip().startswith("p50 ms"))
    assert len(p50.split()) == 4, "one p50 per device, side by side"


def test_bench_report_writes_markdown_with_a_latency_histogram_and_cdf_png(agent_factory, deploy, tiny_model,
                                                                            tmp_path):
    agent = agent_factory()
    out = tmp_path / "report"
    data = parse_json(deploy("bench", str(tiny_model), "-d", agent.address, "-n", "40", "--report", str(out),
                             "--json"))
    md = (out / "report.md").read_text()
    assert "![latency histogram](latency_hist.png)" in md and "![latency CDF](latency_cdf.png)" in md
    assert f"{data['devices'][0]['p50_ms']:.3f}" in md
    for png in ("latency_hist.png", "latency_cdf.png"):
        head = (out / png).read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n", png
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temp files left behind"


def test_bench_report_without_matplotlib_fails_first_with_one_line_naming_the_extra(agent_factory, deploy,
                                                                                    tiny_model, tmp_path):
    agent = agent_factory()
    # a `matplotlib` that cannot be imported shadows the real one, as on a host installed without [report]
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = {**os.environ, "PYTHONPATH": f"{shadow.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.monotonic()
    proc = deploy("bench", str(tiny_model), "-d", agent.address, "--report", str(tmp_path / "r"), env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "jetson-deploy[report]" in proc.stderr
    assert not (tmp_path / "r").exists()
    assert time.monotonic() - started < 20, "it fails before benchmarking"


def test_sigint_during_a_benchmark_exits_130_and_the_agent_stops_benchmarking(agent_factory, deploy, tiny_model):
    agent = agent_factory()
    parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--json"))
    rc, seen, rest, _ = interrupt_after([deploy_bin(), "bench", str(tiny_model), "-d", agent.address,
                                         "--duration", "120"], "iterations,")  # the benchmark runs on the agent
    assert rc == 130, seen + rest
    assert "error: interrupted" in rest
    # the agent's benchmark loop noticed the cancelled call: its process goes quiet instead of
    # spinning for the remaining ~2 minutes
    agent_proc = psutil.Process(agent.proc.pid)
    time.sleep(1.0)
    agent_proc.cpu_percent(None)
    time.sleep(2.0)
    assert agent_proc.cpu_percent(None) < 30.0
    data = parse_json(deploy("bench", str(tiny_model), "-d", agent.address, "-n", "5", "--json"))
    assert data["devices"][0]["iterations"] == 5


def test_a_dynamic_batch_model_is_pushed_with_a_batch_range_and_benchmarked_at_another_batch(agent_factory, deploy,
                                                                                              tmp_path):
    from tests.host.cli.helpers import tiny_conv_net

    agent = agent_factory()
    model = tiny_conv_net(tmp_path / "dyn.onnx", batch="N")
    pushed = parse_json(deploy("push", str(model), "--device", agent.address, "--batch-range", "1:4:8", "--json"))
    assert pushed["verify"]["max_rel_err"] < 1e-4
    data = parse_json(deploy("bench", str(model), "-d", agent.address, "--batch-range", "1:4:8", "--batch", "8",
                             "-n", "10", "--json"))
    run = data["devices"][0]
    assert run["batch"] == 8 and run["bundle_digest"] == pushed["bundle_digest"]
    assert run["throughput"] > 0
    missing = deploy("push", str(model), "--device", agent.address, "--json")
    # the advice names the flag push takes (push's --batch is the run's batch, an int)
    assert missing.returncode == 2 and "--batch-range MIN:OPT:MAX" in missing.stderr, missing.stderr
    outside = deploy("bench", str(model), "-d", agent.address, "--batch-range", "1:4:8", "--batch", "16", "-n", "2")
    assert outside.returncode != 0 and "recompile with --batch-range 1:4:16" in outside.stderr, outside.stderr
