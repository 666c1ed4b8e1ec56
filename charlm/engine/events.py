"""What a training run reports as it goes: the events `train()` yields.

The engine yields these and never prints; the CLI renders them, a notebook
can collect them, a TensorBoard writer can log them. Every task reports
through the same four events, and a `Notice` when there is something to say
once: task-specific figures travel in `metrics` (named as in `metrics.jsonl`)
and `data` (the task's facts about its data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from charlm.config import TrainConfig


@dataclass(frozen=True)
class RunStarted:
    run_dir: Path
    task: str  # lm | lines | classify | seq2seq
    config: TrainConfig
    data: dict  # the task's facts about its data: corpus files and checksum, counts, split sizes
    data_summary: str  # those facts in one line, for people
    model_summary: str  # e.g. "lstm 2x256"
    unit: str  # what throughput counts: char, byte or example
    device: str
    precision: str  # fp32, bf16 or fp16: the autocast dtype actually used
    world_size: int  # processes; each reads config.batch_size sequences
    num_parameters: int
    resumed_from_step: int | None


@dataclass(frozen=True)
class StepProgress:
    step: int
    epoch: int
    progress: float  # 0..1 towards the nearest bound
    train_loss: float  # mean over the steps since the last report (nats per unit for language models)
    lr: float
    tokens_per_second: float  # units (RunStarted.unit) per second, all processes together
    elapsed_seconds: float
    grad_norm: float | None = None  # global gradient norm before clipping, of the last step


@dataclass(frozen=True)
class Evaluated:
    step: int
    metrics: dict  # e.g. {"val_loss": 1.48, "val_bits_per_char": 2.13}
    main_metric: str  # the key of `metrics` that picks the best checkpoint
    higher_is_better: bool
    is_best: bool
    preview: str  # what the task shows of the model at this point: a sample, a few predictions
    elapsed_seconds: float = 0.0

    @property
    def score(self) -> float:
        return self.metrics[self.main_metric]

    @property
    def val_loss(self) -> float:
        return self.metrics.get("val_loss", math.nan)


@dataclass(frozen=True)
class RunFinished:
    step: int
    reason: str  # max_steps | epochs | time_budget | patience | interrupted
    best_score: float | None  # None: no validation pass finished
    best_step: int
    main_metric: str
    elapsed_seconds: float
    run_dir: Path
    skipped_steps: int
    metrics: dict = field(default_factory=dict)  # the best evaluation's metrics


@dataclass(frozen=True)
class Notice:
    """Something a person should know about the run, said once in one line (the CLI shows it on stderr)."""

    kind: str  # took_over: an unfinished start was taken over | slow_step: one step is a sizeable part of the budget
    message: str
