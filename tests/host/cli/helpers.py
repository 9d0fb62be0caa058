"""Helpers of the CLI tests: a tiny real ONNX model and the parsing of `--json` output."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np


def tiny_conv_net(path: Path, seed: int = 0, batch: object = 1, size: tuple = (32, 32)) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm on a Bx3x32x32 input: one TensorRT segment.

    `batch` may be a name ("N") for a symbolic batch dim, `size` names ("H", "W") for symbolic height and width."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w"),
        numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "b"),
        numpy_helper.from_array((rng.standard_normal((10, 8)) * 0.3).astype(np.float32), "fc_w"),
        numpy_helper.from_array((rng.standard_normal(10) * 0.1).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, *size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tests")
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


SCHEMAS = Path(__file__).resolve().parents[3] / "docs" / "reference" / "schemas"


def parse_json(proc: subprocess.CompletedProcess, exit_code: int = 0) -> dict:
    """The one JSON object a `--json` command prints; fails with the command's stderr when there is none, and
    when the object does not match the command's schema (docs/reference/schemas/, the JSON reference's source)."""
    assert proc.returncode == exit_code, f"exit {proc.returncode}: {proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one JSON line on stdout, got: {proc.stdout!r}"
    data = json.loads(lines[0])
    command = deploy_command(proc.args)
    if command is not None:
        check_schema(command, data)
    return data


def deploy_command(args: Any) -> Optional[str]:
    """The schema name of a `deploy` invocation ("push", "fleet warm"), or None for another program."""
    argv: Sequence[str] = shlex.split(args) if isinstance(args, str) else [str(a) for a in args]
    for i, arg in enumerate(argv):
        if Path(arg).name == "deploy" or arg == "host.cli.app":
            words = [a for a in argv[i + 1:i + 3] if not a.startswith("-")]
            for n in (2, 1):
                if len(words) >= n and (SCHEMAS / f"{'-'.join(words[:n])}.json").exists():
                    return " ".join(words[:n])
            raise AssertionError(f"deploy {' '.join(words)} --json has no schema: write "
                                 f"docs/reference/schemas/{'-'.join(words)}.json (scripts/gen_docs.py documents it)")
    return None


@lru_cache(maxsize=None)
def _validator(command: str) -> Any:
    import jsonschema

    schema = json.loads((SCHEMAS / f"{command.replace(' ', '-')}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def check_schema(command: str, data: dict) -> None:
    """Every error of `data` against the schema of `deploy COMMAND --json`, each with its path, or nothing."""
    errors = sorted(_validator(command).iter_errors(data), key=lambda e: list(e.absolute_path))
    assert not errors, f"deploy {command} --json does not match docs/reference/schemas/{command.replace(' ', '-')}" \
        ".json:\n" + "\n".join(f"  {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors[:20])


def default_sigint(cmd: list[str]) -> list[str]:
    """`cmd` with Ctrl-C as a user at a terminal has it (a test run from a background job inherits SIGINT ignored).

    Through coreutils' `env --default-signal`, not a `preexec_fn`: that makes Python fork() instead of vfork(), and
    gRPC's fork handler then starts a poller thread in the child that can crash it on the descriptors closed before
    exec ("epoll_wait error: Bad file descriptor", grpc/grpc#43055), before the command ever runs."""
    return ["env", "--default-signal=INT", *cmd]


def interrupt_after(cmd: list[str], marker: str, wait_s: float = 120, exit_s: float = 30) -> tuple[int, str, str, float]:
    """Run `cmd`, send SIGINT once a stderr line holds `marker`; (exit code, stderr before, stderr after, seconds
    from the signal to the exit). The process never outlives the call."""
    proc = subprocess.Popen(default_sigint(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = ""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen += line
            if marker in line or not line:
                break
        assert marker in seen, seen
        os.kill(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        rest = proc.communicate(timeout=exit_s)[1]
        return proc.returncode, seen, rest, time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
