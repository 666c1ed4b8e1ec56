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
number of updates, so a resumed run continues both exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from charlm.engine.checkpoint import load_weights
from charlm.errors import CheckpointError

# The state file's prefix for the live weights of a run that averages.
TRAINING_PREFIX = "training_weights."


def _warming_ema(decay: float):
    """AveragedModel's multi_avg_fn: an EMA whose decay grows to `decay` over the first updates."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        updates = int(n_averaged)  # before this one (AveragedModel copies the weights at the first)
        rate = 1.0 - min(decay, (1.0 + updates) / (10.0 + updates))
        if torch.is_floating_point(averaged[0]):  # AveragedModel groups tensors by dtype
            torch._foreach_lerp_(averaged, current, rate)
        else:  # an integer buffer (a counter) is not averaged: it follows the model
            torch._foreach_copy_(averaged, current)

    return update


class WeightAverage:
    """The EMA of a model's weights, its resume state, and the module evaluation uses."""

    def __init__(self, model: nn.Module, decay: float):
        self.averaged = AveragedModel(model, multi_avg_fn=_warming_ema(decay), use_buffers=True)
        self._flatten()

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @property
    def updates(self) -> int:
        return int(self.averaged.n_averaged)

    def update(self, model: nn.Module) -> None:
        """After an optimiser step: fold the live weights into the average."""
        self.averaged.update_parameters(model)

    def resume_parts(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON) a `last` checkpoint adds: the live weights and the number of updates."""
        tensors = {TRAINING_PREFIX + name: value for name, value in model.state_dict().items()}
        return tensors, {"weight_average": {"updates": self.updates}}

    def restore(self, saved_weights: dict[str, torch.Tensor], trainer: dict, source) -> None:
        """Resume: a run that averaged saved the average as its weights, and its number of updates.

        A run that did not average before starts its average here, from the
        weights it trained (restore_live_weights has put them in the model).
        """
        if "weight_average" not in trainer:
            return
        load_weights(self.module, saved_weights, source)
        try:
            self.averaged.n_averaged.fill_(int(trainer["weight_average"]["updates"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"resume state in {source} is damaged: weight average {exc}; "
                                  "start a new run in another --out") from None
        self._flatten()

    def _flatten(self) -> None:
        # A copied nn.LSTM's weights are separate tensors; cuDNN wants them in one buffer (and warns at
        # every call otherwise). The in-place EMA updates keep the views valid.
        for module in self.module.modules():
            if isinstance(module, nn.RNNBase):
                module.flatten_parameters()


def restore_live_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source) -> None:
    """A checkpoint of a run that averaged holds the average as its weights: put the live ones back."""
    live = {name[len(TRAINING_PREFIX):]: value for name, value in tensors.items() if name.startswith(TRAINING_PREFIX)}
    if live:
        load_weights(model, live, source)
