"""How push, bench and run show themselves: live per-segment status on a terminal, plain lines otherwise.

`--json` uses the pipeline's silent base `Observer`; this module only renders.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional

from host.pipeline.observer import Observer, SegmentState

from .output import Output

if TYPE_CHECKING:  # rich is imported where something is drawn, so `--json` never loads it
    from rich.console import Console, Group
    from rich.table import Table

_STAGE_STYLE = {"waiting": "dim", "started": "yellow", "miss": "yellow", "parsed": "yellow", "hit": "green",
                "built": "green", "failed": "bold red"}


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _segment_line(s: SegmentState) -> str:
    where = f"[{s.index + 1}/{s.total}] " if s.total else ""
    if s.stage == "hit":
        return f"build {where}{s.id}: cache hit"
    if s.stage == "miss":
        return f"build {where}{s.id}: cache miss, building" + (f" ({s.progress})" if s.progress else "")
    if s.stage == "built":
        return f"build {where}{s.id}: built in {s.build_s:.2f} s ({mib(s.engine_bytes)}, {s.backend or 'backend'})"
    if s.stage == "failed":
        return f"build {where}{s.id}: FAILED: {s.error}"
    return f"build {where}{s.id}: {s.stage}"


class PlainObserver(Observer):
    """Without a terminal: one line per phase and per segment change, progress at most every 2 s."""

    def __init__(self, console: Console, prefix: str = "") -> None:
        self.err = console
        self.prefix = prefix
        self._last = 0.0
        self._seen: dict[str, tuple[str, str]] = {}

    def _print(self, line: str) -> None:
        self.err.print(f"{self.prefix}{line}", markup=False)

    def phase(self, name: str, detail: str = "") -> None:
        self._print(f"{name}: {detail}" if detail else f"{name} ...")

    def phase_done(self, name: str, seconds: float, detail: str = "") -> None:
        self._print(f"{name}: done in {seconds:.2f} s" + (f" ({detail})" if detail else ""))

    def _throttled(self, final: bool) -> bool:
        now = time.monotonic()
        if final or now - self._last >= 2.0:
            self._last = now
            return True
        return False

    def upload_progress(self, done: int, total: int) -> None:
        if self._throttled(done >= total):
            self._print(f"upload: {done}/{total} bytes ({100.0 * done / max(total, 1):.0f}%)")

    def segment(self, state: SegmentState) -> None:
        seen = (state.stage, state.progress)
        if self._seen.get(state.id) != seen and state.stage not in ("parsed",):
            if state.progress and self._seen.get(state.id, ("",))[0] == state.stage and not self._throttled(False):
                return  # progress of a running build: at most one line per throttle interval
            self._seen[state.id] = seen
            self._print(_segment_line(state))

    def bench_progress(self, done: int, total: int, elapsed_s: float, last_ms: Optional[float]) -> None:
        if self._throttled(bool(total) and done >= total):
            of = f"/{total}" if total else ""
            self._print(f"bench: {done}{of} iterations, {elapsed_s:.1f} s")

    def log(self, message: str) -> None:
        self._print(f"agent: {message}")


class LiveObserver(Observer):
    """On a terminal: a live panel with the phases, each segment's state, and upload/benchmark progress."""

    def __init__(self, console: Console, title: str = "") -> None:
        self.err = console
        self.title = title
        self.phases: list[tuple[str, str, str]] = []  # (name, state, detail)
        self.segments: dict[str, SegmentState] = {}
        self.progress: Optional[tuple[str, float, float, str]] = None
        from rich.live import Live

        self.live = Live(self._render(), console=console, refresh_per_second=8, transient=False)

    def __enter__(self) -> "LiveObserver":
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress = None
        self.live.update(self._render())
        self.live.__exit__(*exc)

    def _render(self) -> Group:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        phases = Table.grid(padding=(0, 1))
        for name, state, detail in self.phases:
            mark = "[green]done[/green]" if state == "done" else "[yellow]...[/yellow]"
            phases.add_row(f"[bold]{name}[/bold]", mark, Text(detail, overflow="ellipsis", no_wrap=True))
        parts: list[Any] = [Text(self.title, style="bold")] if self.title else []
        parts.append(phases)
        if self.segments:
            seg = Table(box=None, show_header=True, header_style="dim", padding=(0, 2))
            for col in ("segment", "state", "parse s", "build s", "engine", "backend"):
                seg.add_column(col)
            for s in self.segments.values():
                style = _STAGE_STYLE.get(s.stage, "")
                building = f"building ({s.progress})" if s.progress else "building"
                state = {"hit": "cache hit", "miss": building, "started": "started", "parsed": building,
                         "built": "built", "failed": f"failed: {s.error}"}.get(s.stage, s.stage)
                seg.add_row(s.id, Text(state, style=style), _fmt(s.parse_s), _fmt(s.build_s),
                            mib(s.engine_bytes) if s.engine_bytes else "-", s.backend or "-")
            parts.append(seg)
        if self.progress:
            label, done, total, text = self.progress
            bar = Table.grid(padding=(0, 1))
            bar.add_row(f"[bold]{label}[/bold]", ProgressBar(total=total or None, completed=done, width=30),
                        Text(text, style="cyan"))
            parts.append(bar)
        return Group(*parts)

    def _refresh(self) -> None:
        self.live.update(self._render())

    def phase(self, name: str, detail: str = "") -> None:
        self.phases.append((name, "running", detail))
        self._refresh()

    def phase_done(self, name: str, seconds: float, detail: str = "") -> None:
        for i, (n, _state, _d) in enumerate(self.phases):
            if n == name:
                self.phases[i] = (name, "done", f"{seconds:.2f} s  {detail}")
        self.progress = None
        self._refresh()

    def upload_progress(self, done: int, total: int) -> None:
        self.progress = ("upload", done, total, f"{mib(done)} / {mib(total)}")
        self._refresh()

    def segment(self, state: SegmentState) -> None:
        self.segments[state.id] = state
        self._refresh()

    def bench_progress(self, done: int, total: int, elapsed_s: float, last_ms: Optional[float]) -> None:
        of = f"/{total}" if total else ""
        last = f", last {last_ms:.2f} ms" if last_ms else ""
        self.progress = ("bench", done, total, f"{done}{of} iterations, {elapsed_s:.1f} s{last}")
        self._refresh()

    def log(self, message: str) -> None:
        self.live.console.print(f"[dim]agent: {message}[/dim]")


