"""An agent's engines for a bundle: which of them serve it, and fetching them to host files (size-capped,
digest-checked, retried). The one way for `deploy fleet warm` (host/fleet/warm.py) and for the publish step of
`deploy push --registry` (host/registry/from_agent.py), so an engine leaves a device under the same checks on
both paths.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from device_agent.errors import DataLoss
from device_agent.incoming_engine import MAX_ENGINE_BYTES
from host.client.agent import AgentClient, upload_timeout
from host.fleet.fanout import RetryPolicy, retrying
from protos import agent_pb2


def bare(digest: str) -> str:
    """The hex part of "sha256:HEX" (or HEX as it is)."""
    return digest.split(":", 1)[1] if digest.startswith("sha256:") else digest


def precision_of(options: agent_pb2.BuildOptions) -> Optional[str]:
    """"fp16" or "fp32" when the build options set it; None when they leave it to the agent (any precision)."""
    return ("fp16" if options.fp16 else "fp32") if options.HasField("fp16") else None


@dataclass
class Selection:
    """The engines that serve a bundle's segments on one agent: one entry per segment (bare digest) found."""

    wanted: list[str]                                    # bare segment digests, in the bundle's order
    found: dict[str, agent_pb2.EngineEntry] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        return sorted(set(self.wanted) - set(self.found))

    @property
    def complete(self) -> bool:
        return not self.missing

    def in_order(self) -> list[agent_pb2.EngineEntry]:
        """The entries in the bundle's segment order (the selection must be complete)."""
        return [self.found[d] for d in self.wanted]


def select(entries: Iterable[agent_pb2.EngineEntry], segment_digests: Sequence[str], backend: str,
           backend_version: str, precision: Optional[str] = None) -> Selection:
    """Per segment, the engine of this backend and version (and precision, when given) that the agent used last:
    ListEngines sorts by last use, so a later entry wins."""
    selection = Selection([bare(d) for d in segment_digests])
    wanted = set(selection.wanted)
    for entry in entries:
        seg = bare(entry.segment_digest)
        if seg in wanted and entry.backend == backend and entry.backend_version == backend_version and (
                precision is None or entry.attributes.get("precision", precision) == precision):
            selection.found[seg] = entry
    return selection


def fetch(client: AgentClient, entry: agent_pb2.EngineEntry, directory: Path, source: str,
          policy: Optional[RetryPolicy] = None) -> tuple[agent_pb2.EngineEntry, Path]:
    """Stream one engine from `client`'s agent (`source` names it in errors) into a file in `directory`: no more
    bytes than its entry says, its sha256 and size must match the entry; retried while the agent is unreachable.
    Returns the entry the agent sent with it (else `entry`) and the file."""

    def once() -> tuple[agent_pb2.EngineEntry, Path]:
        # the key comes from the agent: never let it name a path ("../.."); hash it into a file name
        path = Path(directory) / hashlib.sha256(entry.key.encode()).hexdigest()
        try:
            return _receive(client, entry, path, source)
        except BaseException:
            path.unlink(missing_ok=True)  # a refused or cut-off engine leaves no bytes behind
            raise

    return retrying(once, policy)[0]


def _receive(client: AgentClient, entry: agent_pb2.EngineEntry, path: Path,
             source: str) -> tuple[agent_pb2.EngineEntry, Path]:
    """One FetchEngine stream into `path`: at most the listed entry's size (the agent's own bound on an engine
    from elsewhere when it names none), then the bytes' size and sha256 against the entry sent with them."""
    limit = entry.size or MAX_ENGINE_BYTES
    h = hashlib.sha256()
    head: Optional[agent_pb2.EngineEntry] = None
    size = 0
    with open(path, "wb") as f:
        for msg in client.fetch_engine(entry.key, timeout=upload_timeout(entry.size)):
            if msg.WhichOneof("msg") == "entry":
                head = msg.entry
                continue
            size += len(msg.chunk)
            if size > limit:
                listed = f"the {limit} bytes it was listed with" if entry.size else f"{limit} bytes, the most"
                raise DataLoss(f"engine {entry.key[:16]}... from {source} sends more than {listed} (rebuilt since?); "
                               "nothing was kept: run the command again")
            h.update(msg.chunk)
            f.write(msg.chunk)
    head = head or entry
    digest = "sha256:" + h.hexdigest()
    if bare(digest) != bare(head.digest) or (head.size and size != head.size):
        raise DataLoss(f"engine {entry.key[:16]}... from {source} arrived with {size} bytes, digest "
                       f"{digest}; its entry says {head.size} bytes, {head.digest}")
    return head, path


__all__ = ["MAX_ENGINE_BYTES", "Selection", "bare", "fetch", "precision_of", "select"]
