"""Import boundaries, read from the source (as Polygraphy's test_no_cli_deps): the agent stays small."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AGENT_ALLOWED_TOP_LEVEL = {"grpc", "grpc_health", "grpc_reflection", "google", "numpy", "protos", "device_agent"}
HEAVY = {"tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings", "tensorrt_rtx_libs", "pycuda", "cuda", "onnxruntime",
         "tvm", "tvm_ffi", "onnx"}


def _imports(path: Path, module_level_only: bool) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(a.name.split(".")[0], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], node.lineno))
        elif isinstance(node, (ast.If, ast.Try)) and module_level_only:
            for sub in ast.walk(node):  # guarded module-level imports still run at import time
                if isinstance(sub, ast.Import):
                    found += [(a.name.split(".")[0], sub.lineno) for a in sub.names]
                elif isinstance(sub, ast.ImportFrom) and sub.level == 0 and sub.module:
                    found.append((sub.module.split(".")[0], sub.lineno))
    return found


def _stdlib() -> set[str]:
    return set(sys.stdlib_module_names)


def test_device_agent_never_imports_host_anywhere():
    bad = [f"{p.relative_to(REPO)}:{line}" for p in (REPO / "device_agent").rglob("*.py")
           for name, line in _imports(p, module_level_only=False) if name == "host"]
    assert bad == []


def test_device_agent_module_level_imports_are_stdlib_grpc_protobuf_numpy_only():
    allowed = AGENT_ALLOWED_TOP_LEVEL | _stdlib() | {"__future__"}
    bad = [f"{p.relative_to(REPO)}:{line} imports {name}" for p in (REPO / "device_agent").rglob("*.py")
           for name, line in _imports(p, module_level_only=True) if name not in allowed]
    assert bad == [], "optional libraries must be imported lazily inside functions"


def test_host_never_imports_tensorrt_or_pycuda():
    bad = [f"{p.relative_to(REPO)}:{line} imports {name}" for p in (REPO / "host").rglob("*.py")
           for name, line in _imports(p, module_level_only=False)
           if name in {"tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings", "pycuda"}]
    assert bad == []


def test_agent_starts_without_heavy_libraries_loaded():
    """Importing the server must not pull in TVM, onnxruntime, TensorRT or CUDA bindings."""
    code = ("import sys; before = set(sys.modules); import device_agent.server, device_agent.__main__; "
            f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules and m not in before))")
    # (`before`: site .pth hooks of installed packages, e.g. cuda-bindings' redirector, are not ours)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_the_target_checks_import_without_grpc_numpy_or_the_engine_service():
    """The host imports device_agent.compat to reason about targets; it must stay that light."""
    code = ("import sys; import device_agent.compat; "
            "print(sorted(m for m in ('grpc', 'numpy', 'protos', 'device_agent.engine_service', "
            "'device_agent.engines') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def _full_imports(path: Path) -> list[tuple[str, int]]:
    """Dotted module names imported anywhere in the file (``from host import inventory`` -> host.inventory)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
    return found


def test_client_compiler_and_pipeline_never_import_the_fleet_layer_above_them():
    lower = [REPO / "host" / d for d in ("client", "compiler", "pipeline")] + [REPO / "host" / "inventory.py"]
    files = [p for d in lower for p in ([d] if d.is_file() else d.rglob("*.py"))]
    bad = [f"{p.relative_to(REPO)}:{line} imports {name}" for p in files
           for name, line in _full_imports(p) if name == "host.fleet" or name.startswith("host.fleet.")]
    assert files and bad == []


def test_the_device_runtime_imports_neither_grpc_nor_the_service_nor_heavy_libraries():
    """An application imports `device_agent.runtime` into its own process: no gRPC stack, no agent service, no
    metrics (the model repository reports switches through an observer hook), and backends only when a model is
    opened."""
    code = ("import sys; before = set(sys.modules); import device_agent.runtime, device_agent.runtime.load; "
            "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in ('grpc', 'grpc_health', "
            f"'grpc_reflection', 'host', 'prometheus_client') or m in ('device_agent.server', "
            "'device_agent.engine_service', 'device_agent.metrics') "
            f"or m in {sorted(HEAVY)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout
