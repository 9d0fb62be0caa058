"""Putting a bundle on one agent as parts: ask once which of its digests the agent lacks, upload only those.

The manifest names every file by digest and size (device_agent/parts.py); the manifest's own digest is the
bundle's identity. One `FindMissingBlobs` call (REAPI's) asks about the manifest and every part; each missing part
then goes through `AgentClient.upload` (resume from the committed offset, digest checked by the agent), and the
manifest last, so an agent that holds the manifest was sent every part. A part the agent finds corrupt on
arrival (DATA_LOSS) is sent again alone, up to `PART_ATTEMPTS` times.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc

from device_agent.bundle import Bundle
from device_agent.manifest import MANIFEST_NAME

from .agent import AgentClient, ProgressFn
from .errors import AgentError

PART_ATTEMPTS = 3


class NoParts(Exception):
    """The agent predates FindMissingBlobs (UNIMPLEMENTED): it takes bundles only as whole archives."""


@dataclass
class PartsSummary:
    """What moved: `bytes_total`/`parts_total` are the whole bundle (manifest included), `*_sent` what travelled."""

    digest: str
    bytes_total: int
    bytes_sent: int
    parts_total: int
    parts_sent: int
    seconds: float
    resent: int = 0  # parts sent again after the agent found them corrupt on arrival
    resumed_bytes: int = 0  # bytes the agent had committed of parts cut off earlier (not sent again)


def find_missing(client: AgentClient, digests: list[str]) -> list[str]:
    """The digests the agent lacks; `NoParts` from an agent without the call."""
    try:
        return client.find_missing_blobs(digests)
    except AgentError as err:
        if err.code == grpc.StatusCode.UNIMPLEMENTED:
            raise NoParts(client.address) from None
        raise


def _blobs(bundle: Bundle) -> dict[str, Path]:
    """What travels of a bundle by parts, by digest: each distinct part once, then the manifest (last)."""
    blobs: dict[str, Path] = {}
    for rel, part in sorted(bundle.manifest.files(), key=lambda f: f[1]):
        blobs.setdefault(part, bundle.path_of(rel))
    blobs[bundle.manifest_digest] = bundle.root / MANIFEST_NAME
    return blobs


def bundle_bytes(bundle_dir: Path) -> tuple[int, int]:
    """(bytes, parts) of a bundle by parts: each distinct part once, and the manifest."""
    blobs = _blobs(Bundle.open(bundle_dir))
    return sum(p.stat().st_size for p in blobs.values()), len(blobs)


def send_bundle(client: AgentClient, bundle_dir: Path, progress: Optional[ProgressFn] = None,
                trust: Optional[bytes] = None) -> PartsSummary:
    """Upload what the agent lacks of the bundle in `bundle_dir`; its identity (manifest digest) is returned.

    `trust`: the fleet's signing metadata for the manifest (`host.security.signing.metadata_for(bundle_dir)`),
    sent with the manifest's upload; an agent with a trust root verifies it before it stores the manifest. Parts
    carry none: they are inert data until a verified manifest names them."""
    started = time.perf_counter()
    bundle = Bundle.open(bundle_dir)
    digest = bundle.manifest_digest
    by_digest = _blobs(bundle)
    sizes = {d: p.stat().st_size for d, p in by_digest.items()}
    order = list(by_digest)  # the parts by digest, the manifest last
    lacking = set(find_missing(client, order))
    todo = [d for d in order if d in lacking]
    if trust is not None and digest not in lacking:  # held, maybe unverified or by older metadata: verified anew
        todo.append(digest)  # (the agent reads no payload of a blob it holds)
    total_todo = sum(sizes[d] for d in todo)
    parts_sent = 0
    done = [0]
    sent = resent = resumed = 0
    for part in todo:
        def part_progress(position: int, _size: int, base: int = done[0]) -> None:
            if progress:
                progress(base + position, total_todo)

        for attempt in range(PART_ATTEMPTS):
            try:
                summary = client.upload(by_digest[part], digest=part, progress=part_progress,
                                        kind="manifest" if part == digest else "part",
                                        trust=trust if part == digest else None)
                break
            except AgentError as err:
                if err.code != grpc.StatusCode.DATA_LOSS or attempt + 1 == PART_ATTEMPTS:
                    raise
                resent += 1
                sent += sizes[part]  # the damaged attempt carried the whole part: its digest is checked at the end
                client.retrier.announce(f"part {part[:19]}... arrived corrupt ({err.detail}); sending it again")
        sent += summary.bytes_sent
        parts_sent += 0 if summary.already_present else 1
        resumed += 0 if summary.already_present else summary.resumed_from
        done[0] += sizes[part]
    if progress and not todo:
        progress(0, 0)
    return PartsSummary(digest, sum(sizes.values()), sent, len(order), parts_sent, time.perf_counter() - started,
                        resent, resumed)


def whole_archive(bundle_dir: Path, out_dir: Path) -> Path:
    """The bundle as an agent before parts reads it: schema 1, each segment's weights inline again, one archive.

    Such an agent takes no FindMissingBlobs and cannot read weights kept beside a graph; its bundle is a new one
    (other segment digests), made once per manifest and kept in `out_dir`."""
    import shutil
    import tempfile
    from dataclasses import replace

    import onnx

    from device_agent.archive import write_archive
    from device_agent.fileio import sha256_file
    from device_agent.manifest import write_manifest
    from host.compiler.weights import WEIGHTS_DIR

    bundle = Bundle.open(bundle_dir)
    archive = Path(out_dir) / f"{bundle.manifest_digest.split(':', 1)[1][:32]}.v1.tar"
    if archive.is_file():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        root = Path(tmp) / "bundle"
        shutil.copytree(bundle.root, root)
        segments = []
        for seg in bundle.manifest.segments:
            path = root / seg.path
            model = onnx.load(str(path))  # with its external weights
            path.write_bytes(model.SerializeToString(deterministic=True))
            segments.append(replace(seg, digest=sha256_file(path)))
        for folder in {(root / seg.path).parent / WEIGHTS_DIR for seg in bundle.manifest.segments}:
            shutil.rmtree(folder, ignore_errors=True)
        write_manifest(root, replace(bundle.manifest, schema_version=1, file_list=[], segments=segments))
        write_archive(root, archive)
    return archive
