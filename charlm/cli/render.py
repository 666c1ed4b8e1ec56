"""Terminal rendering of training events: a live bar, eval lines, samples, a summary.

The training loop knows nothing of terminals; this turns its events into
output. On a terminal a tqdm bar shows progress towards the nearest bound,
its status cut down to fit the terminal's width with room for the bar (an
80-column terminal drops the learning rate and the bits per character); in
a log file (no TTY) each report becomes one plain line instead. Notices go
to stderr.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import TextIO

from tqdm import tqdm

from charlm.config import TrainConfig, applies_to
from charlm.engine.events import Evaluated, Notice, RunFinished, RunStarted, StepProgress

_PROGRESS_UNITS = 1000  # the bar counts thousandths of the run
_PLAIN_LINE_SECONDS = 30  # without a terminal, one progress line per this many seconds
# What the bar line holds besides the status: "100%|" + bar + "| " + "12:34<56:78 ", the times
# allowed an hour's digits; and the narrowest bar still worth drawing.
_BAR_FRAME = len("100%|| 1:00:00<1:00:00 ")
_MIN_BAR = 10


def format_config(config: TrainConfig) -> str:
    """The resolved config as TOML lines, ready to paste into a preset (the run's task's settings only)."""
    lines = []
    for key, value in config.to_dict().items():
        if not applies_to(key, config.task):  # a preset with them would be refused for this task
            continue
        if value is None:  # an unset bound; left out, a pasted preset would get the default back
            text = '"none"'
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = f'"{value}"'
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines)


def format_metrics(metrics: dict, unit: str, short: bool = False) -> str:
    """Validation figures in a few words: the loss (with bits per unit) and any other metric.

    short: the loss alone, for a narrow progress line.
    """
    parts = []
    if "val_loss" in metrics:
        bits = metrics["val_loss"] / math.log(2)
        parts.append(f"val {metrics['val_loss']:.3f}" if short else
                     f"val {metrics['val_loss']:.3f} ({bits:.2f} {'bpb' if unit == 'byte' else 'bpc'})"
                     if unit in ("char", "byte") else f"val loss {metrics['val_loss']:.3f}")
        if short:
            return parts[0]
    for key, value in metrics.items():
        if key not in ("val_loss", "val_bits_per_char") and isinstance(value, (int, float)):
            parts.append(f"{key.removeprefix('val_').replace('_', '-')} {value:.3f}")
    return " | ".join(parts)


def _rate(chars_per_second: float) -> str:
    return f"{chars_per_second / 1000:.1f}k" if chars_per_second >= 1000 else f"{chars_per_second:.0f}"


class TrainRenderer:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None):
        self.out, self.err = out or sys.stdout, err or sys.stderr  # looked up now: tests swap them
        self.live = self.err.isatty()
        self.bar: tqdm | None = None
        self.val_text = "val -"
        self.val_short = "val -"
        self.unit = "char"
        self.last_plain_line = time.monotonic()

    def __call__(self, event: object) -> None:
        if isinstance(event, RunStarted):
            self.started(event)
        elif isinstance(event, StepProgress):
            self.step(event)
        elif isinstance(event, Evaluated):
            self.evaluated(event)
        elif isinstance(event, RunFinished):
            self.finished(event)
        elif isinstance(event, Notice):
            self.notice(event)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def started(self, e: RunStarted) -> None:
        self.write(f"# resolved config\n{format_config(e.config)}")
        self.unit = e.unit
        self.write(e.data_summary)
        for warning in e.data.get("warnings", []):  # what the task did about its data (a class kept for training)
            print(f"charlm: warning: {warning}", file=self.err, flush=True)
        resumed = f", resumed at step {e.resumed_from_step}" if e.resumed_from_step is not None else ""
        self.write(f"model {e.model_summary}, {e.num_parameters:,} parameters, on {e.device} in {e.precision}"
                   f"{resumed}; run directory {e.run_dir}")
        if e.world_size > 1:
            self.write(f"{e.world_size} processes x batch {e.config.batch_size} = effective batch "
                       f"{e.world_size * e.config.batch_size} {'streams' if e.task == 'lm' else 'pairs' if e.task == 'seq2seq' else 'records'}; learning rate {e.config.lr:g} (not scaled)")
        if self.live:
            # The status goes in {desc}, not {postfix}: tqdm puts ", " before a
            # postfix, which showed as "00:03<00:10 , step 500".
            self.bar = tqdm(total=_PROGRESS_UNITS, file=self.err, ncols=_columns(self.err), leave=False,
                            bar_format="{percentage:3.0f}%|{bar}| {elapsed}<{remaining} {desc}")

    def notice(self, e: Notice) -> None:
        text = f"charlm: note: {e.message}"
        if self.bar is not None:
            self.bar.write(text, file=self.err)
        else:
            print(text, file=self.err, flush=True)

    def status(self, e: StepProgress, width: int | None = None) -> str:
        """The progress status, without the fields that would not fit in `width` (least useful first)."""
        step, loss, rate = f"step {e.step}", f"loss {e.train_loss:.3f}", f"{_rate(e.tokens_per_second)} {self.unit}/s"
        choices = ([step, loss, self.val_text, f"lr {e.lr:.2e}", rate], [step, loss, self.val_text, rate],
                   [step, loss, self.val_short, rate], [step, loss, self.val_short], [step, loss])
        for fields in choices:
            text = " | ".join(fields)
            if width is None or len(text) <= width:
                break
        return text

    def step(self, e: StepProgress) -> None:
        if self.bar is not None:
            width = _columns(self.err)
            self.bar.ncols = width  # follows a resized terminal
            self.bar.n = int(e.progress * _PROGRESS_UNITS)
            self.bar.set_description_str(self.status(e, width - _BAR_FRAME - _MIN_BAR), refresh=True)
        elif time.monotonic() - self.last_plain_line >= _PLAIN_LINE_SECONDS:
            self.last_plain_line = time.monotonic()
            self.write(f"{e.progress:4.0%} {self.status(e)}")

    def evaluated(self, e: Evaluated) -> None:
        self.val_text = format_metrics(e.metrics, self.unit)
        self.val_short = format_metrics(e.metrics, self.unit, short=True)
        marker = " (best)" if e.is_best else ""
        self.write(f"step {e.step}: {self.val_text}{marker}")
        if e.preview:
            self.write("  " + e.preview.replace("\n", "\n  "))

    def best_text(self, e: RunFinished) -> str:
        if e.best_score is None:  # no validation pass has finished
            return "no validation pass yet"
        if e.main_metric == "val_loss":
            return f"best val {e.best_score:.4f} nats/{self.unit} at step {e.best_step}"
        return f"best {e.main_metric.removeprefix('val_')} {e.best_score:.4f} at step {e.best_step}"

    def finished(self, e: RunFinished) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        why = {"max_steps": "reached --max-steps", "epochs": "reached --epochs", "time_budget": "time budget spent",
               "patience": "no new best in --patience evaluations", "interrupted": "interrupted"}[e.reason]
        minutes, seconds = divmod(int(e.elapsed_seconds), 60)
        self.write(f"done: {why} after {e.step} steps in {minutes}m{seconds:02d}s; "
                   f"{self.best_text(e)}; " + (f"checkpoints in {e.run_dir}" if e.step else "nothing was saved"))
        if e.skipped_steps:
            self.write(f"note: {e.skipped_steps} step(s) were skipped for a NaN/inf loss or gradient")


def _columns(stream: TextIO) -> int:
    """The width of the terminal `stream` writes to: $COLUMNS if set (as shutil reads it), else asked, else 80."""
    try:
        return max(int(os.environ["COLUMNS"]), 20)
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 80
