"""`deploy info`: what an agent reports about its device."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._options import DeviceOpt, JsonOpt
from .output import Output

if TYPE_CHECKING:
    from rich.console import Console

    from protos import agent_pb2


def info_dict(address: str, info: agent_pb2.DeviceInfo) -> dict[str, Any]:
    """The documented JSON shape of `deploy info --json`; facts the agent could not read are null."""
    def opt(name: str) -> Any:
        return getattr(info, name) if info.HasField(name) else None

    return {
        "address": address,
        "hostname": info.hostname,
        "agent_version": info.agent_version,
        "os": info.os,
        "arch": info.arch,
        "cpu_count": info.cpu_count,
        "memory_total_bytes": info.memory_total_bytes,
        "memory_available_bytes": info.memory_available_bytes,
        "store_free_bytes": info.store_free_bytes,
        "python_version": info.python_version,
        "profile": info.profile or None,
        "jetson_model": opt("jetson_model"),
        "l4t_release": opt("l4t_release"),
        "cuda_version": opt("cuda_version"),
        "gpus": [{"name": g.name, "compute_capability": g.compute_capability, "memory_bytes": g.memory_bytes}
                 for g in info.gpus],
        "trt_version": opt("trt_version"),
        "trt_module": opt("trt_module"),
        "tvm_runtime": info.tvm_runtime,
        "default_backend": info.default_backend,
        "backends": [{"name": b.name, "available": b.available, "version": b.version, "detail": b.detail}
                     for b in info.backends],
        "settings": settings_dict(info),
        "signing": signing_dict(info),
    }


def signing_dict(info: agent_pb2.DeviceInfo) -> dict[str, Any]:
    """`signing`: "on" with the TUF metadata versions the agent trusts (device_agent/trust.py), or "off"."""
    s = info.signing
    if not s.enabled:
        return {"state": "off"}
    return {"state": "on", "root_version": s.root_version, "targets_version": s.targets_version,
            "timestamp_version": s.timestamp_version}


SETTINGS = ("fp16", "cache_dir", "max_workspace_bytes", "multi_engine_mode")


def settings_dict(info: agent_pb2.DeviceInfo) -> dict[str, Any]:
    """`settings`: each build default of the agent, its `value` and `source` ("flag", "DEPLOY_AGENT_<NAME>",
    "TVM_TENSORRT_<NAME>", "default"); an agent older than this field reports null."""
    if not info.HasField("settings"):
        return {name: {"value": None, "source": None} for name in SETTINGS}
    s = info.settings
    return {name: {"value": getattr(s, name), "source": s.sources.get(name) or None} for name in SETTINGS}


def render_info(data: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key in ("address", "hostname", "agent_version", "os", "arch", "cpu_count", "python_version", "profile",
                "jetson_model", "l4t_release", "cuda_version", "trt_version", "tvm_runtime"):
        table.add_row(key, "-" if data[key] is None else str(data[key]))
    table.add_row("memory", f"{data['memory_available_bytes'] / 2**30:.1f} / {data['memory_total_bytes'] / 2**30:.1f} GiB free")
    table.add_row("store free", f"{data['store_free_bytes'] / 2**30:.1f} GiB")
    for gpu in data["gpus"]:
        table.add_row("gpu", f"{gpu['name']} (sm {gpu['compute_capability']})")
    for b in data["backends"]:
        state = f"{b['version']}" if b["available"] else f"unavailable: {b['detail']}"
        table.add_row(f"backend {b['name']}", state)
    sig = data["signing"]
    table.add_row("signing", "off" if sig["state"] == "off" else
                  f"on (root v{sig['root_version']}, targets v{sig['targets_version']})")
    for name, setting in data["settings"].items():
        if setting["source"] is not None:
            table.add_row(name, f"{setting['value']} ({setting['source']})")
    console.print(table)


def info(device: DeviceOpt = "local", json: JsonOpt = False) -> None:
    """Show what the device's agent reports: TensorRT, CUDA, GPU, memory, disk, backends."""
    from host.client.agent import connect

    with connect(device) as client:
        data = info_dict(client.address, client.info())
    Output(json).result(data, lambda c: render_info(data, c))
