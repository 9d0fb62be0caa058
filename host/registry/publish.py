"""Publish a bundle and a class's engines as OCI artifacts, with the agent's own small registry client.

Layout (one repository): the bundle is the one layer (`application/vnd.jetson-deploy.bundle.v1.tar`, its digest
the bundle's digest) of an artifact tagged `bundle-<hex>`; a class's engines are the layers
(`application/vnd.jetson-deploy.engine.v1`, annotated with the cache key and its parts) of an artifact tagged
`engines_tag(bundle, class)`, plus a timing-cache layer when the builder has one. Blobs the registry holds are
not sent again, so a second publish costs a HEAD per blob. What a class should hold now is the class artifact
(`class_tag(class)`), read by polling agents; `publish_model_target` makes it also name the model version that
should be active there (docs/fleet.md, "Model targets").
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

from device_agent.cache import canonical_json
from device_agent.errors import InvalidInput
from device_agent.registry import (ANN_BUILDER, ANN_BUNDLE, ANN_CLASS, ANN_ENGINES, ANN_KEY, ANN_PARTS,
                                   ANN_TIMING_CLASS_DIGEST, ANN_TIMING_FACTS, BUNDLE_ARTIFACT, BUNDLE_LAYER,
                                   BUNDLE_MANIFEST_LAYER, BUNDLE_PART_LAYER, CLASS_ARTIFACT, EMPTY_CONFIG,
                                   EMPTY_CONFIG_TYPE, ENGINE_LAYER, ENGINES_ARTIFACT, MODEL_OPTION_FIELDS,
                                   TIMING_CACHE_LAYER, ModelTarget,
                                   RegistryClient, artifact_manifest, bundle_tag, check_digest, class_tag,
                                   engines_tag, sha256_hex)
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
    return Published(tag, manifest_digest, sent + n + _sign(client, manifest_digest, n, Path(archive)))


def _sign(client: RegistryClient, manifest_digest: str, manifest_size: int, bundle: Path) -> int:
    """With the host's keys: the bundle's signature as an artifact referring to its artifact; bytes sent."""
    from host.security.signing import metadata_for

    wire = metadata_for(bundle)  # an archive or a bundle directory: the same manifest bytes are signed
    if wire is None:
        return 0
    from device_agent.registry_trust import publish_signature

    return publish_signature(client, manifest_digest, manifest_size, wire)


def publish_bundle_parts(client: RegistryClient, bundle_dir: Path) -> Published:
    """A bundle by parts as an artifact: one layer per part (a part the repository holds, from any version or
    model, is not sent again: a HEAD), its manifest last; agents `Pull` it by the manifest's digest and fetch only
    the layers their store lacks."""
    from device_agent.bundle import Bundle
    from device_agent.manifest import MANIFEST_NAME

    bundle = Bundle.open(bundle_dir)
    digest = bundle.manifest_digest
    sent = _sent(client.push_bytes(EMPTY_CONFIG))
    layers, seen = [], set()
    for rel, part in sorted(bundle.manifest.files(), key=lambda f: f[1]):
        if part in seen:
            continue
        seen.add(part)
        _digest, size, pushed = client.push_file(bundle.path_of(rel), part)
        sent += size if pushed else 0
        layers.append({"mediaType": BUNDLE_PART_LAYER, "digest": part, "size": size})
    _digest, size, pushed = client.push_file(bundle.root / MANIFEST_NAME, digest)
    sent += size if pushed else 0
    layers.append({"mediaType": BUNDLE_MANIFEST_LAYER, "digest": digest, "size": size})
    tag = bundle_tag(digest)
    manifest_digest, n = client.push_manifest(tag, artifact_manifest(BUNDLE_ARTIFACT, layers, {ANN_BUNDLE: digest}))
    return Published(tag, manifest_digest, sent + n + _sign(client, manifest_digest, n, bundle.root))


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
        annotations = {ANN_KEY: entry.key, ANN_PARTS: entry.attributes["parts"]}
        if entry.builder_record:  # the building agent's signature (device_agent/engine_seal.py) rides along
            annotations[ANN_BUILDER] = entry.builder_record.decode()
        layers.append({"mediaType": ENGINE_LAYER, "digest": digest, "size": size, "annotations": annotations})
    if timing is not None:
        layers.append(timing_layer(timing))
        sent += _sent(client.push_bytes(timing.data))
    tag = engines_tag(bundle_digest, device_class)
    manifest = artifact_manifest(ENGINES_ARTIFACT, layers, {ANN_BUNDLE: bundle_digest, ANN_CLASS: device_class})
    manifest_digest, n = client.push_manifest(tag, manifest)
    return Published(tag, manifest_digest, sent + n)


def publish_class(client: RegistryClient, device_class: str, bundle_digest: str, engines_reference: str,
                  model: Optional[ModelTarget] = None) -> Published:
    """What `device_class` should hold now (tag `class_tag(class)`): agents with --registry-poll-s read it and pull
    the bundle and engines it names, and with `model` make that bundle the model's active version. Its one layer is
    the OCI empty descriptor; the names are annotations."""
    sent = _sent(client.push_bytes(EMPTY_CONFIG))
    empty = {"mediaType": EMPTY_CONFIG_TYPE, "digest": sha256_hex(EMPTY_CONFIG), "size": len(EMPTY_CONFIG)}
    annotations = {ANN_CLASS: device_class, ANN_BUNDLE: bundle_digest, ANN_ENGINES: engines_reference}
    if model is not None:
        annotations.update(model.annotations())
    manifest = artifact_manifest(CLASS_ARTIFACT, [empty], annotations)
    tag = class_tag(device_class)
    manifest_digest, n = client.push_manifest(tag, manifest)
    return Published(tag, manifest_digest, sent + n)


def publish_model_target(client: RegistryClient, engines_reference: str, name: str, bundle_digest: str,
                         tolerance: float, options: Optional[agent_pb2.BuildOptions] = None) -> Published:
    """Make the class of the engines artifact `engines_reference` (a tag `fleet warm --registry` published:
    `ClassResult.published`) hold `bundle_digest` with version NAME active: its class artifact is published again,
    naming the bundle, those engines and the model (name, the verify tolerance each agent checks with, and the
    options the engines were built with, as the class's `ClassPlan.options`). Polling agents of the class record
    the bundle as a version of NAME (unless a kept version is it already), verify it, and activate it under their
    own health check. The engines artifact must exist and be that bundle's; else InvalidInput or NotFound and
    nothing is published. Calling it again with the same arguments publishes the same manifest (same digest)."""
    if not tolerance > 0:
        raise InvalidInput(f"tolerance {tolerance!r} must be above 0 (the largest relative error verify accepts)")
    return _publish_target(client, engines_reference, bundle_digest,
                           ModelTarget(name, float(tolerance), target_options(options)))


def publish_no_model_active(client: RegistryClient, engines_reference: str, name: str,
                            bundle_digest: str) -> Published:
    """As `publish_model_target`, but the class's polling agents are to have no version of NAME active (a rollout
    taking back devices that had none): they hold the bundle and engines, and deactivate NAME (kept versions stay)."""
    return _publish_target(client, engines_reference, bundle_digest, ModelTarget(name, 0.0, {}, active=False))


def _publish_target(client: RegistryClient, engines_reference: str, bundle_digest: str,
                    target: ModelTarget) -> Published:
    from device_agent.models import check_name

    check_name(target.name)
    check_digest(bundle_digest)
    doc, _digest = client.manifest(engines_reference)  # NotFound when the class was never published
    ann = doc.get("annotations") or {}
    if doc.get("artifactType") != ENGINES_ARTIFACT or not ann.get(ANN_CLASS):
        raise InvalidInput(f"{engines_reference} is not an engines artifact ({doc.get('artifactType')})")
    if ann.get(ANN_BUNDLE) != bundle_digest:
        raise InvalidInput(f"{engines_reference} holds the engines of bundle {ann.get(ANN_BUNDLE)}, not "
                           f"{bundle_digest}")
    return publish_class(client, str(ann[ANN_CLASS]), bundle_digest, engines_reference, target)


def target_options(options: Optional[agent_pb2.BuildOptions]) -> dict:
    """The BuildOptions fields a model target carries (`MODEL_OPTION_FIELDS`, the list the agent checks it
    against): those set; force_rebuild never."""
    if options is None:
        return {}
    return {f: getattr(options, f) for f in MODEL_OPTION_FIELDS if _is_set(options, f)}


def _is_set(options: agent_pb2.BuildOptions, name: str) -> bool:
    """An `optional` field when present; a plain one (backend) when not empty."""
    try:
        return options.HasField(name)
    except ValueError:  # no presence: proto3 scalar without `optional`
        return bool(getattr(options, name))


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


__all__ = ["Published", "publish_bundle", "publish_class", "publish_engines", "publish_model_target",
           "publish_no_model_active", "class_of", "timing_layer"]
