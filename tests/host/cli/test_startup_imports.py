"""Start-up of `deploy` (issue 13): what `--version` and `--help` import, not how long they take.

`deploy --version` imports no third-party module; `deploy --help` imports typer (and rich, which typer formats
its help with) but no command module, so neither grpc nor pydantic nor numpy. The root's table of commands
(`host.cli.app.COMMANDS`) stays equal to what the command modules register.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
HEAVY = ("grpc", "rich", "pydantic", "onnx", "numpy", "tvm", "typer", "click", "onnxruntime", "google.protobuf",
         "protos", "host.client", "host.fleet", "host.pipeline", "host.compiler")

_PROBE = """
import json, sys
from host.cli.app import entry
sys.argv = ["deploy", *ARGS]
try:
    entry()
except SystemExit as exc:
    code = exc.code
sys.stderr.write("MODULES=" + json.dumps({"code": code, "modules": sorted(sys.modules)}) + "\\n")
"""


def _imported(*args: str) -> tuple[int, set[str], str]:
    proc = subprocess.run([sys.executable, "-c", _PROBE.replace("ARGS", repr(list(args)))], capture_output=True,
                          text=True, cwd=str(REPO), timeout=120)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES=")]
    assert line, proc.stderr
    data = json.loads(line[-1][len("MODULES="):])
    return data["code"], set(data["modules"]), proc.stdout


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


def test_version_imports_no_third_party_module():
    code, modules, out = _imported("--version")
    assert code == 0 and out.startswith("deploy ")
    assert _loaded(modules, HEAVY) == []
    ours = sorted(m for m in modules if m.split(".")[0] in ("host", "device_agent", "protos"))
    assert ours == ["device_agent", "host", "host.cli", "host.cli.app"]


def test_help_imports_typer_but_no_command_module():
    code, modules, out = _imported("--help")
    assert code == 0 and "push" in out and "fleet" in out
    assert "typer" in modules
    assert _loaded(modules, tuple(n for n in HEAVY if n not in ("typer", "click", "rich"))) == []
    assert sorted(m for m in modules if m.startswith("host.cli.")) == ["host.cli._errors", "host.cli.app"]


def test_command_help_loads_only_that_command():
    code, modules, out = _imported("upload", "--help")
    assert code == 0 and "FILE" in out
    assert "host.cli.upload" in modules and "host.cli.push" not in modules and "host.cli.fleet" not in modules
    assert _loaded(modules, ("onnx", "tvm", "numpy")) == []


def test_command_table_matches_the_commands_modules_register():
    import typer
    import typer.main

    from host.cli import app as app_module

    every = typer.Typer()
    for module in dict.fromkeys(m for m, _ in app_module.COMMANDS.values()):
        app_module._register(module, every)
    group = typer.main.get_group(every)
    assert list(group.commands) and set(group.commands) == set(app_module.COMMANDS)
    for name, (_, help_line) in app_module.COMMANDS.items():
        assert group.commands[name].help == help_line, name
        assert app_module.load_command(name).help == help_line, name


@pytest.mark.parametrize("args", [["bogus"], ["info", "--no-such-flag"]])
def test_usage_errors_still_exit_2(args):
    proc = subprocess.run([sys.executable, "-m", "host.cli.app", *args], capture_output=True, text=True,
                          cwd=str(REPO), timeout=120)
    assert proc.returncode == 2, proc.stderr


def test_info_json_imports_neither_rich_nor_numpy_nor_the_compiler(agent):
    code, modules, out = _imported("info", "--device", agent.address, "--json")
    assert code == 0 and json.loads(out)["address"] == agent.address
    assert "grpc" in modules
    assert _loaded(modules, ("rich", "numpy", "onnx", "tvm", "host.compiler", "host.pipeline")) == []
