"""The map of responsibilities (docs/explanation/architecture.md, "Code layout") names every module that exists.

Issue 29 asked for one place per job and a map of where each now lives; a module added without a row here is the
first step back to two places doing one job unnoticed. Read from the source tree and the page, nothing imported.
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "explanation" / "architecture.md"
PACKAGES = ("host", "device_agent")


def layout_rows() -> dict[str, set[str]]:
    """Folder (`host/fleet/`) -> the module names its rows of the Code layout table mention in backticks."""
    section = PAGE.read_text().split("## Code layout", 1)[1]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        folder = re.fullmatch(r"`([\w/]+/)`", cells[0]) if len(cells) >= 3 else None
        if folder:
            rows.setdefault(folder.group(1), set()).update(re.findall(r"`([\w.]+\.py)`", " ".join(cells[1:])))
    return rows


def modules() -> dict[str, set[str]]:
    """Folder -> its Python modules (packages' __init__.py aside), as the source tree has them."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if path.name != "__init__.py":
                found.setdefault(path.parent.relative_to(REPO).as_posix() + "/", set()).add(path.name)
    return found


def test_every_module_of_host_and_device_agent_has_its_place_in_the_code_layout_map():
    rows = layout_rows()
    missing = {folder: sorted(names - rows.get(folder, set())) for folder, names in modules().items()}
    missing = {folder: names for folder, names in missing.items() if names}
    assert not missing, f"add these modules to the Code layout table of {PAGE.relative_to(REPO)}: {missing}"


def test_the_code_layout_map_names_no_module_that_is_gone():
    present = modules()
    stale = {folder: sorted(names - present.get(folder, set())) for folder, names in layout_rows().items()
             if folder.startswith(PACKAGES)}
    stale = {folder: names for folder, names in stale.items() if names}
    assert not stale, f"the Code layout table names modules that no longer exist: {stale}"