class _Null:
    def __enter__(self) -> "_Null":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def observer_for(out: Output, title: str = "", prefix: str = "") -> tuple[Observer, Any]:
    """(observer, context manager) for the output mode: silent for --json, live on a terminal, plain otherwise."""
    if out.json_mode:
        return Observer(), _Null()
    if out.interactive:
        live = LiveObserver(out.err, title)
        return live, live
    return PlainObserver(out.err, prefix), _Null()


# ---------------------------------------------------------------- summaries

def latency_table(rows: dict[str, Any]) -> Table:
    from rich.table import Table

    """Metrics down, devices across: the side-by-side table of `deploy bench` (one column for push)."""
    table = Table(box=None, header_style="bold", padding=(0, 2))
    table.add_column("latency")
    for name in rows:
        table.add_column(name, justify="right")
    metrics = [("min", "min_ms"), ("mean", "mean_ms"), ("p50", "p50_ms"), ("p90", "p90_ms"), ("p95", "p95_ms"),
               ("p99", "p99_ms"), ("max", "max_ms")]
    for label, key in metrics:
        table.add_row(f"{label} ms", *[_fmt(b.get(key) if b else None, 3) for b in rows.values()])
    table.add_row("throughput /s", *[_fmt(b.get("throughput") if b else None, 1) for b in rows.values()])
    table.add_row("iterations", *[str(b.get("iterations", "-")) if b else "-" for b in rows.values()])
    table.add_row("backend", *[str(b.get("backend", "-")) if b else "-" for b in rows.values()])
    extra = sorted({k for b in rows.values() if b for k in b.get("backend_timings_ms", {})})
    for key in extra:
        table.add_row(f"{key} ms", *[_fmt((b or {}).get("backend_timings_ms", {}).get(key), 3) for b in rows.values()])
    return table


def shapes_table(runs: list[dict[str, Any]]) -> Table:
    """`bench --shape/--shapes`: one row per device and shape; the first call after the shape changed apart."""
    from rich.table import Table

    table = Table(box=None, header_style="bold", padding=(0, 2))
    for col in ("device", "shape", "first ms", "p50 ms", "p90 ms", "mean ms", "min ms", "backend"):
        table.add_column(col, justify="left" if col in ("device", "shape", "backend") else "right")
    for r in runs:
        for row in r.get("shapes") or []:
            table.add_row(r["device"], row["shape"], _fmt(row.get("first_call_ms"), 3), _fmt(row.get("p50_ms"), 3),
                          _fmt(row.get("p90_ms"), 3), _fmt(row.get("mean_ms"), 3), _fmt(row.get("min_ms"), 3),
                          str(row.get("backend", "-")))
    return table


def layers_heading(run: dict[str, Any], top: int) -> str:
    """What the layer table is over: its device, the profiled runs, and the rows' sum beside a run's wall time."""
    rows = run.get("layers") or []
    return (f"[bold]layers[/bold] on {run['device']}: {min(top, len(rows))} slowest of {len(rows)}, over "
            f"{run.get('layers_runs', 0)} profiled run(s); sum {run.get('layers_total_ms', 0.0):.3f} ms, "
            f"profiled run {run.get('layers_wall_ms', 0.0):.3f} ms, benchmark mean {run.get('mean_ms', 0.0):.3f} ms")


