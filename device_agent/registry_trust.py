"""The fleet's signing metadata in a registry: an OCI 1.1 artifact whose `subject` is the bundle's artifact.

The host pushes the TUF metadata (host/security/signing.py) as the one layer of a manifest of artifactType
`TUF_ARTIFACT` whose `subject` names the bundle artifact's manifest, as cosign and Notation store signatures. A
registry with the OCI 1.1 referrers API lists it under `referrers/<digest>`; one without (Distribution 2.8, which
Debian ships) gets the spec's fallback, an image index tagged `sha256-<hex>` of the subject. A pulling agent finds
the newest such artifact, checks that it refers to the bundle it pulls, and verifies the bundle with it exactly as
an uploaded one (device_agent/trust.py). Whoever can write to the registry can add or replace artifacts, but not
sign: a bundle or metadata the fleet's keys did not sign is refused.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List

from .bounded_json import loads_bounded
from .errors import DataLoss, InvalidInput, NotFound
from .registry import MANIFEST_TYPE, RegistryClient, check_digest, sha256_hex

TUF_ARTIFACT = "application/vnd.jetson-deploy.tuf.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MAX_METADATA_BYTES = 4 * 1024 * 1024
MAX_INDEX_BYTES = 4 * 1024 * 1024


def referrers_tag(subject: str) -> str:
    """The OCI 1.1 referrers tag schema: `sha256-<hex>` of the subject's digest."""
    return check_digest(subject).replace(":", "-")


def _get_index(client: RegistryClient, path: str) -> Dict[str, Any]:
    def once() -> bytes:
        with client._open("GET", client._url(path), {"Accept": INDEX_TYPE}) as r:  # noqa: SLF001 - same package
            return r.read(MAX_INDEX_BYTES + 1)

    body = client.retried(f"GET {path}", once)
    doc = loads_bounded(body, MAX_INDEX_BYTES, lambda why: InvalidInput(f"registry index {path} is {why}"))
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests", []), list):
        raise InvalidInput(f"registry index {path} is not an OCI image index")
    return doc


def referrers(client: RegistryClient, subject: str) -> List[Dict[str, Any]]:
    """Descriptors of the artifacts that refer to `subject`: the referrers API, else the tag schema's index."""
    for path in (f"referrers/{check_digest(subject)}", f"manifests/{referrers_tag(subject)}"):
        try:
            return [d for d in _get_index(client, path).get("manifests", []) if isinstance(d, dict)]
        except (NotFound, InvalidInput):
            continue
    return []


def signing_metadata(client: RegistryClient, subject: str) -> bytes:
    """The newest signing metadata referring to `subject` (the bundle artifact's manifest digest), or b""."""
    found = [d for d in referrers(client, subject) if d.get("artifactType") == TUF_ARTIFACT]
    if not found:
        return b""
    doc, _digest = client.manifest(check_digest(str(found[-1].get("digest", ""))))
    if (doc.get("subject") or {}).get("digest") != subject:
        raise DataLoss(f"signature artifact {found[-1].get('digest')} does not refer to {subject}; refused")
    layers = doc.get("layers") or []
    if len(layers) != 1 or int(layers[0].get("size", 0)) > MAX_METADATA_BYTES:
        raise InvalidInput(f"signature artifact {found[-1].get('digest')} must hold one metadata layer of at most "
                           f"{MAX_METADATA_BYTES} bytes")
    digest = check_digest(str(layers[0].get("digest", "")))
    _start, chunks = client.retried(f"GET blob {digest}", lambda: client.blob_chunks(digest))
    data = b""
    for chunk in chunks:
        data += chunk
        if len(data) > MAX_METADATA_BYTES:
            raise InvalidInput(f"signing metadata {digest} is larger than {MAX_METADATA_BYTES} bytes")
    if sha256_hex(data) != digest:
        raise DataLoss(f"signing metadata blob hashes to {sha256_hex(data)}, not {digest}; refused")
    return data


def signature_manifest(subject: str, subject_size: int, metadata: bytes) -> Dict[str, Any]:
    """The artifact that carries `metadata` and refers to the subject manifest."""
    from .registry import artifact_manifest

    doc = artifact_manifest(TUF_ARTIFACT, [{"mediaType": TUF_ARTIFACT, "digest": sha256_hex(metadata),
                                            "size": len(metadata)}])
    doc["subject"] = {"mediaType": MANIFEST_TYPE, "digest": subject, "size": subject_size}
    return doc


def publish_signature(client: RegistryClient, subject: str, subject_size: int, metadata: bytes) -> int:
    """Push the metadata and its artifact, then list it (alone among signatures) in the subject's referrers
    index; returns the bytes sent. The newest signature replaces the older ones in the index."""
    sent = 0
    for data in (metadata, b"{}"):
        _d, size, pushed = client.push_bytes(data)
        sent += size if pushed else 0
    doc = signature_manifest(subject, subject_size, metadata)
    digest, n = client.push_manifest(sha256_hex(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()),
                                     doc)
    sent += n
    try:
        kept = [d for d in _get_index(client, f"manifests/{referrers_tag(subject)}").get("manifests", [])
                if isinstance(d, dict) and d.get("artifactType") != TUF_ARTIFACT]
    except (NotFound, InvalidInput):
        kept = []
    index = {"schemaVersion": 2, "mediaType": INDEX_TYPE,
             "manifests": kept + [{"mediaType": MANIFEST_TYPE, "digest": digest, "size": n,
                                   "artifactType": TUF_ARTIFACT}]}
    body = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()

    def once() -> None:
        with client._open("PUT", client._url(f"manifests/{referrers_tag(subject)}"),  # noqa: SLF001
                          {"Content-Type": INDEX_TYPE}, data=body):
            pass

    client.retried(f"PUT referrers index of {subject}", once)
    return sent + len(body)
