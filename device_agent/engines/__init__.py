"""Engine backends behind one interface; ``select`` turns a name or ``auto`` into a usable backend.

Importing this package imports no optional library: each backend imports its own lazily.
"""
from __future__ import annotations

import threading
from typing import Dict, List, Optional, Type

from device_agent.engines.base import Backend, BuildSpec, Engine, ProbeResult, TensorMeta
from device_agent.engines.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeCudaBackend
from device_agent.engines.tensorrt import TensorRTBackend
from device_agent.engines.trtexec import TrtexecBackend
from device_agent.compat import TENSORRT_FAMILY  # noqa: F401 - part of this package's API
from device_agent.errors import InvalidInput, Unavailable

#: Segment backends, best first: ``auto`` takes the first one that probes available.
BACKENDS: Dict[str, Type[Backend]] = {
    "tensorrt": TensorRTBackend,
    "trtexec": TrtexecBackend,
    "onnxruntime-cuda": OnnxRuntimeCudaBackend,
    "onnxruntime": OnnxRuntimeBackend,
}

_instances: Dict[str, Backend] = {}
_lock = threading.Lock()


def get(name: str) -> Backend:
    """The process-wide instance of a backend (its probe runs once)."""
    if name not in BACKENDS:
        raise InvalidInput(f"unknown backend {name!r}; choose one of {', '.join(['auto', *BACKENDS])}")
    with _lock:
        if name not in _instances:
            _instances[name] = BACKENDS[name]()
        return _instances[name]


def probe_all() -> List[ProbeResult]:
    results = [get(name).probe() for name in BACKENDS]
    results.append(probe_tvm())
    return results


def probe_tvm() -> ProbeResult:
    """The TVM runtime runs bundles' remainders; it is not a segment backend.

    Found and versioned from its package metadata, not imported: importing TVM takes seconds and
    ~100 MB that an agent answering GetInfo on a 4 GB Jetson should not pay. It is imported when a
    hybrid bundle first runs.
    """
    import importlib.util

    try:
        found = importlib.util.find_spec("tvm") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return ProbeResult("tvm", False, "", "no module named 'tvm' (install apache-tvm to run hybrid bundles)")
    version = ""
    try:
        from importlib.metadata import PackageNotFoundError, version as dist_version

        for dist in ("apache-tvm", "tvm", "mlc-ai-nightly"):
            try:
                version = dist_version(dist)
                break
            except PackageNotFoundError:
                continue
    except ImportError:
        pass
    return ProbeResult("tvm", True, version, "installed; runs TVM remainders of hybrid bundles")


def select(name_or_auto: Optional[str], default: Optional[str] = None) -> Backend:
    """The named backend (it must be available), or for ``auto``/empty the agent default, else the best."""
    name = (name_or_auto or "").strip().lower()
    if name in ("", "auto") and default and default.lower() != "auto":
        name = default.strip().lower()
    if name == "tvm":
        raise InvalidInput("tvm runs a bundle's remainder, not its TensorRT segments; "
                           "choose tensorrt, trtexec, onnxruntime-cuda, onnxruntime or auto for the segments")
    if name in ("", "auto"):
        for candidate in BACKENDS:
            backend = get(candidate)
            if backend.probe().available:
                return backend
        raise Unavailable("no engine backend is available on this device (install onnxruntime at least)")
    backend = get(name)
    backend.require()
    return backend


__all__ = ["BACKENDS", "Backend", "BuildSpec", "Engine", "ProbeResult", "TensorMeta", "get", "probe_all",
           "select", "TENSORRT_FAMILY"]
