"""The `charlm` command: thin Typer wrappers over the library, one module per command group.

Each command parses its flags, calls the library and renders what comes
back (see common.py for errors and exit codes).
"""

from __future__ import annotations

import sys

import typer

from charlm.cli import corpus, evaluate, report, sample, train, translate
from charlm.cli.common import _Interrupts, report_interrupt

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, sample, translate with and evaluate character-level RNN/LSTM/GRU models.")
app.command(name="train")(train.train)
app.command(name="sample")(sample.sample)
app.command(name="eval")(evaluate.evaluate)
app.command(name="translate")(translate.translate)
app.add_typer(corpus.corpus_app, name="corpus")
report.register(app)  # report, inspect


def main() -> None:
    """Entry point. Usage errors are reported in one line too, with Typer's exit code 2."""
    _Interrupts.reported = False
    try:
        code = app(standalone_mode=False)
    except KeyboardInterrupt:  # Ctrl-C outside a command's own handling (while it starts, say)
        code = 130
    except Exception as exc:  # click's (or Typer's vendored click's) UsageError and kin
        if isinstance(exc.__cause__, KeyboardInterrupt):  # older click's form of a Ctrl-C it caught (Abort)
            code = 130
        elif hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            command = getattr(getattr(exc, "ctx", None), "command_path", "charlm")
            if exc.format_message():  # empty when the help was shown for a bare `charlm`
                typer.echo(f"charlm: error: {exc.format_message()} (see: {command} --help)", err=True)
            code = exc.exit_code
        else:
            raise
    if code == 130 and not _Interrupts.reported:
        report_interrupt()
    sys.exit(code if isinstance(code, int) else 0)
