"""The last phase of a push: the pushed bundle becomes a named version on the device, and with --activate the one
it serves (the agent verifies it itself and gates activation: device_agent/model_service.py)."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc

from device_agent.errors import PreconditionFailed
from host.client.agent import AgentClient
from host.client.errors import AgentError
from protos import agent_pb2

from .observer import Observer

_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class VersionResult:
    """`push --json`'s ``model``: the version this push recorded (or found unchanged) and what is active now."""

    name: str
    version: int
    created: bool  # false: the newest version already was this bundle with these engines
    state: str
    why: Optional[str]
    active: Optional[int]
    previous: Optional[int]
    activated: bool
    seconds: float


def default_name(source: Path) -> str:
    """The model file's stem, its name less the last suffix ("resnet50.onnx" -> "resnet50", "det.v2.onnx" ->
    "det.v2", a directory's own name), made a valid name. Only the last suffix goes: two files that differ before
    it ("det.v1.onnx", "det.v2.onnx") are two models, not two versions of one."""
    stem = source.name if source.is_dir() else source.stem
    return (_NOT_NAME.sub("-", stem).strip("-.") or "model")[:64]


def record_version(client: AgentClient, digest: str, options: agent_pb2.BuildOptions, name: str, explicit: bool,
                   tolerance: Optional[float], activate: bool, observer: Optional[Observer] = None
                   ) -> Optional[VersionResult]:
    """RegisterVersion, then Activate when asked. An agent without model versions (an older release) is skipped
    with a note unless the user asked for a name or an activation, which then fails in one line."""
    observer = observer or Observer()
    observer.phase("version", name)
    t0 = time.perf_counter()
    request = agent_pb2.RegisterVersionRequest(name=name, bundle_digest=digest, options=options,
                                               tolerance=tolerance or 0.0, skip_verify=tolerance is None)
    try:
        reply = client.register_version(request)
    except AgentError as exc:
        if exc.code != grpc.StatusCode.UNIMPLEMENTED:
            raise
        if explicit or activate:
            raise PreconditionFailed(f"the agent at {client.address} does not keep model versions (an older "
                                     "release); upgrade it (deploy agent install) or push without --name and "
                                     "--activate") from None
        observer.phase_done("version", time.perf_counter() - t0, "skipped: this agent keeps no model versions")
        return None
    v = reply.version
    active: Optional[int] = None
    previous: Optional[int] = None
    if activate:
        done = client.activate(name, v.version)
        active = done.active.version
        previous = done.previous if done.HasField("previous") else None
    else:
        listed = client.list_models(name).models
        if listed and listed[0].HasField("active"):
            active = listed[0].active
    seconds = time.perf_counter() - t0
    said = f"{name} version {v.version}" + ("" if reply.created else " (unchanged)")
    observer.phase_done("version", seconds, said + (", active" if activate else ""))
    return VersionResult(name, v.version, reply.created, v.state, v.why or None, active, previous, activate, seconds)
