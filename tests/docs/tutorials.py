"""The shell examples of docs/tutorials/*.md as one script per page, run as a reader would run them.

A ```bash block runs unless the line above it is `<!-- not run: REASON -->` (the test reports each such block).
The script runs in an empty folder holding links to the repository's scripts/ and .venv/, with .venv/bin first on PATH and
the user's config, cache and data dirs in that folder, so the on-demand `local` agent is the page's own."""
from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
TUTORIALS = REPO / "docs" / "tutorials"
_BLOCK = re.compile(r"(?:^(<!-- not run: (?P<why>.*?) -->)\n)?^```bash\n(?P<body>.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Block:
    body: str
    skipped_because: str  # empty: it runs


def blocks(page: Path) -> list[Block]:
    return [Block(m["body"], m["why"] or "") for m in _BLOCK.finditer(page.read_text())]


def script(page: Path) -> str:
    """The page's runnable blocks in order, under `set -euo pipefail`; the local agent and background jobs end
    with the script, whatever happens."""
    head = ("set -euo pipefail\n"
            "trap 'deploy agent stop --device local >/dev/null 2>&1 || true; kill $(jobs -p) 2>/dev/null || true' EXIT\n")
    body = "\n".join(f"echo '--- block {i}'\n{b.body}" for i, b in enumerate(blocks(page)) if not b.skipped_because)
    return head + body


def run_page(page: Path, workdir: Path, timeout: float = 300,
             compile_cache: Optional[Path] = None) -> subprocess.CompletedProcess:
    """`compile_cache`: a host compile cache shared by the pages, as one reader's machine would have it after the
    previous tutorial (the agent, the inventory and everything else stay the page's own)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if compile_cache is not None:
        compile_cache.mkdir(parents=True, exist_ok=True)
        (workdir / ".cache" / "deploy").mkdir(parents=True)
        (workdir / ".cache" / "deploy" / "bundles").symlink_to(compile_cache)
    for name in ("scripts", ".venv"):  # the reader's checkout, without writing into ours
        (workdir / name).symlink_to(REPO / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOY_")}
    env.update(PATH=f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
               XDG_CACHE_HOME=str(workdir / ".cache"), XDG_CONFIG_HOME=str(workdir / ".config"),
               XDG_DATA_HOME=str(workdir / ".data"), PYTHONPATH=str(REPO))
    proc = subprocess.Popen(["bash", "-c", script(page)], cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything the page left running
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
