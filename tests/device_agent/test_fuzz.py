"""Hostile input against one real agent process: every RPC with malformed, oversized and random messages, and
malicious bundle archives. The agent must answer each call with a status code, never die, and never write outside
its data directory (store, unpacked bundles, engine cache).
"""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_agent.ready import wait_ready
from protos import agent_pb2, agent_pb2_grpc
from tests.device_agent.onnx_models import conv_net, single_segment_bundle

REPO = Path(__file__).resolve().parents[2]
MARK = "fuzz-escape-7f3a"  # every path a malicious archive tries to plant carries this mark
TIMEOUT_S = 20.0
# A status code is an answer; these mean the agent did not answer (died, hung) or failed unexpectedly.
NOT_ANSWERS = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN}
SERVICE = "/deploy.v1.DeviceAgent/"
METHODS = {  # name -> (request streaming, response streaming)
    "GetInfo": (False, False), "Upload": (True, False), "QueryUpload": (False, False), "Build": (False, True),
    "Run": (False, False), "Benchmark": (False, True), "ListEngines": (False, False),
    "FetchEngine": (False, True), "PutEngine": (True, False), "Prune": (False, False), "Pull": (False, False),
}
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                database=None)


@dataclass
class FuzzAgent:
    proc: subprocess.Popen
    address: str
    sandbox: Path      # HOME, TMPDIR and cwd of the agent
    data: Path         # the only place it may write
    log: Path
    channel: grpc.Channel
    stub: agent_pb2_grpc.DeviceAgentStub
    digests: List[str]  # bundles it holds (one good, the rest malicious)
    calls: int = 0

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


