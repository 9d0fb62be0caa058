"""trtexec as an engine backend, for Jetsons whose Python cannot import the system TensorRT bindings.

Builds with ``--onnx ... --saveEngine``, runs with ``--loadEngine --loadInputs --exportOutput`` and
benchmarks with its own timing loop, parsing the performance summary (H2D, GPU compute, D2H).
The flags follow trtexec's documented command line; no trtexec exists in this workplace, so only
the report parser is exercised here (on the documented report layout).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from device_agent.bench import LatencyStats
from device_agent.engines.layers import LayerProfile, LayerTime, finish
from device_agent.engines.base import (Backend, BuildFailedWithMessages, BuildOutput, BuildSpec, Engine,
                                       ProbeResult, ProfileShape, TensorMeta)
from device_agent.errors import BuildFailed, InvalidInput, Unavailable
from device_agent.shape_profiles import pick

SEARCH_PATHS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec")
_VERSION_RE = re.compile(r"TensorRT v(\d+)")
_STAT_RE = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*([0-9.eE+-]+)\s*ms")
_SECTIONS = {"Latency": "latency", "H2D Latency": "h2d", "GPU Compute Time": "gpu_compute",
             "D2H Latency": "d2h", "Enqueue Time": "enqueue", "Host Latency": "latency"}
TIMEOUT_S = 3600.0


def find_trtexec() -> Optional[str]:
    env = os.environ.get("DEPLOY_AGENT_TRTEXEC")
    if env:
        return env if os.access(env, os.X_OK) else None
    found = shutil.which("trtexec")
    if found:
        return found
    for p in SEARCH_PATHS:
        if os.access(p, os.X_OK):
            return p
    return None


def decode_version(number: str) -> str:
    """trtexec prints 8502 for 8.5.2 and 100300 for 10.3.0."""
    n = int(number)
    if n >= 100000:
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"


def parse_version(text: str) -> Optional[str]:
    m = _VERSION_RE.search(text)
    return decode_version(m.group(1)) if m else None


def parse_summary(text: str) -> Dict[str, Dict[str, float]]:
    """{section: {stat: ms}} from trtexec's performance summary; sections: latency, h2d, gpu_compute, d2h."""
    out: Dict[str, Dict[str, float]] = {}
    in_summary = False
    for line in text.splitlines():
        if "Performance summary" in line:
            in_summary = True
            continue
        if not in_summary:
            continue
        body = re.sub(r"^\[[^\]]*\]\s*(\[I\]\s*)?", "", line.strip())
        if ":" not in body:
            continue
        head, rest = body.split(":", 1)
        if head.strip() == "Throughput":
            m = re.search(r"([0-9.eE+-]+)\s*qps", rest)
            if m:
                out.setdefault("throughput", {})["qps"] = float(m.group(1))
            continue
        section = _SECTIONS.get(head.strip())
        if section is None or (section in out and head.strip() == "Host Latency"):
            continue
        stats = {}
        for m in _STAT_RE.finditer(rest):
            if m.group(2) is None:
                key = m.group(1)
            else:
                pct = float(m.group(2))
                key = f"p{int(pct)}" if pct.is_integer() else f"p{pct:g}"
            stats[key] = float(m.group(3))
        if stats:
            out[section] = stats
    return out


def parse_profile(data: object, segment: str = "") -> Tuple[List[LayerTime], int]:
    """(rows, runs) from trtexec's ``--exportProfile`` JSON: a list whose first element is ``{"count": N}`` (the
    profiled runs), then one object per layer with ``name``, ``averageMs`` (per run) and ``percentage``."""
    if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "count" not in data[0]:
        raise BuildFailed("trtexec's exported profile is not a list starting with {\"count\": N}")
    runs = int(data[0]["count"])
    rows = []
    for item in data[1:]:
        if not isinstance(item, dict) or "name" not in item or "averageMs" not in item:
            raise BuildFailed(f"trtexec's exported profile has a layer without name or averageMs: {item!r:.200}")
        rows.append(LayerTime(str(item["name"]), "TensorRT layer", float(item["averageMs"]), runs, segment))
    return rows, runs


