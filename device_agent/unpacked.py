"""The agent's unpacked bundles: a stored bundle archive unpacked (or a stored manifest's parts linked, parts.py)
once into `<data>/bundles/<hex>`, and trusted
only while its bytes still match their digests.

A Jetson's SD card or eMMC can change bytes at rest. An engine built from a changed segment would be cached under
the digest of the right one and served to every later request, so: an unpacked copy left by an earlier agent
process is verified (every file against the manifest) before first use; a segment is checked against its digest
before each build; a copy that fails is removed and unpacked again from the stored archive, whose own digest is
checked first; a stored archive that fails is removed from the store, so the next upload sends it again.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional

from .archive import extract_archive
from .bundle import Bundle
from .errors import DataLoss, DeployError, NotFound
from .fileio import sha256_bytes, sha256_file
from .manifest import MANIFEST_NAME, Segment
from .onnx_weights import inline_weights
from .parts import assemble, is_manifest_blob
from .store import Store

log = logging.getLogger(__name__)
TOUCH_EVERY_S = 60.0  # last-used times are kept to this precision


class UnpackedBundles:
    """Bundles by digest, opened once per process and verified when they were not unpacked by this process."""

    def __init__(self, store: Store, root: Path) -> None:
        self.store = store
        self.root = Path(root)
        self._open: Dict[str, Bundle] = {}
        self._touched: Dict[str, float] = {}  # digest -> monotonic time of its last touch
        self._lock = threading.Lock()
        self.trust: Optional[Any] = None  # device_agent/trust.py: with a trust root, only verified bundles open

    def get(self, digest: str) -> Bundle:
        with self._lock:
            bundle = self._open.get(digest)
        if bundle is not None and self.store.path_of(digest) is not None:
            self._touch(digest)
            return bundle
        path = self.store.path_of(digest)
        if path is None:
            raise NotFound(f"bundle {digest} is not on this agent; upload it first (deploy push)")
        if self.trust is not None:
            self.trust.require(digest)
        self._touch(digest)
        dest = self.root / digest.split(":", 1)[-1]
        if (dest / MANIFEST_NAME).is_file() and not self._still_sound(dest):
            shutil.rmtree(dest, ignore_errors=True)
        if not (dest / MANIFEST_NAME).is_file():
            self._unpack(digest, path, dest)
        bundle = Bundle.open(dest)
        with self._lock:
            self._open[digest] = bundle
        return bundle

    def _touch(self, digest: str) -> None:
        """Used now, for least-recently-used store pruning; at most once a minute per bundle, so a stream of Run
        calls does not write the file's metadata to flash on every call."""
        now = time.monotonic()
        with self._lock:
            if now - self._touched.get(digest, -TOUCH_EVERY_S) < TOUCH_EVERY_S:
                return
            self._touched[digest] = now
        self.store.touch(digest)

    def segment_bytes(self, digest: str, bundle: Bundle, seg: Segment) -> bytes:
        """The segment's ONNX, checked against its digest; a changed copy is dropped (DataLoss: build again)."""
        data = bundle.segment_path(seg.id).read_bytes()
        got = sha256_bytes(data)
        if got != seg.digest:
            self.forget(digest)
            raise DataLoss(f"segment {seg.id} of bundle {digest[:19]}... changed on this device's disk since it was "
                           f"unpacked (sha256 {got[:19]}..., the manifest says {seg.digest[:19]}...); the unpacked "
                           "copy was removed: build again (deploy push does it once by itself)")
        return data

    def inline_weights(self, digest: str, bundle: Bundle, seg: Segment, graph: bytes) -> bytes:
        """The segment with the weight files it names inline (onnx_weights.py); a changed file drops the copy."""
        try:
            return inline_weights(graph, bundle.segment_path(seg.id).parent)
        except DataLoss as exc:
            self.forget(digest)
            raise DataLoss(f"segment {seg.id} of bundle {digest[:19]}...: {exc.args[0]}; the unpacked copy was "
                           "removed: build again (deploy push does it once by itself)") from None

    def forget(self, digest: str) -> None:
        """Drop the open bundle and its unpacked copy; the next `get` unpacks the stored archive again."""
        with self._lock:
            self._open.pop(digest, None)
            self._touched.pop(digest, None)
        shutil.rmtree(self.root / digest.split(":", 1)[-1], ignore_errors=True)

    def _still_sound(self, dest: Path) -> bool:
        try:
            Bundle.open(dest).verify()
            return True
        except (DeployError, OSError, ValueError) as exc:
            log.warning("unpacked bundle %s no longer matches its manifest (%s); unpacking it again", dest.name, exc)
            return False

    def _unpack(self, digest: str, archive: Path, dest: Path) -> None:
        got = sha256_file(archive)
        if got != digest:
            self.store.remove(digest)
            raise DataLoss(f"the stored bundle {digest[:19]}... changed on this device's disk (its sha256 is now "
                           f"{got[:19]}...); it was removed from the store: upload it again (deploy push does it "
                           "once by itself)")
        if is_manifest_blob(archive):  # a bundle that came by parts: linked from the store, each part checked
            assemble(self.store, digest, dest)
            return
        # atomic: complete and verified, or absent; files checked against the manifest here unless the trust check
        # already did so for this very archive (its digest was checked just above)
        extract_archive(archive, dest, verify_files=self.trust is None or not self.trust.verified(digest))
