"""The agent's `Pull`: a bundle and a class's engines from the registry, every digest checked as the bytes stream.

The bundle goes through `Store.receive` (partial file, sha256 while writing, fsync, rename), so a pull cut off by a
registry restart resumes at the committed byte with a Range request, and a tampered blob is DATA_LOSS with nothing
stored. Engines are checked by `incoming_engine.check_incoming`, the function `PutEngine` uses too (size bound, key
parts, device class, key), before a byte is fetched, then stored by `EngineCache.put_external_stream` (size, digest)
before anything is visible.
"""
from __future__ import annotations

import http.client
import json
import logging
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .errors import DataLoss, DeployError, InvalidInput, NotFound, PreconditionFailed, Unavailable
from .incoming_engine import EngineSource, IncomingEngine, check_incoming
from .registry import (ANN_BUILDER, ANN_KEY, ANN_PARTS, ANN_TIMING_CLASS_DIGEST, ANN_TIMING_FACTS, BUNDLE_LAYER,
                       BUNDLE_MANIFEST_LAYER, BUNDLE_PART_LAYER, ENGINE_LAYER, TIMING_CACHE_LAYER, Credentials,
                       RegistryClient, RegistryRef, check_digest)

log = logging.getLogger(__name__)


@dataclass
class PullResult:
    bundle_digest: str = ""
    bundle_present: bool = False
    engine_keys: List[str] = field(default_factory=list)
    engines_pulled: int = 0
    engines_present: int = 0
    bytes_pulled: int = 0
    retries: int = 0
    timing_cache_pulled: bool = False
    timing_cache_digest: str = ""   # the artifact's timing cache, now this agent's for its class
    timing_cache_refused: str = ""  # why it was not stored (another class)


def client_from_settings(settings: Any) -> Optional[RegistryClient]:
    """The agent's registry client, or None when it was started without --registry."""
    if not getattr(settings, "registry", ""):
        return None
    creds = Credentials.from_files(settings.registry_token_file, settings.registry_user or "",
                                   settings.registry_password_file, settings.registry_ca)
    return RegistryClient(RegistryRef.parse(settings.registry), creds)


