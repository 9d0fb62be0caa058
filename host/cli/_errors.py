"""Every failure becomes one line and an exit code, through one ordered table (first match wins).

Exit codes: 0 success, 1 failure on the device, 2 bad input or usage, 3 device unreachable.
Each rule also says what its line means and what to do: docs/reference/troubleshooting.md is generated from the
table (scripts/gen_docs.py), and a test fails on a rule without them.
Set DEPLOY_DEBUG=1 to see the traceback as well. The table (and grpc with it) is built on the first failure only,
so importing this module costs nothing at start-up.
"""
from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

EXIT_OK, EXIT_DEVICE, EXIT_INPUT, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass(frozen=True)
class Rule:
    matches: Callable[[BaseException], bool]
    exit_code: int
    message: Callable[[BaseException], str]
    title: str = ""  # the shape of the line, as the user sees it
    meaning: str = ""  # what happened
    remedy: str = ""  # what to do


def agent_line(exc: BaseException) -> str:
    """An agent's error, naming the call's request id that the agent logged, so its journal can be searched."""
    request_id = getattr(exc, "request_id", "")
    return f"{exc} (request {request_id})" if request_id else str(exc)


@lru_cache(maxsize=1)
def error_table() -> list[Rule]:
    """The ordered rules; first match wins."""
    import grpc

    from device_agent.errors import DeployError, InvalidInput, NotFound, PreconditionFailed
    from host.client.errors import AgentError

    def agent(code: str, exit_code: int, meaning: str, remedy: str) -> Rule:
        status = getattr(grpc.StatusCode, code)
        return Rule(lambda e: isinstance(e, AgentError) and e.code == status, exit_code, agent_line,
                    f"{code} (HOST:PORT): ... (request ID)", meaning, remedy)

    return [
        Rule(lambda e: isinstance(e, KeyboardInterrupt), EXIT_INTERRUPTED, lambda e: "interrupted",
             "interrupted", "Ctrl-C (SIGINT): a remote build or benchmark was cancelled; the agent keeps serving.",
             "Run the command again; uploads resume, engines already built are cache hits."),
        Rule(lambda e: isinstance(e, AgentError) and e.unreachable, EXIT_UNREACHABLE, agent_line,
             "UNAVAILABLE (HOST:PORT): agent at HOST:PORT is unreachable (...); is it running?",
             "No agent answered at that address within the deadline (refused, timed out, DNS, TLS handshake "
             "closed), or one that had answered went away for longer than --retry-for.",
             "`deploy devices -v` shows each device's state and whole reason; start the agent (`deploy agent "
             "serve`, or its service on the device), check the address in deploy.toml, the port and the firewall."),
        agent("UNAUTHENTICATED", EXIT_DEVICE,
              "The agent refused the credentials: no client certificate, one from another CA or expired, an agent "
              "certificate that is not the device we trust, or a missing or wrong token.",
              "Check the device's `tls` / `token_file` in deploy.toml; `deploy certs issue NAME` re-issues an "
              "agent certificate (see the how-to guide TLS and tokens)."),
        agent("INVALID_ARGUMENT", EXIT_INPUT,
              "The agent refused the request as malformed: a bad input name, shape or dtype, options that do not "
              "fit the bundle, an archive it will not open.",
              "Read the rest of the line: it names the field and the value; fix the command or the file."),
        agent("NOT_FOUND", EXIT_INPUT, "The agent has no such thing: a digest, engine key, model name or version.",
              "List what it has: `deploy store ls`, `deploy cache ls`, `deploy models ls` (with --device)."),
        agent("RESOURCE_EXHAUSTED", EXIT_DEVICE,
              "A bound on the device was reached: the disk (store or cache), --max-upload-bytes, the memory guard "
              "before a build, or --max-concurrent-rpcs.",
              "The line names the numbers. Disk: `deploy store prune` / `deploy cache prune`; memory: a smaller "
              "--max-workspace-size, --fp16, fewer processes on the device; busy: retry in a moment."),
        agent("FAILED_PRECONDITION", EXIT_DEVICE,
              "The request is valid but does not fit this device: a bundle partitioned for another TensorRT or "
              "compiled for another compute capability, an activation of a version whose engines are not verified, "
              "a timing cache of another class.",
              "Push the ONNX model rather than a bundle (push compiles for the device's TensorRT), or compile with "
              "the device's --profile / --trt-version; for activate, push the version first."),
        agent("DATA_LOSS", EXIT_DEVICE,
              "Bytes did not match their digest (an upload corrupted in flight, an engine or bundle changed at rest "
              "on the device's disk); nothing was kept.",
              "Run the command again: push and fleet warm send the bundle again by themselves. Repeated: check the "
              "device's storage (SD card, eMMC) and the link."),
        agent("DEADLINE_EXCEEDED", EXIT_DEVICE,
              "A wait passed its bound: a build streamed longer than DEPLOY_BUILD_TIMEOUT_S (default 3 h), or a wait "
              "inside the agent (a hung backend) timed out; the agent keeps serving.",
              "For a long build raise DEPLOY_BUILD_TIMEOUT_S; otherwise look up the request id in the agent's log."),
        agent("UNAVAILABLE", EXIT_DEVICE,
              "The agent answered that it cannot serve this now: a backend it lacks (e.g. --backend tensorrt on a "
              "device without TensorRT) or one that failed to load.",
              "`deploy info --device D` lists the device's backends and why each is missing; pick another --backend "
              "or install it on the device."),
        agent("ABORTED", EXIT_DEVICE, "Another call holds what this one needs (a conflict that passes).",
              "Retry in a moment."),
        Rule(lambda e: isinstance(e, AgentError), EXIT_DEVICE, agent_line,
             "INTERNAL (HOST:PORT): ... (request ID)",
             "Any other failure on the device: an engine build failed (parser or builder error), a backend raised, "
             "or the agent hit a bug (`agent error: TYPE: ...`).",
             "Look up the request id in the agent's log (`--log-format json` makes it searchable); a build error "
             "names the segment: `deploy inspect` shows its ops, `--no-offload OP` keeps one in TVM."),
        Rule(lambda e: isinstance(e, (InvalidInput, NotFound, PreconditionFailed)), EXIT_INPUT, str,
             "MESSAGE (no status code: found on the host)",
             "The host refused your input before calling any agent: a model it cannot read, an input without "
             "values (integer inputs need --inputs), an option that does not fit, a name not in the inventory.",
             "The line says what was wrong and which flag or file fixes it; nothing was written or sent."),
        Rule(lambda e: isinstance(e, DeployError), EXIT_DEVICE, str,
             "MESSAGE (no status code: a failure on the host's side of the work)",
             "A step on the host failed for a reason that is not your input: a compile stage, a verify that found "
             "the device's outputs too far from the reference, a fleet operation past --max-failures.",
             "The line names the stage; `DEPLOY_DEBUG=1` adds the traceback."),
        Rule(lambda e: isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)), EXIT_INPUT,
             lambda e: f"{getattr(e, 'filename', '') or ''}: {getattr(e, 'strerror', None) or e}",
             "PATH: No such file or directory",
             "A file or folder named on the command line (or in deploy.toml) is missing, is a folder, or cannot "
             "be read.", "Check the path and its permissions."),
        Rule(lambda e: True, EXIT_DEVICE,
             lambda e: f"unexpected {type(e).__name__}: {e} (set DEPLOY_DEBUG=1 for details)",
             "unexpected TYPE: ... (set DEPLOY_DEBUG=1 for details)",
             "A failure no rule above knows: a bug in deploy.",
             "Run it again with DEPLOY_DEBUG=1 and report the traceback."),
    ]


def handle(exc: BaseException) -> int:
    """Print the one-line message for `exc` on stderr and return its exit code."""
    if os.environ.get("DEPLOY_DEBUG"):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    for rule in error_table():
        if rule.matches(exc):
            print(f"error: {rule.message(exc)}", file=sys.stderr)
            return rule.exit_code
    return EXIT_DEVICE  # unreachable: the last rule matches everything
