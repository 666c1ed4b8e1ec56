"""What every command shares: one-line errors, exit codes, and stopping on a signal.

Errors the user can fix arrive as CharlmError and leave as one line on
stderr with exit status 1; Typer's own usage errors exit with 2; an
interrupted run exits with 130 (Ctrl-C) or 143 (SIGTERM).
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from typing import Iterator, get_args

import typer
import typer.core

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
        silence_stdout()
        raise typer.Exit(0)


def silence_stdout() -> None:
    """After the reader of stdout has gone (`| head`), send what is left to /dev/null: Python's
    final flush would otherwise fail again and exit with status 120 and a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (tests): nothing to flush later
        pass


def stdout_is_silenced() -> bool:
    """Whether stdout now goes to /dev/null: what silence_stdout() (and rich, on a broken pipe) did."""
    try:
        here, null = os.fstat(sys.stdout.fileno()), os.stat(os.devnull)
    except (OSError, ValueError, AttributeError):
        return False
    return (here.st_dev, here.st_ino) == (null.st_dev, null.st_ino)


def _show_plainly(param) -> None:
    """A flag shows as a flag (no type after it: "--resume <bool>" read as if it took a value), and a
    repeatable option or argument shows the type of one value, not "<list[str]>"."""
    if getattr(param, "is_flag", False):
        param.metavar = ""
    elif getattr(param, "multiple", False) or param.nargs == -1:
        element = get_args(getattr(getattr(param, "type_descriptor", None), "annotation", None))
        label = f"<{element[0].__name__.lower()}>" if element and isinstance(element[0], type) else "<value>"
        if param.param_type_name == "argument":
            param.display_type_rich = lambda ctx: label  # its name column already says "name..."
        else:
            param.metavar = label


class Command(typer.core.TyperCommand):
    """Typer's command, with its flags and lists shown plainly in --help (see _show_plainly)."""

    def get_params(self, ctx):  # --help itself is made here, after __init__
        params = super().get_params(ctx)
        for param in params:
            _show_plainly(param)
        return params


class Group(typer.core.TyperGroup):
    """Typer's group (the `charlm` command itself), with its flags shown plainly in --help."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            _show_plainly(param)
        return params


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
