"""`deploy-agent`: start the device agent (also `python -m device_agent`)."""
from __future__ import annotations

import signal
import sys
from typing import Optional, Sequence

from .config import parse_args
from .errors import DeployError
from .ready import ready_line


def main(argv: Optional[Sequence[str]] = None) -> int:
    settings = parse_args(argv)
    from .logfmt import FORMATS, configure

    if settings.log_format not in FORMATS:
        print(f"deploy-agent: error: --log-format {settings.log_format!r}: use one of {', '.join(FORMATS)}",
              file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format)
    from .server import AgentServer  # after argument parsing, so `--help` stays fast

    try:
        server = AgentServer(settings)
    except DeployError as exc:
        print(f"deploy-agent: error: {exc}", file=sys.stderr)
        return 2
    server.start()
    # One line on stdout that a parent process can wait for.
    print(ready_line(server.address), flush=True)

    def _terminate(signum: int, _frame: object) -> None:
        server.stop(grace=2.0)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
