"""`deploy bench --report DIR`: a Markdown report with a latency histogram and CDF (matplotlib, extra `report`)."""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from device_agent.errors import InvalidInput

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


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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


def write_report(directory: Path, source: str, runs: list[dict[str, Any]]) -> dict[str, str]:
    """Write report.md and the two PNGs; each file appears whole or not at all."""
    require_matplotlib()
    if not any(run.get("samples_ms") for run in runs):
        raise InvalidInput("the agents returned no latency samples, so there is nothing to plot; upgrade the agents")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / HIST, _plot(runs, "hist"))
    _atomic_write(directory / CDF, _plot(runs, "cdf"))
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
    _atomic_write(directory / REPORT, "\n".join(lines).encode())
    return {"report": str(directory / REPORT), "histogram": str(directory / HIST), "cdf": str(directory / CDF)}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)
