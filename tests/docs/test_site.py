"""The documentation site builds with `mkdocs build --strict` (a broken link, a page missing from the navigation
or a stale generated page fails it), and its generated reference says what the code does."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


gen_docs = _gen_docs()


def test_generated_reference_pages_are_current():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_docs.py"), "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    index = (tmp_path / "site" / "index.html").read_text()
    assert "jetson-deploy" in index
    api = (tmp_path / "site" / "reference" / "python.html").read_text()
    assert 'id="host.api.push"' in api and "Compile (or reuse) for the device" in api, "mkdocstrings rendered host.api"


def _section(page: str, command: str) -> str:
    """The part of cli.md about `deploy COMMAND`, up to the next command's heading."""
    match = re.search(rf"^#+ `deploy {re.escape(command)}`\n(.*?)(?=^#+ `deploy |\Z)", page, re.M | re.S)
    assert match, f"cli.md has no section for deploy {command}"
    return match.group(1)


def test_cli_reference_lists_exactly_the_options_of_every_commands_help():
    from typer.testing import CliRunner

    from host.cli.app import app

    page = (REPO / "docs" / "reference" / "cli.md").read_text()
    runner = CliRunner()
    commands = list(gen_docs.walk_commands())
    assert len(commands) >= 25
    for words, _command in commands:
        result = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
        assert result.exit_code == 0, result.output
        # the first name of each row of the Options box, and of each option in the page (not names in the prose)
        in_help = set(re.findall(r"^│\s+(?:\*\s+)?(--[a-z][a-z0-9-]*)", result.output, re.M))
        in_page = set(re.findall(r"^\* `(?:-\w, )?(--[a-z][a-z0-9-]*)", _section(page, " ".join(words)), re.M))
        assert in_help == in_page, f"deploy {' '.join(words)}: only in --help {in_help - in_page}, " \
                                   f"only in cli.md {in_page - in_help}"


def test_every_command_with_json_has_a_valid_schema_with_every_key_described():
    import jsonschema

    names = gen_docs.json_commands()
    assert {"push", "bench", "run", "info", "devices", "fleet warm", "models ls"} <= set(names)
    for name in names:
        path = gen_docs.schema_path(name)
        assert path.exists(), f"deploy {name} --json has no schema: write {path.relative_to(REPO)}"
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema.get("description"), f"{path.name}: no description of the object"
        undescribed = [row for row in gen_docs._rows(schema) if row.endswith("|  |")]
        assert not undescribed, f"{path.name}: keys without a description: {undescribed[:5]}"
    extra = {p.stem for p in gen_docs.SCHEMAS.glob("*.json")} - {n.replace(" ", "-") for n in names}
    assert not extra, f"schemas of commands that have no --json: {extra}"


def test_every_error_rule_says_what_it_means_and_what_to_do():
    from host.cli._errors import error_table

    for i, rule in enumerate(error_table(), 1):
        assert rule.title and len(rule.meaning) > 20 and len(rule.remedy) > 10, f"rule {i} of host/cli/_errors.py"
    page = (REPO / "docs" / "reference" / "troubleshooting.md").read_text()
    assert page.count("**What to do.**") == len(error_table())


def test_agent_reference_lists_every_flag_and_variable_of_deploy_agent():
    from device_agent.config import build_parser

    page = (REPO / "docs" / "reference" / "agent.md").read_text()
    for action in build_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert f"`{action.option_strings[0]}" in page and f"DEPLOY_AGENT_{action.dest.upper()}" in page


def test_parse_json_refuses_an_output_with_a_key_the_schema_lacks_or_without_one_it_requires(agent, deploy):
    from tests.host.cli.helpers import check_schema, parse_json

    data = parse_json(deploy("info", "--device", agent.address, "--json"))  # a real output matches its schema
    with pytest.raises(AssertionError, match="surprise"):
        check_schema("info", {**data, "surprise": 1})
    with pytest.raises(AssertionError, match="hostname"):
        check_schema("info", {k: v for k, v in data.items() if k != "hostname"})
    with pytest.raises(AssertionError, match="has no schema"):
        parse_json(subprocess.CompletedProcess(["/x/deploy", "no-such-command", "--json"], 0, "{}\n", ""))
