"""Publish a bundle and a class's engines as OCI artifacts, with the agent's own small registry client.

Layout (one repository): the bundle is the one layer (`application/vnd.jetson-deploy.bundle.v1.tar`, its digest
the bundle's digest) of an artifact tagged `bundle-<hex>`; a class's engines are the layers
(`application/vnd.jetson-deploy.engine.v1`, annotated with the cache key and its parts) of an artifact tagged
`engines_tag(bundle, class)`, plus a timing-cache layer when the builder has one. Blobs the registry holds are
not sent again, so a second publish costs a HEAD per blob.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

from device_agent.cache import canonical_json
from device_agent.registry import (ANN_BUNDLE, ANN_CLASS, ANN_ENGINES, ANN_KEY, ANN_PARTS, ANN_TIMING_CLASS_DIGEST,
                                   ANN_TIMING_FACTS, BUNDLE_ARTIFACT, BUNDLE_LAYER, CLASS_ARTIFACT, EMPTY_CONFIG,
                                   EMPTY_CONFIG_TYPE, ENGINE_LAYER, ENGINES_ARTIFACT, TIMING_CACHE_LAYER,
                                   RegistryClient, artifact_manifest, bundle_tag, class_tag, engines_tag, sha256_hex)
from device_agent.timing_cache import class_digest, class_facts
from host.fleet.timing import TimingCopy
from protos import agent_pb2


@dataclass
class Published:
    reference: str      # the tag
    manifest_digest: str
    bytes_sent: int     # blob and manifest bytes this call uploaded (blobs the registry had cost nothing)


def publish_bundle(client: RegistryClient, archive: Path, digest: Optional[str] = None) -> Published:
    """The bundle archive as an artifact; agents `Pull` it by its digest."""
    sent = _sent(client.push_bytes(EMPTY_CONFIG))
    digest, size, pushed = client.push_file(Path(archive), digest)
    sent += size if pushed else 0
    tag = bundle_tag(digest)
    manifest = artifact_manifest(BUNDLE_ARTIFACT, [{"mediaType": BUNDLE_LAYER, "digest": digest, "size": size}],
                                 {ANN_BUNDLE: digest})
    manifest_digest, n = client.push_manifest(tag, manifest)
    return Published(tag, manifest_digest, sent + n)


def publish_engines(client: RegistryClient, bundle_digest: str, device_class: str,
                    engines: Sequence[Tuple[agent_pb2.EngineEntry, Path]],
                    timing: Optional[TimingCopy] = None) -> Published:
    """A class's engines (entries as FetchEngine sent them, plans in host files already checked by digest), and
    the builder's timing cache (digest checked by `host.fleet.timing.fetch`) when it has one."""
    sent = _sent(client.push_bytes(EMPTY_CONFIG))
    layers = []
    for entry, path in engines:
        digest, size, pushed = client.push_file(path, entry.digest)
        sent += size if pushed else 0
        layers.append({"mediaType": ENGINE_LAYER, "digest": digest, "size": size,
                       "annotations": {ANN_KEY: entry.key, ANN_PARTS: entry.attributes["parts"]}})
    if timing is not None:
        layers.append(timing_layer(timing))
        sent += _sent(client.push_bytes(timing.data))
    tag = engines_tag(bundle_digest, device_class)
    manifest = artifact_manifest(ENGINES_ARTIFACT, layers, {ANN_BUNDLE: bundle_digest, ANN_CLASS: device_class})
    manifest_digest, n = client.push_manifest(tag, manifest)
    return Published(tag, manifest_digest, sent + n)


def publish_class(client: RegistryClient, device_class: str, bundle_digest: str, engines_reference: str) -> Published:
    """What `device_class` should hold now (tag `class_tag(class)`): agents with --registry-poll-s read it and pull
    the bundle and engines it names. Its one layer is the OCI empty descriptor; the names are annotations."""
    sent = _sent(client.push_bytes(EMPTY_CONFIG))
    empty = {"mediaType": EMPTY_CONFIG_TYPE, "digest": sha256_hex(EMPTY_CONFIG), "size": len(EMPTY_CONFIG)}
    manifest = artifact_manifest(CLASS_ARTIFACT, [empty], {ANN_CLASS: device_class, ANN_BUNDLE: bundle_digest,
                                                           ANN_ENGINES: engines_reference})
    tag = class_tag(device_class)
    manifest_digest, n = client.push_manifest(tag, manifest)
    return Published(tag, manifest_digest, sent + n)


def timing_layer(timing: TimingCopy) -> dict:
    """The timing cache's layer descriptor: its class named (string, facts, class digest) so an agent can refuse
    another class's cache before fetching a byte (device_agent/registry_pull.py)."""
    facts = class_facts(dict(timing.info.facts))
    return {"mediaType": TIMING_CACHE_LAYER, "digest": timing.info.digest, "size": len(timing.data),
            "annotations": {ANN_CLASS: timing.info.device_class, ANN_TIMING_FACTS: canonical_json(facts).decode(),
                            ANN_TIMING_CLASS_DIGEST: class_digest(facts)}}


def _sent(pushed: Tuple[str, int, bool]) -> int:
    return pushed[1] if pushed[2] else 0


def class_of(entries: Sequence[agent_pb2.EngineEntry]) -> str:
    """The device class the engines were built for, as the agent's cache names it (one per artifact)."""
    classes = {e.device_class for e in entries}
    if len(classes) != 1:
        raise ValueError(f"engines of {len(classes)} device classes cannot share one artifact")
    return classes.pop()


__all__ = ["Published", "publish_bundle", "publish_class", "publish_engines", "class_of", "timing_layer"]
