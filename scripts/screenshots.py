"""Terminal screenshots for the documentation, as SVG, from real runs against agents started here.

    python scripts/screenshots.py [--out docs/images]

- push.svg: `deploy push --bench` on a terminal: the live panel as it ends (phases, each segment, the benchmark)
  and the summary under it, drawn by the CLI's own renderers (host/cli/push_view.py) on a recording rich console;
- bench-histogram.png, bench-cdf.png, bench-layers.png: the plots of `deploy bench --report DIR --layers`;
- devices.svg: `deploy devices -v` over an inventory of three agents and one address nobody listens on;
- architecture.svg: the flow, host compile -> agent build -> run/bench -> fleet, drawn with rich;
- with --site: site-front.png and site-tutorial.png, the built site's front page and first tutorial as headless
  Chromium shows them (Debian's `chromium` package).

Timings differ from run to run, so these are not compared by a test; run the script again when the views change.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

WIDTH = 100


def _console() -> Any:
    from rich.console import Console

    return Console(record=True, width=WIDTH, force_terminal=True, color_system="truecolor", highlight=False,
                   file=open(os.devnull, "w"))


def _agent(root: Path, name: str, **settings: Any) -> Any:
    from device_agent.config import AgentSettings
    from device_agent.server import AgentServer

    server = AgentServer(AgentSettings(listen="127.0.0.1:0", store=root / name / "store", **settings))
    server.start()
    return server


def push_svg(root: Path, out: Path) -> None:
    import make_models

    from host import api
    from host.cli.push_view import LiveObserver, render_push

    model = make_models.write_models(root / "models", ["resnet18"])["resnet18"]
    agent = _agent(root, "agent")
    try:
        live_console = _console()
        with LiveObserver(live_console) as obs:
            data = api.push(model, agent.address, observer=obs, bench=True, iterations=50)
        console = _console()
        console.print(f"[bold green]$[/bold green] deploy push {model.name} --device nano-01 --bench -n 50")
        console.print(obs._render())  # the live panel as the terminal keeps it once the push ends
        data["device"] = "nano-01"
        render_push(data, console)
        console.save_svg(str(out / "push.svg"), title="deploy push")
        with tempfile.TemporaryDirectory() as report:  # `deploy bench --report DIR --layers`: its plots
            api.bench(model, [agent.address], report=report, iterations=200, layers=True, top=10)
            for made, name in (("latency_hist.png", "bench-histogram.png"), ("latency_cdf.png", "bench-cdf.png"),
                               ("layers_0.png", "bench-layers.png")):
                shutil.copy(Path(report) / made, out / name)
    finally:
        agent.stop(grace=0)


def devices_svg(root: Path, out: Path) -> None:
    from host.cli.devices import devices_listing, render_devices

    agents = {name: _agent(root, name, profile=profile)
              for name, profile in (("nano-01", "jetson-nano"), ("nano-02", "jetson-nano"), ("orin-01", "jetson-orin"))}
    with socket.socket() as s:  # an address nobody listens on: a device that is down
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    lines = [f'[devices.{name}]\naddress = "{a.address}"\ntags = ["lab"]\n' for name, a in agents.items()]
    lines.append(f'[devices.cam-07]\naddress = "127.0.0.1:{free_port}"\ntags = ["lab"]\n')
    inventory = root / "deploy.toml"
    inventory.write_text("\n".join(lines))
    os.environ["DEPLOY_INVENTORY"] = str(inventory)
    try:
        devices_listing(["lab"], timeout=60.0)  # each agent's first GetInfo waits for its backend probe
        data = devices_listing(["lab"], timeout=3.0)
        console = _console()
        console.print("[bold green]$[/bold green] deploy devices -v")
        console.print(render_devices(data, verbose=True))
        console.save_svg(str(out / "devices.svg"), title="deploy devices")
    finally:
        for a in agents.values():
            a.stop(grace=0)


def architecture_svg(out: Path) -> None:
    from rich.panel import Panel
    from rich.table import Table

    host = Panel("[bold]deploy push MODEL.onnx[/bold]\n\n"
                 "1. ask the agent: TensorRT, GPU, L4T\n"
                 "2. compile for exactly that:\n"
                 "   ONNX -> prepare -> op table\n"
                 "   -> TensorRT segments\n"
                 "   + TVM remainder -> bundle\n"
                 "   (host compile cache)\n\n"
                 "[bold]deploy fleet warm / rollout[/bold]\n"
                 "   group devices by class\n"
                 "   activate in waves, roll back",
                 title="host (no TensorRT needed)", border_style="cyan", width=41)
    arrows = ("\n\n[cyan]── GetInfo ──>[/cyan]\n[cyan]<── facts ─────[/cyan]\n\n[cyan]── Upload ───>[/cyan]\n"
              "[cyan]── Build ────>[/cyan]\n[cyan]<── events ────[/cyan]\n[cyan]── Run/Bench >[/cyan]\n"
              "[cyan]<── latency ───[/cyan]\n\n[cyan]<── engines ───[/cyan]\n[cyan]── engines ──>[/cyan]")
    device = Panel("[bold]deploy-agent[/bold] (grpcio, protobuf, numpy)\n\n"
                   "store: content-addressed, resumable\n"
                   "build: TensorRT, trtexec,\n"
                   "   onnxruntime-cuda / onnxruntime\n"
                   "engine cache: per device class\n"
                   "verify against the reference\n"
                   "run, benchmark (p50 ... p99)\n"
                   "model versions: activate, rollback\n"
                   "serve: open_model(), Open Inference\n"
                   "   Protocol (tritonclient)\n\n"
                   "fleet: one build per class, its\n   engines copied to the rest",
                   title="device (Jetson, GPU box or CPU)", border_style="green", width=42)
    grid = Table.grid(padding=(0, 1))
    grid.add_row(host, arrows, device)
    console = _console()
    console.print(grid)
    console.save_svg(str(out / "architecture.svg"), title="jetson-deploy: the flow")


def site_pngs(out: Path) -> None:
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("--site needs chromium: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", tmp], cwd=REPO, check=True,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True)
        for page, name in (("index.html", "site-front.png"), ("tutorials/first-push.html", "site-tutorial.png")):
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--window-size=1200,900", f"--screenshot={out / name}", f"file://{tmp}/{page}"],
                           check=True, capture_output=True, timeout=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    ap.add_argument("--site", action="store_true", help="also the site's PNGs (needs chromium)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    architecture_svg(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # a compile from scratch, as a newcomer's
        push_svg(Path(tmp), args.out)
        devices_svg(Path(tmp), args.out)
    names = ["architecture.svg", "push.svg", "bench-histogram.png", "bench-cdf.png", "bench-layers.png", "devices.svg"]
    if args.site:  # after the SVGs, which the pages show
        site_pngs(args.out)
        names += ["site-front.png", "site-tutorial.png"]
    for name in names:
        print(f"wrote {args.out / name} ({(args.out / name).stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
