"""`charlm classify`: the top classes of each text, from the arguments or streamed from stdin.

From stdin every line is answered as soon as it can be: lines typed at a
terminal one by one, lines piped in by the batch (whatever has arrived, up
to BATCH_LINES, goes through the model in one call), each batch's answers
flushed at once. A line that cannot be classified gets an error of its own
(on stderr, and in --json as an object with "error", so answers stay
aligned with the input) and the rest go on; the exit status is then 1.
"""

from __future__ import annotations

import json
import os
import select
import sys
from pathlib import Path
from typing import Iterator, Optional

import typer

from charlm.cli.common import user_errors
from charlm.engine.runtime import resolve_device
from charlm.errors import CharlmError
from charlm.runs import load_checkpoint

BATCH_LINES = 512  # lines answered in one forward pass when they arrive together
READ_BYTES = 1 << 16


def classify(
    texts: Optional[list[str]] = typer.Argument(None, metavar="TEXT", help="texts to classify; - or none: read "
                                                                          "one per line from stdin"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="run directory or checkpoint JSON; "
                                              "default: the newest run under checkpoints/"),
    top_k: int = typer.Option(3, "--top-k", help="classes shown per text, most likely first"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per text"),
    strict: bool = typer.Option(False, "--strict", help="a character the model never saw makes its text an "
                                                        "error instead of being skipped"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto"),
) -> None:
    """Classify texts with a trained classifier (charlm train --task classify): top classes with probabilities."""
    from charlm.tasks.classify.inference import Classifier

    with user_errors():
        arguments = list(texts or [])
        from_stdin = not arguments or arguments == ["-"]
        if "-" in arguments and not from_stdin:
            raise CharlmError("- (read stdin) cannot be mixed with texts; give texts, or - alone")
        if top_k < 1:
            raise CharlmError(f"--top-k must be at least 1, got {top_k}")
        loaded = load_checkpoint(checkpoint, tasks=("classify",), command="charlm classify")
        classifier = Classifier(loaded, resolve_device(device))
        answer = _Answerer(classifier, top_k, strict, as_json)
        batches = _stdin_batches() if from_stdin else iter([arguments])
        for batch in batches:
            answer(batch)
        if answer.failed:
            raise typer.Exit(1)


class _Answerer:
    """Classifies a batch of texts and writes the answers, warnings and errors."""

    def __init__(self, classifier, top_k: int, strict: bool, as_json: bool):
        self.classifier, self.top_k, self.strict, self.as_json = classifier, top_k, strict, as_json
        self.warned: set[str] = set()
        self.failed = 0

    def __call__(self, texts: list[str]) -> None:
        answers = self.classifier.classify(texts, self.top_k, self.strict)
        new = sorted({char for a in answers if a.error is None for char in a.unknown} - self.warned)
        if new:  # once per character, however many texts hold it
            self.warned.update(new)
            typer.echo(f"charlm: warning: skipped character(s) the model never saw: {', '.join(map(repr, new))} "
                       "(--strict makes them an error)", err=True)
        out = []
        for a in answers:
            if a.error is not None:
                self.failed += 1
                typer.echo(f"charlm: error: {a.text!r}: {a.error}", err=True)
                if self.as_json:
                    out.append(json.dumps(a.to_dict(), ensure_ascii=False))
            elif self.as_json:
                out.append(json.dumps(a.to_dict(), ensure_ascii=False))
            else:
                out.append(a.text + "\t" + "\t".join(f"{name} {p:.3f}" for name, p in a.top))
        if out:
            sys.stdout.write("\n".join(out) + "\n")
            sys.stdout.flush()


def _stdin_batches() -> Iterator[list[str]]:
    """Lines of stdin in batches of what has arrived (up to BATCH_LINES), each as soon as it is complete."""
    try:
        fd = sys.stdin.fileno()
        select.select([fd], [], [], 0)
    except (AttributeError, OSError, ValueError, TypeError):  # not a real file (a test harness's stream)
        for line in sys.stdin:
            yield [line.rstrip("\n").removesuffix("\r")]
        return
    pending, ended = b"", False
    while not ended:
        chunk = os.read(fd, READ_BYTES)  # blocks until something arrives
        ended = not chunk
        pending += chunk
        # take whatever else is already there, without waiting, up to a batch
        while not ended and pending.count(b"\n") < BATCH_LINES and select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, READ_BYTES)
            ended = not chunk
            pending += chunk
        *complete, pending = pending.split(b"\n")
        if ended and pending:
            complete.append(pending)
            pending = b""
        for start in range(0, len(complete), BATCH_LINES):
            yield [_decode(line) for line in complete[start:start + BATCH_LINES]]


def _decode(line: bytes) -> str:
    line = line.removesuffix(b"\r")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("utf-8", errors="replace")  # shown as U+FFFD: skipped like any unknown character


def evaluate_run(loaded, path: Path | None, skip_unknown: bool, device, precision: str, as_json: bool) -> None:
    """`charlm eval` of a classifier: accuracy, macro-F1, per-class figures and the confusion matrix."""
    from rich.console import Console

    from charlm.report.confusion import confusion_table, legend, per_class_table, scored
    from charlm.tasks.classify.inference import evaluate_classifier

    report = evaluate_classifier(loaded, path, skip_unknown=skip_unknown, device=device, precision=precision)
    if as_json:
        typer.echo(json.dumps(dict(report.to_dict(), checkpoint=str(loaded.path)), ensure_ascii=False))
        return
    console = Console(highlight=False)
    if not console.is_terminal:  # a file or a pipe: the whole matrix on its lines, never wrapped at 80 columns
        console = Console(highlight=False, width=10_000)
    colour = console.color_system is not None and not console.no_color
    scores = report.scores.to_dict()
    skipped = f", {report.skipped:,} with unknown characters skipped" if report.skipped else ""
    for line in (f"{loaded.path}: {report.source}",
                 f"  texts scored  {report.texts:,} distinct ({report.records:,} records read{skipped})",
                 f"  accuracy      {report.scores.accuracy:.4f}",
                 f"  macro-F1      {report.scores.macro_f1:.4f}",
                 f"  loss          {report.loss:.4f} nats (mean cross-entropy over text-label pairs)", ""):
        console.print(line, markup=False)
    console.print(per_class_table(report.classes, scores))
    if not all(scored(scores)):
        console.print("  – : neither present nor predicted, left out of macro-F1", markup=False)
    console.print(f"\nconfusion matrix ({legend(colour)})", markup=False)
    console.print(confusion_table(report.classes, scores["confusion"], colour))
