"""`deploy bench --report DIR`: a Markdown report with a latency histogram and CDF (matplotlib, extra `report`)."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from device_agent.errors import InvalidInput
from device_agent.fileio import atomic_write

HIST = "latency_hist.png"
CDF = "latency_cdf.png"
REPORT = "report.md"


def require_matplotlib() -> None:
    """Fail before any work when the extra is missing, not after a long benchmark."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InvalidInput("--report needs matplotlib, which is not installed; install the extra: "
                           "pip install 'jetson-deploy[report]' (or drop --report)") from None


def _plot(runs: list[dict[str, Any]], kind: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for run in runs:
        samples = np.asarray(run["samples_ms"], dtype=float)
        if samples.size == 0:
            continue
        label = f"{run['device']} (p50 {run['p50_ms']:.2f} ms)"
        if kind == "hist":
            ax.hist(samples, bins=min(60, max(10, samples.size // 5)), alpha=0.6, label=label)
            ax.set_ylabel("iterations")
        else:
            xs = np.sort(samples)
            ax.plot(xs, np.arange(1, xs.size + 1) / xs.size, label=label)
            ax.set_ylabel("fraction of iterations")
            ax.set_ylim(0, 1.0)
    ax.set_xlabel("latency (ms)")
    ax.set_title("latency histogram" if kind == "hist" else "latency CDF")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _layers_plot(run: dict[str, Any], top: int) -> bytes:
    """A horizontal bar chart of the run's ``top`` slowest layers, slowest at the top."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(run["layers"], key=lambda r: -r["mean_ms"])[:top]
    labels = [_short(r["name"], 48) for r in rows][::-1]
    values = [r["mean_ms"] for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.3 * len(rows)), dpi=110)
    bars = ax.barh(range(len(rows)), values)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=7)
    for bar, r in zip(bars, rows[::-1]):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {100 * r['share']:.1f} %", va="center",
                fontsize=7)
    ax.set_xlabel("mean ms per run")
    ax.set_title(f"{run['device']}: {len(rows)} slowest of {len(run['layers'])} layers")
    ax.grid(alpha=0.3, axis="x")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


def layers_file(index: int) -> str:
    return f"layers_{index}.png"


def write_report(directory: Path, source: str, runs: list[dict[str, Any]], top: int = 15) -> dict[str, str]:
    """Write report.md and the PNGs (latency histogram, CDF, and per device with a layer profile its ``top``
    slowest layers); each file appears whole or not at all."""
    require_matplotlib()
    if not any(run.get("samples_ms") for run in runs):
        raise InvalidInput("the agents returned no latency samples, so there is nothing to plot; upgrade the agents")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / HIST, _plot(runs, "hist"))
    atomic_write(directory / CDF, _plot(runs, "cdf"))
    metrics = ["min_ms", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "throughput", "iterations"]
    lines = [f"# Benchmark of {source}", "",
             f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {len(runs)} device(s).", "",
             "| metric | " + " | ".join(r["device"] for r in runs) + " |",
             "| --- | " + " | ".join("---:" for _ in runs) + " |"]
    for m in metrics:
        lines.append(f"| {m} | " + " | ".join(_cell(r.get(m)) for r in runs) + " |")
    lines.append("| backend | " + " | ".join(str(r.get("backend", "")) for r in runs) + " |")
    lines.append("| bundle | " + " | ".join(f"`{str(r.get('bundle_digest', ''))[:19]}`" for r in runs) + " |")
    lines += ["", f"![latency histogram]({HIST})", "", f"![latency CDF]({CDF})", ""]
    files = {"report": str(directory / REPORT), "histogram": str(directory / HIST), "cdf": str(directory / CDF)}
    for i, run in enumerate(runs):
        if not run.get("layers"):
            continue
        atomic_write(directory / layers_file(i), _layers_plot(run, top))
        files[f"layers_{run['device']}"] = str(directory / layers_file(i))
        lines += [f"## Layers on {run['device']}", "",
                  f"{len(run['layers'])} layers over {run.get('layers_runs', 0)} profiled runs after the timed ones: "
                  f"sum of the layers {run.get('layers_total_ms', 0.0):.3f} ms, a profiled run "
                  f"{run.get('layers_wall_ms', 0.0):.3f} ms, the benchmark's mean {run.get('mean_ms', 0.0):.3f} ms.",
                  "", f"![slowest layers]({layers_file(i)})", "",
                  "| share | mean ms | op | layer | segment |", "| ---: | ---: | --- | --- | --- |"]
        for r in sorted(run["layers"], key=lambda r: -r["mean_ms"])[:top]:
            lines.append(f"| {100 * r['share']:.1f} % | {r['mean_ms']:.3f} | {r['op']} | "
                         f"{_short(r['name'], 120).replace('|', '/')} | {r['segment']} |")
        lines.append("")
    atomic_write(directory / REPORT, "\n".join(lines).encode())
    return files


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)
