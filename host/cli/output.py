"""One output object for every command: a human rendering on a terminal, or exactly one JSON object.

rich is imported when something is first printed through it, so `--json` output never loads it."""
from __future__ import annotations

import json
import logging
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

if TYPE_CHECKING:
    from rich.console import Console


class Output:
    """`--json` prints only the final object; otherwise results go to stdout and progress to stderr."""

    def __init__(self, json_mode: bool = False, verbose: bool = False) -> None:
        self.json_mode = json_mode
        self.verbose = verbose
        self._console: Optional[Console] = None
        self._err: Optional[Console] = None
        if verbose:
            logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                                format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    @property
    def console(self) -> Console:
        """rich's console on stdout, made on first use."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(highlight=False, soft_wrap=True)
        return self._console

    @console.setter
    def console(self, value: Console) -> None:
        self._console = value

    @property
    def err(self) -> Console:
        """rich's console on stderr, made on first use."""
        if self._err is None:
            from rich.console import Console

            self._err = Console(stderr=True, highlight=False, soft_wrap=True)
        return self._err

    @err.setter
    def err(self, value: Console) -> None:
        self._err = value

    @property
    def interactive(self) -> bool:
        return not self.json_mode and self.err.is_terminal

    def result(self, data: dict[str, Any], render: Optional[Callable[[Console], None]] = None) -> None:
        if self.json_mode:
            sys.stdout.write(json.dumps(data, indent=None, sort_keys=True, default=str) + "\n")
            sys.stdout.flush()
        elif render is not None:
            render(self.console)
        else:
            for key, value in data.items():
                self.console.print(f"[bold]{key}[/bold]: {value}")

    def status(self, message: str) -> None:
        """A progress line on stderr; silent in JSON mode."""
        if not self.json_mode:
            self.err.print(message)

    @contextmanager
    def transfer(self, description: str, total: int) -> Iterator[Callable[[int, int], None]]:
        """A byte-progress callback: a rich bar on a terminal, a few plain lines otherwise, nothing for JSON."""
        if self.json_mode:
            yield lambda done, total: None
            return
        if self.interactive:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                          TimeRemainingColumn(), console=self.err, transient=True) as bar:
                task = bar.add_task(description, total=total)
                yield lambda done, total: bar.update(task, completed=done, total=total)
            return
        last = [0.0]

        def plain(done: int, total: int) -> None:
            now = time.monotonic()
            if done >= total or now - last[0] >= 2.0:
                last[0] = now
                self.err.print(f"{description}: {done}/{total} bytes ({100.0 * done / max(total, 1):.0f}%)")

        yield plain
