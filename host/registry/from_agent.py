"""`deploy push --registry`: the agent pulls the bundle from the registry, and its engines are published after.

The push itself is unchanged (target, compile, build, verify); only the bundle's way onto the device and one
step after the build differ, so devices of the same class can later `Pull` what this one built.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from device_agent.errors import NotFound, ResourceExhausted
from device_agent.registry import RegistryClient
from host.client.agent import AgentClient
from host.fleet import engine_fetch
from host.fleet.timing import fetch as fetch_timing
from host.registry.publish import Published, class_of, publish_bundle, publish_bundle_parts, publish_engines
from protos import agent_pb2


@dataclass
class RegistryUpload:
    bytes_sent: int      # to the registry
    already_present: bool
    reference: str


def bundle_via_registry(client: AgentClient, registry: RegistryClient, archive: Path,
                        digest: str, bundle_dir: Optional[Path] = None) -> RegistryUpload:
    """Publish the bundle (by parts when `bundle_dir` is given, `digest` then its manifest's; nothing is sent that
    the registry has), then the agent pulls it itself (only the parts it lacks)."""
    published = publish_bundle_parts(registry, bundle_dir) if bundle_dir is not None else \
        publish_bundle(registry, archive, digest)
    reply = client.pull(digest)
    return RegistryUpload(published.bytes_sent, reply.bundle_present, published.reference)


def publish_built_engines(client: AgentClient, registry: RegistryClient, bundle_digest: str,
                          segment_digests: Sequence[str], backend: str, backend_version: str,
                          options: Optional[agent_pb2.BuildOptions] = None) -> Published:
    """The agent's engines for the bundle's segments (of the build's precision, most recently used per segment),
    fetched as fleet warm fetches them (host/fleet/engine_fetch.py: size-capped, digest-checked, retried), as the
    class's engines artifact, with the agent's timing cache for the class when it has one that agents take."""
    precision = engine_fetch.precision_of(options) if options is not None else None
    selection = engine_fetch.select(client.list_engines().engines, segment_digests, backend, backend_version,
                                    precision)
    if not selection.complete:
        raise NotFound(f"the agent lists no engine for segment(s) {selection.missing}; nothing was published")
    with tempfile.TemporaryDirectory(prefix="deploy-publish-") as tmp:
        plans = [engine_fetch.fetch(client, entry, Path(tmp), client.address) for entry in selection.in_order()]
        try:
            timing = fetch_timing(client, backend)  # the class's timing cache rides along as one more layer
        except ResourceExhausted:
            timing = None  # larger than any agent takes (a Pull would refuse the artifact): the engines go alone
        return publish_engines(registry, bundle_digest, class_of([e for e, _ in plans]), plans, timing)
