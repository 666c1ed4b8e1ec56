"""What every command shares: one-line errors, exit codes, and stopping on a signal.

Errors the user can fix arrive as CharlmError and leave as one line on
stderr with exit status 1; Typer's own usage errors exit with 2; an
interrupted run exits with 130 (Ctrl-C) or 143 (SIGTERM).
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from typing import Iterator

import typer

from charlm.errors import INTERRUPTED, CharlmError

EXIT_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class _Interrupts:
    # Whether a command already said how it was interrupted; Typer turns a Ctrl-C
    # outside the commands' own handling (while parsing, say) into a silent exit 130.
    reported = False


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"charlm: error: {message}", err=True)
    raise typer.Exit(code)


def report_interrupt(message: str = INTERRUPTED.rstrip("\n"), show: bool = True) -> None:
    _Interrupts.reported = True
    if show:
        typer.echo(message, err=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn library errors into one line on stderr and an exit status."""
    try:
        yield
    except CharlmError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        report_interrupt()
        raise typer.Exit(130)
    except BrokenPipeError:  # `charlm sample | head`: the reader left, which is fine
        sys.stderr.close()
        raise typer.Exit(0)


class StopFlag:
    """Set by SIGINT/SIGTERM; the training loop checks it between steps and saves.

    A second Ctrl-C while saving falls back to an immediate KeyboardInterrupt.
    """

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def handle(self, signum: int, frame: object) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    @contextmanager
    def installed(self) -> Iterator["StopFlag"]:
        previous = {s: signal.signal(s, self.handle) for s in EXIT_SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