class Puller:
    """Pulls into one agent's store and engine cache."""

    def __init__(self, client: RegistryClient, store: Any, engines: Any) -> None:
        self.client = client
        self.store = store
        self.engines = engines  # EngineService: .cache and .device_parts(backend)

    def pull(self, bundle_digest: str, engines_reference: str) -> PullResult:
        if not bundle_digest and not engines_reference:
            raise InvalidInput("say what to pull: bundle_digest, engines_reference or both")
        res = PullResult()
        if bundle_digest:
            self._bundle(check_digest(bundle_digest), res)
        if engines_reference:
            self._engines(engines_reference, res)
        return res

    def _bundle(self, digest: str, res: PullResult) -> None:
        """The bundle's archive layer, or (a bundle by parts) each part layer this store lacks, then its manifest."""
        res.bundle_digest = digest
        trust = getattr(getattr(self.engines, "unpacked", None), "trust", None)  # device_agent/trust.py
        state = self.store.query(digest)
        if state.complete and (trust is None or trust.verified(digest)):
            res.bundle_present = True
            return
        layers, subject = self._bundle_layers(digest)
        verify = None
        if trust is not None:  # the signature artifact referring to the bundle's, verified before it is stored
            from .registry_trust import signing_metadata

            wire = signing_metadata(self.client, subject)
            verify = lambda path: trust.verify_bundle(digest, path, wire, self.store)  # noqa: E731
            if not wire:  # unsigned: refused before a byte of the bundle (or of any part) is fetched
                trust.verify_bundle(digest, Path(), wire)
        for layer_digest, size in layers:  # parts first (inert data, never parsed), the manifest or archive last
            if layer_digest != digest and self.store.query(layer_digest).complete:
                continue
            if layer_digest == digest and state.complete:  # stored before, unverified: verified now, in place
                verify(self.store.path_of(digest))  # type: ignore[misc]
                res.bundle_present = True
                return
            self._blob(layer_digest, size, res, verify if layer_digest == digest else None)

    def _blob(self, digest: str, size: int, res: PullResult, verify: Optional[Callable[[Path], Any]] = None) -> None:
        """One blob into the store, resumed at the committed byte after a cut, its digest checked (and for the
        bundle's own blob, its signature: `verify` sees it before the store publishes it)."""
        attempts = self.client.retry.attempts
        for attempt in range(1, attempts + 1):
            offset = self.store.query(digest).committed_offset
            try:
                start, chunks = self.client.retried(f"GET blob {digest}", lambda: self.client.blob_chunks(
                    digest, offset))
                got = self.store.receive(digest, size, start, chunks, verify)
                res.bytes_pulled += got.bytes_received
                return
            except (OSError, http.client.HTTPException, Unavailable) as exc:  # connection lost mid-blob: resume from what was committed
                if attempt == attempts:
                    raise Unavailable(f"pull of bundle {digest} failed {attempts} times: {exc}") from None
                res.retries += 1
                _sleep(attempt)
            except InvalidInput as exc:
                if "ended at" not in str(exc) or attempt == attempts:  # a cut-off body: resume
                    raise
                res.retries += 1
                _sleep(attempt)

    def _bundle_layers(self, digest: str) -> Tuple[List[Tuple[str, int]], str]:
        """(digest, size) to fetch for the bundle, from its artifact manifest (`bundle-<hex>`): its one archive
        layer, or its part layers and then its manifest layer (whose digest is the bundle's); and that artifact
        manifest's digest (what signatures refer to)."""
        from .parts import MAX_FIND_DIGESTS
        from .registry import bundle_tag

        doc, manifest_digest = self.client.manifest(bundle_tag(digest))
        layers = doc.get("layers", [])
        if not isinstance(layers, list) or len(layers) > MAX_FIND_DIGESTS:
            raise InvalidInput(f"artifact {bundle_tag(digest)} has no list of at most {MAX_FIND_DIGESTS} layers")
        for layer in layers:
            if layer.get("mediaType") in (BUNDLE_LAYER, BUNDLE_MANIFEST_LAYER) and layer.get("digest") == digest:
                parts = [(check_digest(str(p.get("digest", ""))), int(p.get("size", 0))) for p in layers
                         if layer.get("mediaType") == BUNDLE_MANIFEST_LAYER
                         and p.get("mediaType") == BUNDLE_PART_LAYER]
                return parts + [(digest, int(layer.get("size", 0)))], manifest_digest  # the manifest last
        raise InvalidInput(f"artifact {bundle_tag(digest)} does not hold bundle {digest} as a {BUNDLE_LAYER} or "
                           f"{BUNDLE_MANIFEST_LAYER} layer")

    def _engines(self, reference: str, res: PullResult) -> None:
        doc, _ = self.client.manifest(reference)
        layers = [layer for layer in doc.get("layers", []) if layer.get("mediaType") == ENGINE_LAYER]
        if not layers:
            raise InvalidInput(f"artifact {reference} holds no {ENGINE_LAYER} layer")
        cache = self.engines.cache
        checked: List[IncomingEngine] = []
        records: Dict[str, bytes] = {}
        for layer in layers:  # every check before any byte is fetched
            ann = layer.get("annotations") or {}
            digest = check_digest(str(layer.get("digest", "")))
            checked.append(check_incoming(str(ann.get(ANN_KEY, "")), str(ann.get(ANN_PARTS, "")),
                                          int(layer.get("size", 0)), digest, cache, self.engines.device_parts,
                                          EngineSource(f"engine layer {digest}", ANN_PARTS)))
            if cache.seal is not None:  # with a trust root: its builder's signature (device_agent/engine_seal.py)
                e = checked[-1]
                records[e.key] = str(ann.get(ANN_BUILDER, "")).encode()
                cache.seal.check_foreign(records[e.key], e.key, e.digest, e.size)
        timing = self._timing_checked(doc, res)  # its class too, before any byte
        for engine in checked:
            res.engine_keys.append(engine.key)
            if cache.read(engine.key) is not None:
                res.engines_present += 1
                continue
            self._engine(engine, res, records.get(engine.key))
        if timing is not None:
            self._timing(*timing, res)

    def _timing_checked(self, doc: Dict[str, Any], res: PullResult) -> Optional[tuple]:
        """(facts, mine, digest, size) of the artifact's timing-cache layer when this agent may store it, else None.

        Another class's cache is never stored (the same check as TimingCachePut); that is reported in the reply,
        not an error: the engines, checked on their own, are still pulled (as fleet warm's gRPC path does)."""
        layers = [layer for layer in doc.get("layers", []) if layer.get("mediaType") == TIMING_CACHE_LAYER]
        if not layers:
            return None
        if len(layers) > 1:
            raise InvalidInput(f"artifact holds {len(layers)} {TIMING_CACHE_LAYER} layers; one per class at most")
        layer = layers[0]
        from .timing_cache import class_digest, class_facts

        ann = layer.get("annotations") or {}
        digest, size = check_digest(str(layer.get("digest", ""))), int(layer.get("size", 0))
        try:
            facts = json.loads(str(ann.get(ANN_TIMING_FACTS, "")))
        except ValueError:
            facts = None
        if not isinstance(facts, dict) or ann.get(ANN_TIMING_CLASS_DIGEST) != class_digest(class_facts(facts)):
            raise InvalidInput(f"timing-cache layer {digest} lacks its class facts ({ANN_TIMING_FACTS}) or they "
                               f"do not match its {ANN_TIMING_CLASS_DIGEST}")
        facts = class_facts(facts)
        mine = self.engines.device_parts(facts.get("backend", "") or "tensorrt")
        try:
            self.engines.timing.check(facts, mine, size, digest)
        except PreconditionFailed as exc:
            res.timing_cache_refused = str(exc)
            log.warning("registry timing cache %s not stored: %s", digest, exc)
            return None
        return facts, mine, digest, size

    def _timing(self, facts: Dict[str, str], mine: Dict[str, str], digest: str, size: int,
                res: PullResult) -> None:
        """Fetch the class's timing cache into the agent's store (atomic, digest checked) unless it holds it."""
        timing = self.engines.timing
        have = timing.info(facts)
        if have is None or have.digest != digest:
            self._fetch_whole(f"timing cache {digest}", digest, lambda chunks: timing.put(facts, mine, chunks, size,
                                                                                          digest), res)
            res.timing_cache_pulled = True
            res.bytes_pulled += size
        res.timing_cache_digest = digest

    def _engine(self, e: IncomingEngine, res: PullResult, record: Optional[bytes] = None) -> None:
        self._fetch_whole(f"engine {e.key[:16]}...", e.digest,
                          lambda chunks: self.engines.cache.put_external_stream(e.key, e.parts, chunks, e.size,
                                                                                e.digest, e.expected, record), res)
        res.engines_pulled += 1
        res.bytes_pulled += e.size

    def _fetch_whole(self, what: str, digest: str, store: Callable[[Iterator[bytes]], None], res: PullResult) -> None:
        """GET one blob into `store` (which checks size and digest and commits atomically), from the start again when
        the connection is lost or the body is cut off; a wrong digest is refused at once."""
        attempts = self.client.retry.attempts
        for attempt in range(1, attempts + 1):
            try:
                _start, chunks = self.client.retried(f"GET blob {digest}", lambda: self.client.blob_chunks(digest))
                store(chunks)
                return
            except (OSError, http.client.HTTPException, Unavailable) as exc:
                if attempt == attempts:
                    raise Unavailable(f"pull of {what} failed {attempts} times: {exc}") from None
            except DataLoss as exc:
                if "ended at" not in str(exc) or attempt == attempts:
                    raise
            res.retries += 1
            _sleep(attempt)


def prefetch(service: Any, bundle_digest: str, backend: str, keys: List[str]) -> None:
    """Before a build: when a segment's engine is missing, pull this class's engines artifact for the bundle if the
    registry has one. Best effort: a miss, an unreachable registry or a refused blob only means building here."""
    if all(service.cache.check(k) is not None for k in keys):
        return
    from .cache import device_class
    from .registry import RetryPolicy, engines_tag

    client = client_from_settings(service.settings)
    if client is None:
        return
    client.retry = RetryPolicy(attempts=2)
    tag = engines_tag(bundle_digest, device_class(service.device_parts(backend)))
    try:
        Puller(client, service.store, service).pull("", tag)
    except NotFound:
        return
    except DeployError as exc:
        log.warning("registry %s: engines %s not used, building here: %s", client.ref.host, tag, exc)


def _sleep(attempt: int) -> None:
    import time

    time.sleep(min(2.0, 0.2 * 2 ** (attempt - 1)))