def _shape_arg(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def profile_args(profiles: List[List[ProfileShape]], version: Tuple[int, ...]) -> List[str]:
    """``--minShapes/--optShapes/--maxShapes`` per optimization profile; several profiles as ``--profile=K`` groups,
    which trtexec takes from TensorRT 8.6 (older ones build one profile: the bundle needs one there)."""
    if len(profiles) > 1 and version < (8, 6):
        raise InvalidInput(f"trtexec of TensorRT {'.'.join(map(str, version))} builds one optimization profile, "
                           f"this bundle has {len(profiles)}; recompile with one --shape-range or use the tensorrt "
                           "backend")
    args: List[str] = []
    for k, prof in enumerate(profiles):
        if len(profiles) > 1:
            args.append(f"--profile={k}")
        for flag, attr in (("--minShapes", "min"), ("--optShapes", "opt"), ("--maxShapes", "max")):
            args.append(flag + "=" + ",".join(f"{p.name}:{_shape_arg(getattr(p, attr))}" for p in prof))
    return args


class TrtexecEngine(Engine):
    backend = "trtexec"

    def __init__(self, exe: str, plan_path: str, inputs: List[TensorMeta], outputs: List[TensorMeta],
                 workdir: str, profiles: Optional[List[List[ProfileShape]]] = None) -> None:
        super().__init__(inputs, outputs)
        self.exe, self.plan_path, self.workdir = exe, plan_path, workdir
        self.profiles = profiles or []
        self._last: Dict[str, float] = {}

    def _cmd(self, feeds: Dict[str, np.ndarray]) -> List[str]:
        cmd = [self.exe, f"--loadEngine={self.plan_path}"]
        if feeds:
            cmd.append("--shapes=" + ",".join(f"{n}:{_shape_arg(a.shape)}" for n, a in feeds.items()))
        if len(self.profiles) > 1:  # the tightest profile that holds the shapes (the agent checked one does)
            bounds = [{p.name: (p.min, p.max) for p in prof} for prof in self.profiles]
            k = pick(bounds, {n: a.shape for n, a in feeds.items()})
            cmd.append(f"--profile={k or 0}")
        return cmd

    def run_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            loads = []
            for name, arr in feeds.items():
                path = os.path.join(tmp, f"in{len(loads)}.bin")
                arr.tofile(path)
                loads.append(f"{name}:{path}")
            out_json = os.path.join(tmp, "out.json")
            cmd = self._cmd(feeds) + ["--loadInputs=" + ",".join(loads), f"--exportOutput={out_json}",
                                      "--iterations=1", "--warmUp=0", "--duration=0"]
            _run(cmd)
            with open(out_json) as f:
                exported = json.load(f)
        result = {}
        for item in exported:
            meta = next((m for m in self.outputs if m.name == item["name"]), None)
            dtype = meta.dtype if meta else "float32"
            dims = [int(d) for d in str(item["dimensions"]).split("x") if d]
            result[item["name"]] = np.asarray(item["values"], dtype=dtype).reshape(dims)
        return result

    def native_benchmark(self, feeds: Dict[str, np.ndarray], warmup: int, iterations: int,
                         duration_s: float, batch: int) -> Tuple[LatencyStats, Dict[str, float]]:
        """trtexec's own loop: warm-up in ms, iterations or duration, its percentiles and its H2D/D2H split."""
        # trtexec's warm-up is a duration in ms, not a count: its default 200 ms when any warm-up is asked for
        cmd = self._cmd(feeds) + [f"--warmUp={200 if warmup else 0}", "--percentile=90,95,99"]
        if iterations:
            cmd += [f"--iterations={iterations}", "--duration=0"]
        else:
            cmd += [f"--duration={max(1, int(round(duration_s)))}"]
        summary = parse_summary(_run(cmd))
        lat = summary.get("latency")
        if not lat:
            raise BuildFailed("trtexec printed no performance summary")
        qps = summary.get("throughput", {}).get("qps", 0.0)
        stats = LatencyStats(min_ms=lat["min"], mean_ms=lat["mean"], p50_ms=lat.get("median", lat["mean"]),
                             p90_ms=lat.get("p90", lat["max"]), p95_ms=lat.get("p95", lat["max"]),
                             p99_ms=lat.get("p99", lat["max"]), max_ms=lat["max"], throughput=qps * batch,
                             iterations=iterations, samples_ms=[])
        timings = {k: v["mean"] for k, v in summary.items() if k in ("h2d", "gpu_compute", "d2h") and "mean" in v}
        return stats, timings

    def profile_layers(self, feeds: Dict[str, np.ndarray], runs: int, segment: str,
                       source: Optional[bytes] = None) -> LayerProfile:
        """A trtexec run of its own after the timed one: its per-layer profile in a separate profiling run
        (``--separateProfileRun``, so the layer timers do not slow the timed part), exported as JSON."""
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            path = os.path.join(tmp, "profile.json")
            text = _run(self._cmd(feeds) + [f"--iterations={max(1, runs)}", "--duration=0", "--warmUp=200",
                                            "--dumpProfile", "--separateProfileRun", f"--exportProfile={path}"])
            try:
                with open(path) as f:
                    rows, count = parse_profile(json.load(f), segment)
            except (OSError, ValueError) as exc:
                raise BuildFailed(f"trtexec wrote no readable profile: {exc}") from exc
        wall = parse_summary(text).get("gpu_compute", {}).get("mean", 0.0)  # of the timed part of that run
        return finish(rows, wall, count)


def _run(cmd: List[str]) -> str:
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise BuildFailed(f"trtexec ran past {TIMEOUT_S:.0f} s and was stopped") from exc
    text = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        errors = [ln for ln in text.splitlines() if "[E]" in ln or "ERROR" in ln] or text.splitlines()[-10:]
        raise BuildFailedWithMessages(f"trtexec failed (exit {proc.returncode}): "
                                      f"{errors[0] if errors else 'no output'}", errors)
    return text


class TrtexecBackend(Backend):
    name = "trtexec"

    def __init__(self, workdir: Optional[str] = None) -> None:
        super().__init__()
        self.workdir = workdir or tempfile.gettempdir()

    def probe_impl(self) -> ProbeResult:
        exe = find_trtexec()
        if exe is None:
            return ProbeResult(self.name, False, "", "no trtexec on PATH or in " + ", ".join(SEARCH_PATHS))
        proc = subprocess.run([exe, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        version = parse_version(proc.stdout.decode(errors="replace"))
        if version is None:
            return ProbeResult(self.name, False, "", f"{exe} printed no TensorRT version")
        return ProbeResult(self.name, True, version, f"path: {exe}")

    @property
    def exe(self) -> str:
        exe = find_trtexec()
        if exe is None:
            raise Unavailable("trtexec is not installed; use another backend")
        return exe

    def build_impl(self, onnx_bytes: bytes, spec: BuildSpec) -> BuildOutput:
        version = self.probe().version
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            onnx_path, plan_path = os.path.join(tmp, "segment.onnx"), os.path.join(tmp, "segment.plan")
            with open(onnx_path, "wb") as f:
                f.write(onnx_bytes)
            cmd = [self.exe, f"--onnx={onnx_path}", f"--saveEngine={plan_path}"]
            mib = max(1, int(spec.max_workspace_bytes) >> 20)
            major_minor = tuple(int(x) for x in version.split(".")[:2])
            cmd.append(f"--memPoolSize=workspace:{mib}" if major_minor >= (8, 4) else f"--workspace={mib}")
            if spec.fp16:
                cmd.append("--fp16")  # with --int8: FP16 fallback for layers that have no INT8 kernel
            if spec.int8 and major_minor < (10, 0):
                cmd.append("--int8")  # a Q/DQ segment: TensorRT 8.x needs INT8 enabled; no calibrator is used
            if spec.timing_cache_path:
                cmd.append(f"--timingCacheFile={spec.timing_cache_path}")
            cmd += profile_args(spec.profiles, major_minor)
            for flag in spec.builder_flags:
                if not re.fullmatch(r"[A-Za-z0-9_]+", flag):
                    raise InvalidInput(f"builder flag {flag!r} is not a plain name")
                cmd.append(f"--{flag}")  # for this backend a builder flag is a trtexec option name
            start = time.perf_counter()
            log = _run(cmd)
            build_s = time.perf_counter() - start
            with open(plan_path, "rb") as f:
                plan = f.read()
        messages = [ln for ln in log.splitlines() if "[W]" in ln][-20:]
        return BuildOutput(plan, 0.0, build_s, messages)

    def load_impl(self, plan: bytes, spec: BuildSpec) -> Engine:
        exe = self.exe
        d = tempfile.mkdtemp(prefix="trtexec-", dir=self.workdir)
        plan_path = os.path.join(d, "engine.plan")
        with open(plan_path, "wb") as f:
            f.write(plan)
        # trtexec reports no I/O metadata as data: it comes from the bundle's manifest
        if not spec.inputs or not spec.outputs:
            raise InvalidInput("trtexec needs the segment's inputs and outputs from the bundle manifest")
        return TrtexecEngine(exe, plan_path, list(spec.inputs), list(spec.outputs), d, list(spec.profiles))
