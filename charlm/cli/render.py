"""Terminal rendering of training events: a live bar, eval lines, samples, a summary.

The training loop knows nothing of terminals; this turns its events into
output. On a terminal a tqdm bar shows progress towards the nearest bound; in
a log file (no TTY) each report becomes one plain line instead.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from tqdm import tqdm

from charlm.config import TrainConfig
from charlm.engine.loop import Evaluated, RunFinished, RunStarted, StepProgress

_PROGRESS_UNITS = 1000  # the bar counts thousandths of the run
_PLAIN_LINE_SECONDS = 30  # without a terminal, one progress line per this many seconds


def format_config(config: TrainConfig) -> str:
    """The resolved config as TOML lines, ready to paste into a preset."""
    lines = []
    for key, value in config.to_dict().items():
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


def _rate(chars_per_second: float) -> str:
    return f"{chars_per_second / 1000:.1f}k" if chars_per_second >= 1000 else f"{chars_per_second:.0f}"


class TrainRenderer:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None):
        self.out, self.err = out or sys.stdout, err or sys.stderr  # looked up now: tests swap them
        self.live = self.err.isatty()
        self.bar: tqdm | None = None
        self.val_text = "val -"
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

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def started(self, e: RunStarted) -> None:
        corpus = e.corpus
        self.write(f"# resolved config\n{format_config(e.config)}")
        self.unit = "byte" if corpus["tokenizer"] == "bytes" else "char"
        files = corpus["files"]
        where = files[0]["path"] if len(files) == 1 else f"{corpus['name']} ({len(files)} files)"
        split = "standard split" if corpus.get("standard_splits") else "split"
        self.write(f"corpus {where}: {corpus['tokens']:,} {self.unit}s, sha256 {corpus['sha256'][:12]}…, "
                   f"vocabulary {e.vocab_size}; {split} {e.train_chars:,} train / {e.val_chars:,} validation")
        resumed = f", resumed at step {e.resumed_from_step}" if e.resumed_from_step is not None else ""
        self.write(f"model {e.config.cell} {e.config.num_layers}x{e.config.hidden_size}, "
                   f"{e.num_parameters:,} parameters, on {e.device} in {e.precision}{resumed}; "
                   f"run directory {e.run_dir}")
        if e.world_size > 1:
            self.write(f"{e.world_size} processes x batch {e.config.batch_size} = effective batch "
                       f"{e.world_size * e.config.batch_size} streams; learning rate {e.config.lr:g} (not scaled)")
        if self.live:
            # The status goes in {desc}, not {postfix}: tqdm puts ", " before a
            # postfix, which showed as "00:03<00:10 , step 500".
            self.bar = tqdm(total=_PROGRESS_UNITS, file=self.err, dynamic_ncols=True, leave=False,
                            bar_format="{percentage:3.0f}%|{bar}| {elapsed}<{remaining} {desc}")

    def step(self, e: StepProgress) -> None:
        status = (f"step {e.step} | loss {e.train_loss:.3f} | {self.val_text} | lr {e.lr:.2e} | "
                  f"{_rate(e.chars_per_second)} {self.unit}/s")
        if self.bar is not None:
            self.bar.n = int(e.progress * _PROGRESS_UNITS)
            self.bar.set_description_str(status, refresh=True)
        elif time.monotonic() - self.last_plain_line >= _PLAIN_LINE_SECONDS:
            self.last_plain_line = time.monotonic()
            self.write(f"{e.progress:4.0%} {status}")

    def evaluated(self, e: Evaluated) -> None:
        self.val_text = f"val {e.val_loss:.3f} ({e.val_bits_per_char:.2f} {'bpb' if self.unit == 'byte' else 'bpc'})"
        marker = " (best)" if e.is_best else ""
        self.write(f"step {e.step}: {self.val_text}{marker}")
        if e.sample:
            self.write("  " + e.sample.replace("\n", "\n  "))

    def best_text(self, e: RunFinished) -> str:
        # The loop reports NaN when no validation pass has finished: a run
        # stopped before its first eval_every steps has no best to show.
        if math.isnan(e.best_val_loss):
            return "no validation pass yet"
        return f"best val {e.best_val_loss:.4f} nats/{self.unit} at step {e.best_step}"

    def finished(self, e: RunFinished) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        why = {"max_steps": "reached --max-steps", "epochs": "reached --epochs",
               "time_budget": "time budget spent", "interrupted": "interrupted"}[e.reason]
        minutes, seconds = divmod(int(e.elapsed_seconds), 60)
        self.write(f"done: {why} after {e.step} steps in {minutes}m{seconds:02d}s; "
                   f"{self.best_text(e)}; " + (f"checkpoints in {e.run_dir}" if e.step else "nothing was saved"))
        if e.skipped_steps:
            self.write(f"note: {e.skipped_steps} step(s) were skipped for a NaN/inf loss or gradient")
