"""`charlm report` (an HTML page of runs) and `charlm inspect` (a text coloured by what a model makes of it).

Thin wrappers: parse, call charlm.report, print. Errors leave as one line
on stderr through the app's user_errors(); colour follows rich's detection
(none in a pipe, a file or under NO_COLOR), and without it the views print
plain marks under the text instead.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from charlm.cli.common import user_errors
from charlm.errors import CharlmError

FIND_NEURONS_LISTED = 10  # units in the --find-neurons table


def _user_errors():
    return user_errors()


def report(
    runs: Optional[list[Path]] = typer.Argument(None, metavar="RUN",
                                                help="run directories; default: the newest run under checkpoints/"),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="the HTML file to write"),
    text: Optional[Path] = typer.Option(None, "--text", help="in the surprisal views, a file's text instead of "
                                                            "each run's validation split"),
    length: int = typer.Option(1500, "--length", help="characters in each surprisal view"),
) -> None:
    """One self-contained HTML page of runs: curves, settings, samples, surprisal."""
    from charlm.report.build import build_report
    from charlm.report.runs import latest_run
    from charlm.text.cache import default_cache_dir

    with _user_errors():
        if length < 1:
            raise CharlmError(f"--length must be 1 or more, got {length}")
        if text is not None and not text.is_file():
            raise CharlmError(f"--text {text} is not a file; give the path of a text file")
        started = time.monotonic()
        built = build_report(list(runs) if runs else [latest_run()], text_path=text, length=length,
                             cache_dir=default_cache_dir())
        data = built.html.encode("utf-8")
        try:
            output.write_bytes(data)
        except OSError as exc:
            raise CharlmError(f"cannot write {output}: {exc.strerror or exc}; choose another --output") from None
        for note in built.notes:
            typer.echo(f"charlm: warning: {note}", err=True)
        count = len(built.runs)
        typer.echo(f"wrote {output}: {count} run{'s' if count != 1 else ''}, {len(data) / 1024:,.0f} KB, "
                   f"in {time.monotonic() - started:.1f} s")


def inspect(
    text_file: Optional[Path] = typer.Argument(None, metavar="FILE",
                                               help="text to look at; default: the run's validation split"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="run directory or checkpoint JSON; "
                                              "default: the newest run under checkpoints/"),
    text: Optional[str] = typer.Option(None, "--text", help="look at this string instead of a file"),
    neuron: Optional[str] = typer.Option(None, "--neuron", metavar="LAYER:UNIT",
                                         help="colour by this hidden unit's activation (layers from 1, units from 0)"),
    find_neurons: Optional[str] = typer.Option(None, "--find-neurons", metavar="PATTERN",
                                               help="rank units by how well they separate the characters inside "
                                                    "matches of this regular expression from the rest"),
    top: int = typer.Option(3, "--top", help="with --find-neurons: the best units shown on the text"),
    length: int = typer.Option(800, "--length", help="characters shown"),
    max_chars: int = typer.Option(20_000, "--max-chars", help="characters read (the statistics cover them all)"),
    skip_unknown: bool = typer.Option(False, "--skip-unknown", help="leave out characters the model does not know"),
) -> None:
    """Show a text coloured by the model's surprisal at each character, or by a hidden unit's activation."""
    from charlm.report.neurons import parse_unit
    from charlm.report.source import load_model, text_ids
    from charlm.text.cache import default_cache_dir

    screen = _Screen()
    with _user_errors():
        if neuron and find_neurons:
            raise CharlmError("--neuron and --find-neurons each colour the text; give one of them")
        if text is not None and text_file is not None:
            raise CharlmError("give a text file or --text, not both")
        for name, value in (("--length", length), ("--max-chars", max_chars), ("--top", top)):
            if value < 1:
                raise CharlmError(f"{name} must be 1 or more, got {value}")
        loaded = load_model(checkpoint, tasks=("lm",), command="charlm inspect")
        spec = loaded.model.spec
        unit = parse_unit(neuron, spec.num_layers, spec.hidden_size) if neuron else None
        ids, where = text_ids(loaded, path=text_file, text=text, skip_unknown=skip_unknown, max_tokens=max_chars,
                              cache_dir=default_cache_dir())
        # The validation split starts anywhere in a line: its excerpt starts at the next line. A given text is shown whole.
        from_line = text_file is None and text is None
        if neuron or find_neurons:
            _show_units(screen, loaded, ids, where, from_line, length, unit, find_neurons, top)
        else:
            _show_surprisal(screen, loaded, ids, where, from_line, length)


class _Screen:
    """The console, whether it shows colour, and the one way a coloured text is printed."""

    def __init__(self) -> None:
        self.console = Console(highlight=False)
        self.colour = self.console.color_system is not None and not self.console.no_color

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, soft_wrap=True)

    def show(self, cells, scale) -> None:
        from charlm.report import terminal

        self.console.print(terminal.legend(scale, self.colour), soft_wrap=True)
        if self.colour:
            self.console.print(terminal.coloured(cells, scale))
        else:
            self.line(terminal.marked_lines(cells, scale))


def _show_surprisal(screen: _Screen, loaded, ids, where: str, from_line: bool, length: int) -> None:
    from charlm.report import terminal
    from charlm.report.colors import SURPRISAL
    from charlm.report.surprisal import surprisal_of
    from charlm.report.views import line_start, surprisal_cells

    scored = surprisal_of(loaded.model, ids, loaded.vocab)
    characters = [char for char, _, _ in scored.characters()]
    start = line_start(characters) if from_line else 0
    stop = min(start + length, len(characters))
    screen.line(f"{loaded.path}: {where}, characters {start + 1:,} to {stop:,} of {len(characters):,} read")
    screen.show(surprisal_cells(scored, start, stop), SURPRISAL)
    unit = loaded.vocab.unit
    screen.line(f"\nmean {scored.mean_nats / math.log(2):.3f} bits per {unit} over {len(scored.ids) - 1:,} "
                "predictions (as charlm eval --exact --precision fp32)")
    hardest = scored.hardest(10)
    if hardest:
        screen.line(f"\nhardest {unit}s: the highest mean surprisal (of those read 3 times or more)")
        screen.console.print(terminal.hardest_table(hardest, unit))
    screen.line("\nmost surprising moments")
    screen.console.print(terminal.surprises_table(scored.surprises(5)))


def _show_units(screen: _Screen, loaded, ids, where: str, from_line: bool, length: int,
                unit: tuple[int, int] | None, pattern: str | None, top: int) -> None:
    from charlm.report import terminal
    from charlm.report.colors import ACTIVATION
    from charlm.report.views import line_start, unit_view

    view, scores = unit_view(loaded.model, loaded.vocab, ids, pattern)
    start = line_start(view.characters) if from_line else 0
    stop = min(start + length, len(view.characters))
    screen.line(f"{loaded.path}: {where}, characters {start + 1:,} to {stop:,} of {len(view.characters):,} read")
    if unit is not None:
        mean, low, high = view.summary(*unit)
        screen.line(f"unit {unit[0] + 1}:{unit[1]}: mean {mean:+.3f}, min {low:+.3f}, max {high:+.3f}")
        screen.show(view.cells(*unit, start, stop), ACTIVATION)
        return
    screen.line(f"units that best separate the characters inside matches of '{pattern}' from the rest "
                "(separation 1: a threshold on the unit alone tells them apart; 0: no better than chance)")
    screen.console.print(terminal.units_table(scores, FIND_NEURONS_LISTED))
    for score in scores[:top]:
        side = "higher" if score.auc >= 0.5 else "lower"
        screen.line(f"\nunit {score.name}: separation {score.separation:.3f}, {side} inside matches "
                    f"({'underlined' if screen.colour else 'marked ^'})")
        screen.show(view.cells(score.layer, score.unit, start, stop), ACTIVATION)


def register(app: typer.Typer) -> None:
    """Add `report` and `inspect` to the charlm command."""
    app.command(name="report")(report)
    app.command(name="inspect")(inspect)
