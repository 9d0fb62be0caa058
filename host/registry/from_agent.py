"""`deploy push --registry`: the agent pulls the bundle from the registry, and its engines are published after.

The push itself is unchanged (target, compile, build, verify); only the bundle's way onto the device and one
step after the build differ, so devices of the same class can later `Pull` what this one built.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from device_agent.errors import DataLoss, NotFound
from device_agent.registry import RegistryClient
from host.client.agent import AgentClient
from host.fleet.timing import fetch as fetch_timing
from host.registry.publish import Published, class_of, publish_bundle, publish_engines
from protos import agent_pb2


@dataclass
class RegistryUpload:
    bytes_sent: int      # to the registry
    already_present: bool
    reference: str


def bundle_via_registry(client: AgentClient, registry: RegistryClient, archive: Path,
                        digest: str) -> RegistryUpload:
    """Publish the bundle (nothing is sent when the registry has it), then the agent pulls it itself."""
    published = publish_bundle(registry, archive, digest)
    reply = client.pull(digest)
    return RegistryUpload(published.bytes_sent, reply.bundle_present, published.reference)


def publish_built_engines(client: AgentClient, registry: RegistryClient, bundle_digest: str,
                          segment_digests: Sequence[str], backend: str, backend_version: str) -> Published:
    """The agent's engines for the bundle's segments (most recently used per segment), digest-checked on the host,
    as the class's engines artifact, with the agent's timing cache for the class when it has one."""
    wanted = {d.split(":")[-1] for d in segment_digests}
    found: dict[str, agent_pb2.EngineEntry] = {}
    for entry in client.list_engines().engines:  # sorted by last use: a later entry wins
        seg = entry.segment_digest.split(":")[-1]
        if seg in wanted and entry.backend == backend and entry.backend_version == backend_version:
            found[seg] = entry
    missing = wanted - set(found)
    if missing:
        raise NotFound(f"the agent lists no engine for segment(s) {sorted(missing)}; nothing was published")
    with tempfile.TemporaryDirectory(prefix="deploy-publish-") as tmp:
        plans = []
        for entry in found.values():
            path = Path(tmp) / hashlib.sha256(entry.key.encode()).hexdigest()
            h = hashlib.sha256()
            with open(path, "wb") as f:
                for msg in client.fetch_engine(entry.key):
                    if msg.WhichOneof("msg") == "chunk":
                        h.update(msg.chunk)
                        f.write(msg.chunk)
            if "sha256:" + h.hexdigest() != entry.digest:
                os.unlink(path)
                raise DataLoss(f"engine {entry.key[:16]}... arrived with another digest than its entry's; "
                               "nothing was published")
            plans.append((entry, path))
        timing = fetch_timing(client, backend)  # the class's timing cache rides along as one more layer
        return publish_engines(registry, bundle_digest, class_of([e for e, _ in plans]), plans, timing)
