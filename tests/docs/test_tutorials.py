"""Every shell example of docs/tutorials/*.md runs as written, in order, against the page's own local agent
(and the agents the page starts itself), and succeeds; see tests/docs/tutorials.py for how."""
from __future__ import annotations

import pytest

from tests.docs.tutorials import REPO, TUTORIALS, blocks, run_page

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PAGES = sorted(TUTORIALS.glob("*.md")) + [REPO / "README.md"]  # the README's five-minute tour


def test_every_tutorial_has_shell_examples_and_says_why_one_is_not_run():
    assert {p.stem for p in PAGES} >= {"first-push", "fleet", "int8", "integer-inputs", "README"}
    for page in PAGES:
        runnable = [b for b in blocks(page) if not b.skipped_because]
        assert runnable, f"{page.name}: no ```bash block to run"
        assert all(len(b.skipped_because) > 20 for b in blocks(page) if b.skipped_because), page.name


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("compile-cache")


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_tutorial_runs_as_written(page, tmp_path, compile_cache):
    proc = run_page(page, tmp_path / "reader", compile_cache=compile_cache)
    assert proc.returncode == 0, f"{page.name} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}"
    assert proc.stdout.count("--- block") == len([b for b in blocks(page) if not b.skipped_because])
