"""The `charlm` command: thin Typer wrappers over the library, one module per command group.

Each command parses its flags, calls the library and renders what comes
back (see common.py for errors and exit codes). `charlm --version`, `-h` for
`--help`, and Typer's shell completion (`--install-completion`) work on
every command.
"""

from __future__ import annotations

import sys

import typer

import charlm
from charlm.cli import classify, corpus, evaluate, report, sample, train, translate
from charlm.cli.common import Command, Group, _Interrupts, report_interrupt, silence_stdout, stdout_is_silenced

app = typer.Typer(cls=Group, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Train character-level RNN/LSTM/GRU models; sample, classify, translate and evaluate with them.")
app.command(name="train", cls=Command)(train.train)
app.command(name="sample", cls=Command)(sample.sample)
app.command(name="eval", cls=Command)(evaluate.evaluate)
app.command(name="classify", cls=Command)(classify.classify)
app.command(name="translate", cls=Command)(translate.translate)
app.add_typer(corpus.corpus_app, name="corpus")
report.register(app)  # report, inspect


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"charlm {charlm.__version__}")
        raise typer.Exit()


@app.callback()
def _charlm(version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                         help="show charlm's version and exit")) -> None:
    """Train character-level RNN/LSTM/GRU models; sample, classify, translate and evaluate with them."""


def main() -> None:
    """Entry point. Usage errors are reported in one line too, with Typer's exit code 2."""
    _Interrupts.reported = False
    try:
        code = app(standalone_mode=False)
    except KeyboardInterrupt:  # Ctrl-C outside a command's own handling (while it starts, say)
        code = 130
    except BrokenPipeError:  # `charlm --help | head -1`: the reader has all it wanted
        silence_stdout()
        code = 0
    except SystemExit as exc:  # rich, printing --help, exits with 1 when the reader has gone
        if exc.code != 1 or not stdout_is_silenced():
            raise
        code = 0
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