def _start(sandbox: Path) -> tuple:
    data = sandbox / "data"
    env = dict(os.environ, HOME=str(sandbox / "home"), TMPDIR=str(sandbox / "tmp"),
               XDG_DATA_HOME=str(sandbox / "home" / "xdg"), PYTHONPATH=str(REPO))
    for d in ("home", "tmp"):
        (sandbox / d).mkdir(parents=True, exist_ok=True)
    log = sandbox.parent / "agent.log"
    cmd = [sys.executable, "-m", "device_agent", "--listen", "127.0.0.1:0", "--store", str(data / "store"),
           "--backend", "onnxruntime", "--max-upload-bytes", str(64 * 1024 * 1024)]
    with open(log, "ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=str(sandbox), env=env)
    address = wait_ready(proc, 60)
    if address is not None:
        return proc, address, data, log
    proc.kill()
    raise RuntimeError(f"agent did not start: {log.read_text()[-2000:]}")


def _upload(stub: Any, blob: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    msgs = [agent_pb2.UploadRequest(header=agent_pb2.UploadHeader(digest=digest, size=len(blob)))]
    msgs += [agent_pb2.UploadRequest(chunk=blob[i:i + 65536]) for i in range(0, len(blob), 65536)]
    stub.Upload(iter(msgs), timeout=TIMEOUT_S)
    return digest


# ---------------------------------------------------------------- malicious archives

def _tar(members: list) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, data, link in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _pax_path_override(good: bytes) -> bytes:
    """A pax header whose `path` record renames the next member to an escaping path."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("segments/ok.onnx")
        info.pax_headers = {"path": f"../../{MARK}-pax"}
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    return good[:-1024] + buf.getvalue() if good else buf.getvalue()


EVIL_NAMES = [f"../{MARK}-dotdot", f"/tmp/{MARK}-abs", f"segments/../../{MARK}-mid", f"./../{MARK}-dot",
              f"segments//{MARK}", f"..\\{MARK}-backslash", f"{MARK}-nul\x00x", "a" * 600, "manifest.json/x",
              f"segments/{MARK}-link", "", ".", "..", "/"]
KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE,
         tarfile.FIFOTYPE]
member = st.tuples(st.one_of(st.sampled_from(EVIL_NAMES), st.sampled_from(["manifest.json", "segments",
                                                                           "segments/trt_0.onnx", "reference"]),
                             st.text(min_size=1, max_size=40)),
                   st.sampled_from(KINDS), st.binary(max_size=64),
                   st.sampled_from(["", f"/tmp/{MARK}-target", f"../{MARK}", "manifest.json", "/etc/passwd"]))


# ---------------------------------------------------------------- the agent

@pytest.fixture(scope="module")
def fuzz_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzAgent]:
    root = tmp_path_factory.mktemp("fuzz")
    good_archive, _feeds, _want = single_segment_bundle(root / "src", conv_net(seed=5), "fuzz")
    sandbox = root / "sandbox"
    proc, address, data, log = _start(sandbox)
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 80 * 1024 * 1024)])
    stub = agent_pb2_grpc.DeviceAgentStub(channel)
    agent = FuzzAgent(proc, address, sandbox, data, log, channel, stub, [])
    agent.digests.append(_upload(stub, Path(good_archive).read_bytes()))
    evil = [
        _tar([(f"../{MARK}-a", tarfile.REGTYPE, b"x", "")]),
        _tar([("segments", tarfile.SYMTYPE, b"", "/tmp"), (f"segments/{MARK}-b", tarfile.REGTYPE, b"x", "")]),
        _tar([("segments", tarfile.REGTYPE, b"x", ""), ("segments/trt_0.onnx", tarfile.REGTYPE, b"x", "")]),
        _tar([("manifest.json", tarfile.LNKTYPE, b"", "/etc/passwd")]),
        _tar([("dev", tarfile.CHRTYPE, b"", "")]),
        _pax_path_override(b""),
        b"\x1f\x8b\x08" + os.urandom(200),  # gzip-looking garbage
        os.urandom(3000),
    ]
    agent.digests += [_upload(stub, blob) for blob in evil]
    yield agent
    channel.close()
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _answered(agent: FuzzAgent, call: Any, garbage: bool = False) -> grpc.StatusCode:
    """Run CALL; its outcome must be a reply or a status code, and the agent must still be alive.

    INTERNAL is only accepted where gRPC itself could not parse the bytes (GARBAGE); from our handlers it would mean
    an unhandled exception. Set FUZZ_CODES=FILE to log every code and message there.
    """
    agent.calls += 1
    code = grpc.StatusCode.OK
    details = ""
    try:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)) and not hasattr(result, "ByteSize"):
            for _ in result:
                pass
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()
        details = exc.details() or ""
        assert code not in NOT_ANSWERS, f"{code}: {details}\nagent log:\n{agent.log_tail()}"
        if code == grpc.StatusCode.INTERNAL:
            assert garbage and details == "Exception deserializing request!", f"INTERNAL: {details}"
        assert len(details) <= 2100, f"status details of {len(details)} characters"
    if os.environ.get("FUZZ_CODES"):
        with open(os.environ["FUZZ_CODES"], "a") as f:
            f.write(f"{code.name}\t{details[:300]!r}\n")
    assert agent.proc.poll() is None, f"agent died:\n{agent.log_tail()}"
    return code


def _raw(agent: FuzzAgent, method: str) -> Any:
    req_stream, resp_stream = METHODS[method]
    path = SERVICE + method
    ident = dict(request_serializer=None, response_deserializer=None)
    if req_stream and resp_stream:
        return agent.channel.stream_stream(path, **ident)
    if req_stream:
        return agent.channel.stream_unary(path, **ident)
    if resp_stream:
        return agent.channel.unary_stream(path, **ident)
    return agent.channel.unary_unary(path, **ident)


texts = st.one_of(st.text(max_size=80), st.sampled_from(EVIL_NAMES), st.just("k" * 100_000),
                  st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True))
u64 = st.one_of(st.integers(0, 64), st.integers(0, 2 ** 64 - 1), st.sampled_from([2 ** 63, 2 ** 64 - 1, 2 ** 32]))
u32 = st.one_of(st.integers(0, 16), st.integers(0, 2 ** 32 - 1))


@st.composite
def digests(draw: Any, agent: FuzzAgent) -> str:
    return draw(st.one_of(st.sampled_from(agent.digests), texts))


def options() -> Any:
    return st.builds(
        agent_pb2.BuildOptions,
        backend=st.one_of(st.just(""), st.just("onnxruntime"), st.just("auto"), st.text(max_size=20)),
        fp16=st.booleans(), max_workspace_bytes=u64, multi_engine_mode=u32, batch=u32,
        force_rebuild=st.booleans())


tensors = st.builds(
    agent_pb2.Tensor, name=st.one_of(st.just("x"), st.text(max_size=20), st.just("n" * 100_000)),
    dtype=st.one_of(st.sampled_from(["float32", "float16", "int64", "bool", "object", "V8", "O", "<f4", "S10",
                                     "complex64", "float32\x00"]), st.text(max_size=10)),
    shape=st.lists(st.one_of(st.integers(-3, 20), st.integers(-2 ** 63, 2 ** 63 - 1)), max_size=9),
    data=st.one_of(st.binary(max_size=4096), st.just(b"\0" * (1 * 3 * 16 * 16 * 4))))


# ---------------------------------------------------------------- the tests

@settings(FUZZ, max_examples=600)
@given(method=st.sampled_from(sorted(METHODS)), payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_garbage_bytes_to_every_rpc_get_a_status_code(fuzz_agent: FuzzAgent, method: str, payloads: list) -> None:
    call = _raw(fuzz_agent, method)
    req_stream, _ = METHODS[method]
    arg = iter(payloads) if req_stream else payloads[0]
    _answered(fuzz_agent, lambda: call(arg, timeout=TIMEOUT_S), garbage=True)


@settings(FUZZ, max_examples=800)
@given(data=st.data())
def test_upload_and_query_with_malformed_headers_and_chunks_get_a_status_code(fuzz_agent: FuzzAgent, data) -> None:
    a = fuzz_agent
    if data.draw(st.booleans()):
        _answered(a, lambda: a.stub.QueryUpload(agent_pb2.QueryUploadRequest(digest=data.draw(texts)),
                                                timeout=TIMEOUT_S))
        return
    header = agent_pb2.UploadHeader(digest=data.draw(digests(a)), size=data.draw(u64), offset=data.draw(u64),
                                    kind=data.draw(st.text(max_size=20)))
    chunks = data.draw(st.lists(st.one_of(st.binary(max_size=2048), st.just(b"z" * (5 * 1024 * 1024))),
                                max_size=6))
    msgs = [agent_pb2.UploadRequest(chunk=c) for c in chunks]
    position = data.draw(st.integers(0, len(msgs)))
    if data.draw(st.booleans()):
        msgs.insert(position, agent_pb2.UploadRequest(header=header))
    if data.draw(st.booleans()):
        msgs.insert(0, agent_pb2.UploadRequest(header=header))
    _answered(a, lambda: a.stub.Upload(iter(msgs), timeout=TIMEOUT_S))


@settings(FUZZ, max_examples=500)
@given(data=st.data())
def test_build_run_benchmark_with_random_options_and_tensors_get_a_status_code(fuzz_agent: FuzzAgent, data) -> None:
    a = fuzz_agent
    digest, opts = data.draw(digests(a)), data.draw(options())
    which = data.draw(st.sampled_from(["build", "run", "benchmark"]))
    if which == "build":
        _answered(a, lambda: a.stub.Build(agent_pb2.BuildRequest(bundle_digest=digest, options=opts),
                                          timeout=TIMEOUT_S))
    elif which == "run":
        req = agent_pb2.RunRequest(bundle_digest=digest, options=opts, inputs=data.draw(st.lists(tensors, max_size=4)),
                                   verify=data.draw(st.booleans()))
        _answered(a, lambda: a.stub.Run(req, timeout=TIMEOUT_S))
    else:
        small = st.integers(0, 20)
        req = agent_pb2.BenchmarkRequest(
            bundle_digest=digest, options=opts,
            warmup=data.draw(st.one_of(small, st.integers(10 ** 7, 2 ** 32 - 1))),
            iterations=data.draw(st.one_of(small, st.integers(10 ** 8, 2 ** 32 - 1))),
            duration_s=data.draw(st.one_of(st.floats(0, 0.05), st.sampled_from([float("nan"), float("inf"), -1.0,
                                                                                  1e300]))),
            batch=data.draw(st.one_of(st.integers(0, 4), u32)))
        _answered(a, lambda: a.stub.Benchmark(req, timeout=TIMEOUT_S))


@settings(FUZZ, max_examples=600)
@given(data=st.data())
def test_engine_cache_rpcs_with_hostile_keys_and_entries_get_a_status_code(fuzz_agent: FuzzAgent, data) -> None:
    a = fuzz_agent
    which = data.draw(st.sampled_from(["list", "fetch", "put", "prune"]))
    if which == "list":
        _answered(a, lambda: a.stub.ListEngines(agent_pb2.ListEnginesRequest(segment_digest=data.draw(texts)),
                                                timeout=TIMEOUT_S))
    elif which == "fetch":
        _answered(a, lambda: a.stub.FetchEngine(agent_pb2.FetchEngineRequest(key=data.draw(texts)),
                                                timeout=TIMEOUT_S))
    elif which == "put":
        parts = data.draw(st.one_of(st.just('{"backend": "onnxruntime"}'), st.text(max_size=50),
                                    st.just('{"backend": "../../x", "segment": "' + MARK + '"}'), st.just("[]")))
        entry = agent_pb2.EngineEntry(key=data.draw(texts), segment_digest=data.draw(texts),
                                      backend=data.draw(st.text(max_size=20)), size=data.draw(u64),
                                      digest=data.draw(texts), attributes={"parts": parts})
        chunks = [agent_pb2.EngineChunk(chunk=c) for c in data.draw(st.lists(st.binary(max_size=512), max_size=4))]
        msgs = ([agent_pb2.EngineChunk(entry=entry)] if data.draw(st.booleans()) else []) + chunks
        _answered(a, lambda: a.stub.PutEngine(iter(msgs), timeout=TIMEOUT_S))
    else:
        req = agent_pb2.PruneRequest(keys=data.draw(st.lists(texts, max_size=3)), all=data.draw(st.booleans()))
        if data.draw(st.booleans()):
            req.max_bytes = data.draw(u64)
        _answered(a, lambda: a.stub.Prune(req, timeout=TIMEOUT_S))


@settings(FUZZ, max_examples=400)
@given(members=st.lists(member, min_size=1, max_size=5), with_manifest=st.booleans())
def test_malicious_archives_are_refused_with_a_status_code(fuzz_agent: FuzzAgent, members: list,
                                                           with_manifest: bool) -> None:
    a = fuzz_agent
    if with_manifest:
        members = [("manifest.json", tarfile.REGTYPE, b'{"schema_version": 1}', "")] + members
    try:
        blob = _tar(members)
    except (ValueError, tarfile.TarError):
        return  # tarfile itself cannot write this member (e.g. a name it cannot encode)
    digest = _upload(a.stub, blob)
    code = _answered(a, lambda: a.stub.Build(agent_pb2.BuildRequest(bundle_digest=digest), timeout=TIMEOUT_S))
    assert code != grpc.StatusCode.OK
    run = _answered(a, lambda: a.stub.Run(agent_pb2.RunRequest(bundle_digest=digest, verify=True), timeout=TIMEOUT_S))
    assert run != grpc.StatusCode.OK


def test_empty_chunks_are_refused_so_the_chunk_count_is_bounded_by_the_declared_size(fuzz_agent: FuzzAgent) -> None:
    a = fuzz_agent
    blob = b"0123456789"
    header = agent_pb2.UploadHeader(digest="sha256:" + hashlib.sha256(blob).hexdigest(), size=len(blob))
    msgs = [agent_pb2.UploadRequest(header=header)] + [agent_pb2.UploadRequest(chunk=b"")] * 10_000
    with pytest.raises(grpc.RpcError) as err:
        a.stub.Upload(iter(msgs), timeout=TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty upload chunk" in err.value.details()
    # A real engine's entry (right class and key), so the stream gets past the entry check to its chunks.
    for _ in a.stub.Build(agent_pb2.BuildRequest(bundle_digest=a.digests[0]), timeout=TIMEOUT_S):
        pass
    entry = a.stub.ListEngines(agent_pb2.ListEnginesRequest(), timeout=TIMEOUT_S).engines[0]
    msgs = [agent_pb2.EngineChunk(entry=entry)] + [agent_pb2.EngineChunk(chunk=b"")] * 10_000
    with pytest.raises(grpc.RpcError) as err:
        a.stub.PutEngine(iter(msgs), timeout=TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "non-empty chunk" in err.value.details()


def test_status_messages_stay_short_when_they_quote_huge_input(fuzz_agent: FuzzAgent) -> None:
    a = fuzz_agent
    name = "n" * 100_000
    t = agent_pb2.Tensor(name=name, dtype="float32", shape=[1, 3, 16, 16], data=b"\0" * (3 * 16 * 16 * 4))
    with pytest.raises(grpc.RpcError) as err:
        a.stub.Run(agent_pb2.RunRequest(bundle_digest=a.digests[0], inputs=[t, t]), timeout=TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nnnn" in err.value.details() and len(err.value.details()) <= 2100


def test_zz_agent_survived_wrote_only_inside_its_data_dir_and_still_serves(fuzz_agent: FuzzAgent) -> None:
    """Runs last in this module: the summary over all the cases above."""
    a = fuzz_agent
    for digest in a.digests[1:]:  # the fixed malicious archives, through both entry points that unpack bundles
        assert _answered(a, lambda: a.stub.Build(agent_pb2.BuildRequest(bundle_digest=digest),
                                                 timeout=TIMEOUT_S)) != grpc.StatusCode.OK
    assert a.proc.poll() is None
    outside = [p for p in a.sandbox.rglob("*")
               if not p.is_dir() and a.data not in p.parents and a.sandbox / "tmp" not in p.parents]
    assert outside == []
    # onnxruntime (not the agent) drops a 50-byte session-id file `.ses` in TMPDIR; nothing else may be there
    leftovers = [p for p in (a.sandbox / "tmp").rglob("*") if not p.is_dir() and p.name != ".ses"]
    assert leftovers == []
    planted = [p for p in list(a.sandbox.parent.rglob(f"*{MARK}*")) + list(Path("/tmp").glob(f"{MARK}*"))]
    assert planted == []
    info = a.stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=TIMEOUT_S)
    assert info.store_dir == str(a.data / "store")
    # the good bundle still builds and runs after everything above
    events = list(a.stub.Build(agent_pb2.BuildRequest(bundle_digest=a.digests[0]), timeout=60))
    assert events[-1].summary.failed == 0
    assert a.calls > 3000
