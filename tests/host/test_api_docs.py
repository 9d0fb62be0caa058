"""The Python API's examples in docs/api.md run as written, against the real on-demand local agent."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.host.cli.helpers import tiny_conv_net

REPO = Path(__file__).resolve().parents[2]


def test_every_example_in_docs_api_md_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "api.md").read_text(), flags=re.S)
    assert len(blocks) >= 6, "compile, push, run, bench, fleet warm and errors each have an example"
    tiny_conv_net(tmp_path / "model.onnx")
    script = tmp_path / "examples.py"
    script.write_text("\n".join(blocks))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("bad input: ") and "no-such-model.onnx" in lines[-1]
    assert any(line.endswith("ms p50") for line in lines)
