"""Every failure becomes one line and an exit code, through one ordered table (first match wins).

Exit codes: 0 success, 1 failure on the device, 2 bad input or usage, 3 device unreachable.
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

    input_codes = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    return [
        Rule(lambda e: isinstance(e, KeyboardInterrupt), EXIT_INTERRUPTED, lambda e: "interrupted"),
        Rule(lambda e: isinstance(e, AgentError) and e.unreachable, EXIT_UNREACHABLE, agent_line),
        Rule(lambda e: isinstance(e, AgentError) and e.code in input_codes, EXIT_INPUT, agent_line),
        Rule(lambda e: isinstance(e, AgentError), EXIT_DEVICE, agent_line),
        Rule(lambda e: isinstance(e, (InvalidInput, NotFound, PreconditionFailed)), EXIT_INPUT, str),
        Rule(lambda e: isinstance(e, DeployError), EXIT_DEVICE, str),
        Rule(lambda e: isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)), EXIT_INPUT,
             lambda e: f"{getattr(e, 'filename', '') or ''}: {getattr(e, 'strerror', None) or e}"),
        Rule(lambda e: True, EXIT_DEVICE,
             lambda e: f"unexpected {type(e).__name__}: {e} (set DEPLOY_DEBUG=1 for details)"),
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
