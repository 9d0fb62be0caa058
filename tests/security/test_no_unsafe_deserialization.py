"""No pickle anywhere: no module imports a deserializer that can run code, every np.load says allow_pickle=False."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("device_agent", "host", "protos", "scripts")  # what ships or runs beside the product
TEST_DIRS = ("tests",)  # tests may call np.load on files they wrote (numpy's default refuses pickles anyway)
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "jsonpickle"}


def _np_load_without_allow_pickle_false(node: ast.Call) -> bool:
    func = node.func
    is_np_load = (isinstance(func, ast.Attribute) and func.attr == "load" and isinstance(func.value, ast.Name)
                  and func.value.id in ("np", "numpy"))
    if not is_np_load:
        return False
    for kw in node.keywords:
        if kw.arg == "allow_pickle":
            return not (isinstance(kw.value, ast.Constant) and kw.value.value is False)
    return True


def findings(source: str, name: str = "<src>") -> list:
    """Every unsafe import, pickle-ish call and np.load that could unpickle, as 'file:line: what'."""
    out = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            out += [f"{name}:{node.lineno}: import {a.name}" for a in node.names
                    if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            out.append(f"{name}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            if _np_load_without_allow_pickle_false(node):
                out.append(f"{name}:{node.lineno}: np.load without allow_pickle=False")
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("loads", "load") and isinstance(func.value, ast.Name) \
                    and func.value.id in UNSAFE_MODULES:
                out.append(f"{name}:{node.lineno}: {func.value.id}.{func.attr}")
            if isinstance(func, ast.Name) and func.id == "__import__" and node.args and \
                    isinstance(node.args[0], ast.Constant) and str(node.args[0].value) in UNSAFE_MODULES:
                out.append(f"{name}:{node.lineno}: __import__({node.args[0].value!r})")
    return out


@pytest.mark.parametrize("snippet", [
    "import pickle\n", "from pickle import loads\n", "import numpy as np\nnp.load('x.npy')\n",
    "import numpy as np\nnp.load('x.npy', allow_pickle=True)\n", "import dill\n", "m = __import__('pickle')\n",
    "import marshal\nmarshal.loads(b'')\n",
])
def test_the_checker_finds_unsafe_deserialization(snippet: str) -> None:
    assert findings(snippet)


def test_the_checker_accepts_safe_loading() -> None:
    assert findings("import numpy as np\nnp.load('x.npy', allow_pickle=False)\nimport json\njson.loads('1')\n") == []


def _files(dirs: tuple) -> list:
    return [p for d in dirs for p in (REPO / d).rglob("*.py")
            if "__pycache__" not in p.parts and p.resolve() != Path(__file__).resolve()]


def test_no_source_file_uses_pickle_or_loads_numpy_with_pickle() -> None:
    files = _files(SOURCE_DIRS)
    assert len(files) > 20
    bad = []
    for path in files:
        bad += findings(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert bad == [], "unsafe deserialization:\n" + "\n".join(bad)


def test_no_test_imports_pickle() -> None:
    bad = []
    for path in _files(TEST_DIRS):
        bad += [f for f in findings(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
                if "np.load" not in f]
    assert bad == [], "unsafe deserialization in tests:\n" + "\n".join(bad)
