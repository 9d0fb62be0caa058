"""Named model versions on a device, as plain data: what `deploy models ls`, `activate` and `rollback` print
with --json and the Python API returns. The agent decides (device_agent/models.py); this only asks and shapes."""
from __future__ import annotations

from typing import Any, Optional

from protos import agent_pb2

from host.client.agent import AgentClient


def version_json(v: agent_pb2.ModelVersion) -> dict[str, Any]:
    return {"version": v.version, "bundle_digest": v.bundle_digest, "state": v.state, "why": v.why or None,
            "segments": [{"id": s, "engine_key": k} for s, k in zip(v.segment_ids, v.engine_keys)],
            "engine_paths": list(v.engine_paths), "build": dict(sorted(v.build.items())),
            "verify": None if not v.HasField("verify_passed") else {
                "passed": v.verify_passed, "max_rel_err": v.max_rel_err if v.HasField("max_rel_err") else None,
                "tolerance": v.tolerance},
            "created": v.created}


def model_json(m: agent_pb2.ModelInfo) -> dict[str, Any]:
    return {"name": m.name, "active": m.active if m.HasField("active") else None,
            "previous": m.previous if m.HasField("previous") else None, "active_path": m.active_path or None,
            "versions": [version_json(v) for v in m.versions]}


def list_models(client: AgentClient, name: str = "") -> dict[str, Any]:
    return {"models": [model_json(m) for m in client.list_models(name).models]}


def activation_json(name: str, reply: agent_pb2.ActivateReply) -> dict[str, Any]:
    return {"name": name, "active": reply.active.version,
            "previous": reply.previous if reply.HasField("previous") else None,
            "bundle_digest": reply.active.bundle_digest, "seconds": round(reply.seconds, 4),
            "version": version_json(reply.active)}


def activate(client: AgentClient, name: str, version: Optional[int] = None) -> dict[str, Any]:
    return activation_json(name, client.activate(name, version))


def rollback(client: AgentClient, name: str) -> dict[str, Any]:
    return activation_json(name, client.rollback(name))
