"""The engine-cache and timing-cache RPCs: ListEngines, FetchEngine, PutEngine, Prune, TimingCacheFetch/Put.

They move whole entries between agents, registries and the host; what arrives is checked by
`incoming_engine.check_incoming` before a byte is stored. Pruned engines are also dropped from the loaded ones.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, Iterator

from protos import agent_pb2

from .cache import CacheEntry, EngineCache, canonical_json, device_class
from .errors import InvalidInput, NotFound
from .fileio import sha256_bytes
from .incoming_engine import EngineSource, check_incoming
from .timing_cache import TimingCacheInfo, TimingCaches

CHUNK = 1024 * 1024
PUT_SOURCE = EngineSource("engine entry", "attributes['parts']", "; export it with FetchEngine")


def entry_pb(e: CacheEntry) -> agent_pb2.EngineEntry:
    pb = agent_pb2.EngineEntry(key=e.key, segment_digest=e.segment_digest, backend=e.parts.get("backend", ""),
                               backend_version=e.parts.get("backend_version", ""), size=e.size,
                               digest=e.digest, created=e.created, last_used=e.last_used,
                               device_class=e.device_class)
    for k in ("precision", "workspace", "gpu", "cc", "l4t", "arch"):
        pb.attributes[k] = str(e.parts.get(k, ""))
    if e.parts.get("calibration"):
        pb.attributes["calibration"] = str(e.parts["calibration"])
    pb.attributes["profiles"] = json.dumps(e.parts.get("profiles", []), sort_keys=True)
    pb.attributes["parts"] = canonical_json(e.parts).decode()
    from .engine_seal import RECORD

    if (e.path / RECORD).is_file():  # the builder's signature travels with the engine (engine_seal.py)
        pb.builder_record = (e.path / RECORD).read_bytes()
    return pb


def timing_info_pb(t: TimingCacheInfo) -> agent_pb2.TimingCacheInfo:
    pb = agent_pb2.TimingCacheInfo(device_class=t.device_class, class_digest=t.class_digest, size=t.size,
                                   digest=t.digest, updated=t.updated)
    pb.facts.update(t.facts)
    return pb


class CacheRPCs:
    """The cache calls of one agent; `device_parts(backend)` gives its device class, `forget(key)` unloads."""

    def __init__(self, cache: EngineCache, timing: TimingCaches, device_parts: Callable[[str], Dict[str, str]],
                 forget: Callable[[str], None]) -> None:
        self.cache = cache
        self.timing = timing
        self.device_parts = device_parts
        self.forget = forget

    def ListEngines(self, request: agent_pb2.ListEnginesRequest, context: Any) -> agent_pb2.ListEnginesReply:
        entries = self.cache.list(request.segment_digest)
        reply = agent_pb2.ListEnginesReply(total_bytes=self.cache.total_bytes(), limit_bytes=self.cache.max_bytes)
        reply.engines.extend(entry_pb(e) for e in entries)
        reply.timing_caches.extend(timing_info_pb(t) for t in self.timing.list())
        return reply

    def FetchEngine(self, request: agent_pb2.FetchEngineRequest, context: Any) -> Iterator[agent_pb2.EngineChunk]:
        found = self.cache.read(request.key)
        if found is None:
            raise NotFound(f"no valid engine with key {request.key!r} here; list them with ListEngines")
        entry, plan = found
        yield agent_pb2.EngineChunk(entry=entry_pb(entry))
        for off in range(0, len(plan), CHUNK):
            yield agent_pb2.EngineChunk(chunk=plan[off:off + CHUNK])

    def PutEngine(self, request_iterator: Iterator[agent_pb2.EngineChunk], context: Any) -> agent_pb2.PutEngineReply:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "entry":
            raise InvalidInput("PutEngine must start with the engine's entry (as FetchEngine sends it)")
        e = first.entry
        incoming = check_incoming(e.key, e.attributes.get("parts", ""), e.size, e.digest, self.cache,
                                  self.device_parts, PUT_SOURCE)
        record = bytes(e.builder_record)
        if self.cache.seal is not None:  # with a trust root: signed by a fleet agent, before a byte is read
            self.cache.seal.check_foreign(record, incoming.key, incoming.digest, incoming.size)

        def chunks() -> Iterator[bytes]:
            for msg in request_iterator:
                if msg.WhichOneof("msg") != "chunk" or not msg.chunk:  # empty chunks: an unbounded count
                    raise InvalidInput("only non-empty chunk messages may follow the engine entry")
                yield msg.chunk

        entry, present = self.cache.put_external_stream(incoming.key, incoming.parts, chunks(), incoming.size,
                                                        incoming.digest, incoming.expected,
                                                        record if self.cache.seal is not None else None)
        return agent_pb2.PutEngineReply(key=entry.key, already_present=present,
                                        bytes_received=0 if present else e.size)

    def Prune(self, request: agent_pb2.PruneRequest, context: Any) -> agent_pb2.PruneReply:
        max_bytes = request.max_bytes if request.HasField("max_bytes") else None
        if max_bytes is None and not request.keys and not request.all:
            raise InvalidInput("say what to prune: max_bytes, keys, or all")
        removed, freed = self.cache.prune(max_bytes=max_bytes, keys=list(request.keys), all=request.all)
        for k in removed:
            self.forget(k)
        asked = set(request.keys) if request.keys else {e.key for e in self.cache.list()}
        return agent_pb2.PruneReply(removed=removed, freed_bytes=freed, total_bytes=self.cache.total_bytes(),
                                    kept=sorted(asked & self.cache.pinned()))

    def TimingCacheFetch(self, request: agent_pb2.TimingCacheFetchRequest,
                         context: Any) -> Iterator[agent_pb2.TimingCacheChunk]:
        facts = self.device_parts(request.backend or "tensorrt")
        info = self.timing.info(facts)
        if info is None:
            raise NotFound(f"no timing cache for this agent's class {device_class(facts)}; a TensorRT build "
                           "writes one (or put one with TimingCachePut)")
        data = info.path.read_bytes()
        info = TimingCacheInfo(info.facts, len(data), sha256_bytes(data), info.updated, info.path)
        yield agent_pb2.TimingCacheChunk(info=timing_info_pb(info))
        for off in range(0, len(data), CHUNK):
            yield agent_pb2.TimingCacheChunk(chunk=data[off:off + CHUNK])

    def TimingCachePut(self, request_iterator: Iterator[agent_pb2.TimingCacheChunk],
                       context: Any) -> agent_pb2.TimingCachePutReply:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "info":
            raise InvalidInput("TimingCachePut must start with the cache's info (as TimingCacheFetch sends it)")
        facts = dict(first.info.facts)
        mine = self.device_parts(facts.get("backend", "") or "tensorrt")

        def chunks() -> Iterator[bytes]:
            for msg in request_iterator:
                if msg.WhichOneof("msg") != "chunk" or not msg.chunk:
                    raise InvalidInput("only non-empty chunk messages may follow the timing cache's info")
                yield msg.chunk

        info, present = self.timing.put(facts, mine, chunks(), first.info.size, first.info.digest)
        return agent_pb2.TimingCachePutReply(digest=info.digest, already_present=present,
                                             bytes_received=0 if present else info.size)