def layers_table(rows: list[dict[str, Any]], top: int) -> Table:
    """The ``top`` slowest layers (the agent sends them largest first) with their share of the sum."""
    from rich.table import Table

    table = Table(box=None, header_style="bold", padding=(0, 2))
    for col, justify in (("share", "right"), ("mean ms", "right"), ("calls", "right"), ("segment", "left"),
                         ("op", "left"), ("layer", "left")):
        table.add_column(col, justify=justify, no_wrap=col != "layer",  # type: ignore[arg-type]
                         overflow="fold" if col == "layer" else "ellipsis")
    for r in sorted(rows, key=lambda r: -r["mean_ms"])[:top]:
        name = r["name"] if len(r["name"]) <= 200 else r["name"][:197] + "..."
        op = r["op"].split(" (")[0]  # the kernel's op; the layer's name lists the nodes it does
        table.add_row(f"{100 * r['share']:.1f} %", _fmt(r["mean_ms"], 3), str(r["calls"]), r["segment"], op, name)
    return table


def render_push(data: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    target = data.get("target") or {}
    console.print(f"[bold]pushed[/bold] to {data['device']} ({data['address']})  bundle {data['bundle_digest']}")
    if target:
        console.print(f"target: profile {target['profile']}, TensorRT {target['trt_version']}, "
                      f"compute capability {target['compute_capability'] or '-'}; {target['why']}")
    comp = data["compile"]
    console.print(f"compile: {'host cache hit' if comp['cache'] == 'hit' else 'given bundle' if comp['cache'] == 'none' else 'compiled'}"
                  f" in {comp['seconds']:.2f} s")
    acc = data.get("accuracy")
    if acc:
        top1 = [o["top1_agreement"] for o in acc["outputs"] if o.get("top1_agreement") is not None]
        console.print(f"precision {data.get('precision')}: INT8 vs FP32 on {acc['samples']} {acc['dataset']} "
                      f"sample(s): max rel err {acc['max_rel_err']:.3g}, min cosine {acc['min_cosine']:.5f}"
                      + (f", top-1 agreement {min(top1):.1%}" if top1 else ""), markup=False)
    if data.get("int8_warning"):
        console.print(f"warning: {data['int8_warning']}", markup=False)
    parts = Table(box=None, header_style="bold", padding=(0, 2))
    for col in ("part", "kind", "ops", "runs on", "cache", "build s", "engine"):
        parts.add_column(col)
    segs = {s["id"]: s for s in data["build"]["segments"]}
    for row in data.get("parts") or []:
        s = segs.get(row["id"], {})
        parts.add_row(row["id"], row["kind"], str(row["ops"]), row["runs_on"] or "-", row["cache"] or "-",
                      _fmt(s.get("build_s")) if s else "-", mib(s["engine_bytes"]) if s.get("engine_bytes") else "-")
    console.print(parts)
    up = data["upload"]
    rate = up["bytes_sent"] / up["seconds"] / 2**20 if up["seconds"] > 0 else 0.0
    from host.pipeline.push import sent_text

    moved = sent_text(up["bytes_sent"], up.get("bytes_total") or up["size"], up.get("parts_sent", 0),
                      up.get("parts_total", 1))
    console.print(f"upload: {moved} in {up['seconds']:.2f} s" + (" (already on the device)" if up["already_present"]
                                                                  else f" ({rate:.0f} MiB/s)"))
    b = data["build"]
    console.print(f"build: {b['seconds']:.2f} s, {b['cache_hits']}/{len(b['segments'])} cache hits, "
                  f"backend {b['backend']} {b['backend_version']}")
    v = data.get("verify")
    if v:
        tol = f" (tolerance {v['tolerance']:g})" if v.get("tolerance") is not None else ""
        err = "-" if v["max_rel_err"] is None else f"{v['max_rel_err']:.3g}"
        console.print(f"verify: max relative error {err}{tol}")
    m = data.get("model")
    if m:
        state = "active" if m["active"] == m["version"] else (m["state"] if not m["why"] else f"{m['state']}: {m['why']}")
        hint = "" if m["active"] == m["version"] else f"; deploy activate {m['name']} {m['version']} to serve it"
        console.print(f"model: {m['name']} version {m['version']}" + ("" if m["created"] else " (unchanged)")
                      + f", {state}{hint}", markup=False)
    if data.get("bench"):
        console.print(latency_table({data["device"]: data["bench"]}))
    t = data["timings"]
    console.print("time: " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()))
