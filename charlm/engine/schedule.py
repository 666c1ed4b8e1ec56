"""Learning-rate schedule: linear warmup, then decay to a floor by the end of the run.

PyTorch's schedulers count steps, but a run bounded by `--time-budget` does
not know its step count in advance. So the decay here is a function of the
run's *progress* in [0, 1] (steps, epochs or seconds, whichever bound is
nearest), which lets a time-bounded run still reach its floor at the end.
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
