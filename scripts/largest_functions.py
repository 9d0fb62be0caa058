"""The longest functions of host/ and device_agent/, in lines (issue 29's "largest functions before and after").

Standard library only, so it runs on any checkout: `python scripts/largest_functions.py` for the working tree, or
`python scripts/largest_functions.py --rev REV` for a commit (read with `git show`, nothing checked out). A function's
length is its `def` line to its last line (its docstring and nested functions included, decorators not); a method
is named `Class.method`, a nested function `outer.inner`, and each is counted on its own too.
"""
from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("host", "device_agent")


@dataclass(frozen=True)
class Function:
    path: str
    name: str
    line: int
    lines: int


def functions(path: str, source: str) -> Iterator[Function]:
    """Every function and method in `source`, nested ones too, with its length in lines."""
    def walk(node: ast.AST, prefix: str) -> Iterator[Function]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                yield Function(path, name, child.lineno, (child.end_lineno or child.lineno) - child.lineno + 1)
                yield from walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, prefix + child.name + ".")
            else:
                yield from walk(child, prefix)

    yield from walk(ast.parse(source, path), "")


def sources(rev: Optional[str]) -> Iterator[tuple[str, str]]:
    """(path, text) of each .py file under PACKAGES: in the working tree, or at commit `rev`."""
    if rev is None:
        for package in PACKAGES:
            for p in sorted((ROOT / package).rglob("*.py")):
                yield str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")
        return
    git = ["git", "-C", str(ROOT)]
    names = subprocess.run(git + ["ls-tree", "-r", "--name-only", rev, "--", *PACKAGES], check=True,
                           capture_output=True, text=True).stdout.split()
    for name in names:
        if name.endswith(".py"):
            yield name, subprocess.run(git + ["show", f"{rev}:{name}"], check=True, capture_output=True,
                                       text=True).stdout


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", help="a commit to measure instead of the working tree")
    ap.add_argument("--top", type=int, default=15, help="how many rows (default 15)")
    args = ap.parse_args(argv)
    found = sorted((f for path, text in sources(args.rev) for f in functions(path, text)),
                   key=lambda f: (-f.lines, f.path, f.line))
    print(f"| lines | function | file:line |  ({args.rev or 'working tree'}, {len(found)} functions)")
    print("| ---: | --- | --- |")
    for f in found[:args.top]:
        print(f"| {f.lines} | `{f.name}` | {f.path}:{f.line} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
