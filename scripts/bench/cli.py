"""Start-up time of `deploy`: whole-process wall time of everyday commands, medians of several runs.

    python scripts/bench/cli.py [--runs 7] [--label before|after] [--model resnet18] [--tree DIR]

Times, with subprocess, the installed `deploy` as a user runs it (bytecode caching on): `deploy --version`,
`deploy --help`, `deploy info --device local` with the local agent already running, and a second `deploy push` of
a small model that has nothing to do (host compile cache hit, nothing uploaded, every engine a cache hit). All of
it in a fresh user cache dir, so the local agent and the caches are this script's own; the agent is stopped at the
end. With `--label L` the medians are saved under L in `.bench/cli.json` and the table shows every saved label as
a column (e.g. run once with `--label before`, change the code, run with `--label after`). `--tree DIR` times the
code of another checkout instead (e.g. `git archive COMMIT | tar -x -C DIR`), run as `python -c` with
PYTHONPATH=DIR, so an older commit can be measured right beside the current one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
DEPLOY = Path(sys.executable).parent / "deploy"
RESULTS = REPO / ".bench" / "cli.json"
FLOORS = {"deploy --version": 0.25, "deploy --help": 0.25, "deploy info --device local": 0.4,
          "deploy push (second, nothing to do)": 0.6}


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


TREE: Optional[Path] = None


def _run(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    cmd = [str(DEPLOY)]
    if TREE is not None:
        cmd = [sys.executable, "-c", "import sys; sys.argv[0] = 'deploy'; from host.cli.app import entry; entry()"]
        env = {**env, "PYTHONPATH": str(TREE)}
    started = time.perf_counter()
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, cwd=str(TREE or REPO), timeout=600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"deploy {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return wall, proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="timed runs of each command (median and min reported)")
    ap.add_argument("--label", help="save the medians under this label and show every saved label")
    ap.add_argument("--model", default="resnet18", help="a model of scripts/make_models.py for the second push")
    ap.add_argument("--tree", type=Path, help="time the code of this checkout (python -c, PYTHONPATH=DIR)")
    a = ap.parse_args()
    global TREE
    TREE = a.tree.resolve() if a.tree else None

    models = REPO / ".bench" / "models"
    models.mkdir(parents=True, exist_ok=True)
    model = models / f"{a.model}.onnx"
    if not model.exists():
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_models.py"), str(models), "--only", a.model],
                       check=True, capture_output=True)

    home = Path(tempfile.mkdtemp(prefix="cli-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "DEPLOY_INVENTORY")}
    env.update(XDG_CACHE_HOME=str(home / "cache"), XDG_CONFIG_HOME=str(home / "config"),
               XDG_DATA_HOME=str(home / "data"))
    commands = {
        "deploy --version": ["--version"],
        "deploy --help": ["--help"],
        "deploy info --device local": ["info", "--device", "local"],
        "deploy push (second, nothing to do)": ["push", str(model), "--device", "local", "--json"],
    }
    results: dict[str, dict[str, float]] = {}
    load = []
    try:
        _run(["push", str(model), "--device", "local", "--json"], env)  # starts the agent, fills every cache
        for name, args in commands.items():
            _run(args, env)  # warm the bytecode and page caches
            walls = []
            for _ in range(a.runs):
                load.append(os.getloadavg()[0])
                wall, proc = _run(args, env)
                walls.append(wall)
                if args[0] == "push":
                    data = json.loads(proc.stdout)
                    assert data["compile"]["cache"] == "hit" and data["upload"]["bytes_sent"] == 0, data
                    assert data["build"]["built"] == 0, data["build"]
            results[name] = {"median": median(walls), "min": min(walls)}
    finally:
        subprocess.run([str(DEPLOY), "agent", "stop", "--device", "local"], capture_output=True, env=env)
        shutil.rmtree(home, ignore_errors=True)

    saved: dict[str, dict] = {}
    if a.label:
        if RESULTS.exists():
            saved = json.loads(RESULTS.read_text())
        saved[a.label] = {k: v["median"] for k, v in results.items()}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(saved, indent=2))
    others = [label for label in saved if label != a.label]

    code = f"code of {TREE}" if TREE else f"{DEPLOY}"
    print(f"`deploy` start-up ({code}), whole process, {a.runs} runs each, load average "
          f"{min(load):.2f}-{max(load):.2f}, {os.cpu_count()} cores")
    print()
    head = ["command", *[f"{label} (median)" for label in others], "median", "min", "floor"]
    print("| " + " | ".join(head) + " |")
    print("| " + " | ".join("---" for _ in head) + " |")
    for name, r in results.items():
        row = [f"`{name}`", *[f"{saved[label].get(name, float('nan')):.3f} s" for label in others],
               f"**{r['median']:.3f} s**", f"{r['min']:.3f} s", f"<= {FLOORS[name]} s"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
