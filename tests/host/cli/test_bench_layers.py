"""`deploy bench --layers`: a per-layer profile from the agent's backend profiler, over real gRPC on loopback."""
from __future__ import annotations

import onnx

from tests.host.cli.helpers import parse_json


def test_bench_layers_json_lists_every_resnet18_node_with_times_adding_up_to_the_mean(agent_factory, deploy,
                                                                                        resnet18):
    agent = agent_factory()
    nodes = [n.name for n in onnx.load(str(resnet18)).graph.node]
    assert len(nodes) == 69
    seen = []
    for _attempt in range(3):  # other processes on a shared host can slow the timed or the profiled runs alone
        data = parse_json(deploy("bench", str(resnet18), "-d", agent.address, "-n", "30", "--layers", "--json"))
        (run,) = data["devices"]
        rows = run["layers"]
        assert rows and set(rows[0]) == {"name", "op", "mean_ms", "share", "segment", "calls"}
        listed = {part for r in rows for part in r["name"].split(" + ")}
        assert not set(nodes) - listed, f"nodes not listed: {sorted(set(nodes) - listed)}"
        assert not [r for r in rows if r["calls"] == 0], "every node ran in a kernel, none was dropped"
        assert [r["mean_ms"] for r in rows] == sorted((r["mean_ms"] for r in rows), reverse=True)
        total = sum(r["mean_ms"] for r in rows)
        assert abs(total - run["layers_total_ms"]) < 1e-6 and abs(sum(r["share"] for r in rows) - 1) < 1e-6
        assert run["layers_runs"] == 10 and all(r["calls"] == 10 for r in rows)
        # the kernels account for the profiled runs they ran in
        assert 0.8 * run["layers_wall_ms"] <= total <= run["layers_wall_ms"] * 1.001, run
        seen.append((round(total, 3), round(run["mean_ms"], 3)))
        # and for the benchmark's mean latency, timed without the profiler, within 20 %
        if abs(total - run["mean_ms"]) <= 0.2 * run["mean_ms"]:
            return
    raise AssertionError(f"layer sum vs benchmark mean (ms), each attempt: {seen}")


def test_bench_layers_table_shows_the_top_n_and_the_report_charts_them(agent_factory, deploy, tiny_model, tmp_path):
    agent = agent_factory()
    out = tmp_path / "report"
    proc = deploy("bench", str(tiny_model), "-d", agent.address, "-n", "10", "--layers", "--top", "3",
                  "--report", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("layers on"))
    assert "3 slowest of" in lines[head] and "profiled run" in lines[head], proc.stdout
    assert lines[head + 1].split()[:4] == ["share", "mean", "ms", "calls"], proc.stdout
    table = lines[head + 2:head + 5]
    assert all(line.split()[1] == "%" for line in table), proc.stdout
    assert len(lines) == head + 5 or not lines[head + 5].split()[1:2] == ["%"], "only the top 3 rows"
    md = (out / "report.md").read_text()
    assert "## Layers on" in md and "![slowest layers](layers_0.png)" in md
    assert (out / "layers_0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert md.count(" % | ") == 3, md


def test_bench_layers_of_a_hybrid_bundle_has_the_tvm_remainder_as_one_row(agent_factory, deploy, tiny_model):
    agent = agent_factory()
    data = parse_json(deploy("bench", str(tiny_model), "-d", agent.address, "-n", "10", "--no-offload", "Relu",
                             "--layers", "--json"))
    rows = data["devices"][0]["layers"]
    (tvm,) = [r for r in rows if r["op"] == "tvm"]
    assert tvm["segment"] == "remainder" and "TVM remainder" in tvm["name"] and tvm["calls"] == 10
    names = {r["name"] for r in rows if r["segment"] != "remainder"}
    # the Relu ran in TVM: no segment's kernel claims it
    assert {"conv", "gap", "flatten", "fc"} <= names and not any("relu" in n for n in names), names
