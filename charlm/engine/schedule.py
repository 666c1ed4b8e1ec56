"""Learning-rate schedule: linear warmup, then decay to a floor by the end of the run.

PyTorch's schedulers count steps, but a run bounded by `--time-budget` does
not know its step count in advance. So the decay here is a function of the
run's *progress* in [0, 1] (steps, epochs or seconds, whichever bound is
nearest), which lets a time-bounded run still reach its floor at the end.
No torch import: the numpy engine shares this schedule.
"""

from __future__ import annotations

import math


def lr_multiplier(schedule: str, step: int, warmup_steps: int, decay_progress: float,
                  min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate for the step about to be taken.

    step: optimiser steps already taken; decay_progress: how far through the
    decay phase (after warmup) the run is, 0..1.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    p = min(max(decay_progress, 0.0), 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == "exponential":
        # Geometric from 1 to the floor; a floor of 0 is approached as 1e-3.
        return max(min_lr_ratio, 1e-3) ** p
    raise ValueError(f"unknown schedule {schedule!r}")


def run_progress(config, state, batches_per_epoch: int) -> float:
    """How far the run is towards whichever bound is nearest, 0..1."""
    parts = [0.0]
    if config.max_steps:
        parts.append(state.step / config.max_steps)
    if config.epochs:
        parts.append((state.epoch + state.batch / max(batches_per_epoch, 1)) / config.epochs)
    budget = config.time_budget_seconds
    if budget:
        parts.append(state.elapsed_seconds / budget)
    return min(max(parts), 1.0)


def current_lr(config, state, progress: float) -> float:
    """The learning rate of the next step. The decay starts where warmup ended, measured in progress,
    so a resumed run with new bounds continues its schedule with no second warmup."""
    if state.step >= config.warmup_steps and state.decay_start_progress is None:
        state.decay_start_progress = progress
    start = state.decay_start_progress or 0.0
    decay = (progress - start) / (1.0 - start) if start < 1.0 else 1.0
    return config.lr * lr_multiplier(config.schedule, state.step, config.warmup_steps, decay, config.min_lr_ratio)
