"""A moving average of the weights (`--ema-decay`): what the run evaluates, selects and saves.

Adam's last iterate wanders around the minimum it is near, by an amount
set by the learning rate; the average of the recent iterates sits closer to
it (Polyak averaging; AWD-LSTM's averaged SGD does the same for SGD). The
average is PyTorch's AveragedModel, updated after every optimiser step
with an exponential moving average whose decay warms up as TensorFlow's
ExponentialMovingAverage does, min(decay, (1 + n) / (10 + n)) after n
updates, so an evaluation early in a run is not an average with the random
initial weights.

Training goes on from the live weights; evaluation, previews and the
`best` and `last` weights files use the average, so `charlm sample` and
`charlm eval` read the model the run scored. A `last` checkpoint also keeps
the live weights (in its state file, under `training_weights.`) and the
number of updates, so a resumed run continues both exactly. Averaging cannot
be turned on or off when resuming (resume.py): the best score so far would
then compare one kind of weights with the other. Its decay may change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from charlm.engine.checkpoint import load_weights
from charlm.errors import CheckpointError

# The state file's prefix for the live weights of a run that averages.
TRAINING_PREFIX = "training_weights."


def _warming_ema(decay: float, updates: Callable[[], int], warmup: float):
    """AveragedModel's multi_avg_fn: an EMA whose decay grows to `decay` over the first updates.

    updates() counts the updates before this one. It reads AveragedModel's own count, which lives on the
    CPU: the copy of it AveragedModel passes in is on the model's device, and reading that would make a GPU
    wait at every step.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], _n_averaged: torch.Tensor) -> None:
        n = updates()
        rate = 1.0 - min(decay, (1.0 + n) / (warmup + n))
        torch._foreach_lerp_(averaged, current, rate)

    return update


class WeightAverage:
    """The EMA of a model's weights, its resume state, and the module evaluation uses.

    warmup: the 10 of min(decay, (1 + n) / (10 + n)); bench/weight_average.py tries others.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: float = 10.0):
        # Only the parameters: no charlm model has buffers to follow (a BatchNorm's statistics would be).
        self.averaged = AveragedModel(model, multi_avg_fn=_warming_ema(decay, lambda: self.updates, warmup))
        self._flatten()

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @property
    def updates(self) -> int:
        return int(self.averaged.n_averaged)  # a CPU tensor (AveragedModel built without a device)

    def update(self, model: nn.Module) -> None:
        """After an optimiser step: fold the live weights into the average (the first update copies them)."""
        self.averaged.update_parameters(model)

    def resume_parts(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON) a `last` checkpoint adds: the live weights and the number of updates."""
        tensors = {TRAINING_PREFIX + name: value for name, value in model.state_dict().items()}
        return tensors, {"weight_average": {"updates": self.updates}}

    def _restore(self, saved_weights: dict[str, torch.Tensor], updates: int, source: Path) -> None:
        load_weights(self.module, saved_weights, source)
        self.averaged.n_averaged.fill_(updates)  # AveragedModel copies instead of averaging while it is 0
        self._flatten()

    def _flatten(self) -> None:
        # A copied nn.LSTM's weights are separate tensors; cuDNN wants them in one buffer (and warns at
        # every call otherwise). The in-place updates and loads keep the views valid.
        for module in self.module.modules():
            if isinstance(module, nn.RNNBase):
                module.flatten_parameters()


def start_average(model: nn.Module, decay: float, point) -> WeightAverage | None:
    """The run's average (None without --ema-decay); on resume, the model's live weights and the average put back.

    point: the ResumePoint of a resumed run, or None. A run that averaged saved
    the average as its weights and the live weights in its state file; the
    optimisation's restore() has loaded the former into the model.
    """
    live = {} if point is None else {name[len(TRAINING_PREFIX):]: value for name, value in point.tensors.items()
                                     if name.startswith(TRAINING_PREFIX)}
    counted = None if point is None else point.record["trainer"].get("weight_average")
    if point is not None and bool(live) != (counted is not None):
        raise CheckpointError(f"resume state in {point.weights_path.parent} is damaged: it holds "
                              f"{'the live weights' if live else 'the count'} of a weight average without "
                              f"{'its count' if live else 'the live weights'}; start a new run in another --out")
    if live:
        load_weights(model, live, point.weights_path)
    if decay <= 0:
        return None
    average = WeightAverage(model, decay)
    if counted is not None:
        try:
            updates = int(counted["updates"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"resume state in {point.weights_path.parent} is damaged: weight average {exc}; "
                                  "start a new run in another --out") from None
        average._restore(point.weights, updates, point.weights_path)
    return average
