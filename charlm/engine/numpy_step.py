"""The numpy engine's strategy: charlm.numpy_rnn trains the lm task inside the one training loop.

optimisation_for() (step.py) picks this class for `--engine numpy`; it has the
torch Optimisation's interface, so the loop, the task's data layout, the
evaluation cadence, progress, metrics.jsonl and checkpoints are the torch
engine's. What differs:

- The weights, AdamW moments and dropout generator live in a NumpyCharRNN, in
  --dtype (float32 or float64). step() reads the batch's (x, y) as numpy views
  and carries the hidden state as numpy arrays; no torch tensor is made or
  copied inside a training step, so its time is numpy's alone.
- The torch CharRNN the loop built gives the starting weights (so a seed gives
  the torch engine's initial weights) and then serves evaluation, previews and
  checkpoints: sync_model() copies the numpy weights into it just before each,
  so the lm task's own evaluate() and preview() run unchanged and validation
  figures are those of the same weights (rounded to fp32 for a float64 run)
  under the torch engine.
- The weights file is fp32, as every checkpoint's; a float64 run also keeps its
  own weights in the state file (`params.*`), with the moments, the numpy
  generator's state (in the JSON) and the carried state, for an exact resume.

The loss is the mean over the window's T·B characters: the lm batch's
normaliser in one process, the only setting this engine runs in.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from charlm.config import TrainConfig
from charlm.engine.checkpoint import load_weights
from charlm.engine.distributed import World
from charlm.engine.resume import ResumePoint
from charlm.engine.state import TrainState
from charlm.engine.step import StepResult
from charlm.engine.task import Batch, Task
from charlm.errors import CharlmError
from charlm.numpy_rnn import NumpyCharRNN

PARAMS_PREFIX = "params."  # a float64 run's own weights in the state file


class NumpyOptimisation:
    # Evaluation runs the torch model in fp32 (no autocast), whatever the numpy dtype.
    amp_dtype = None

    @staticmethod
    def check(world: World) -> None:
        """Refuse what the config cannot show: more than one process (the config refuses the rest)."""
        if world.distributed:
            raise CharlmError(f"--engine numpy trains in one process, not {world.size}; "
                              "run it without torchrun, or use --engine torch")

    def __init__(self, model: torch.nn.Module, config: TrainConfig, device: torch.device,
                 amp_dtype: torch.dtype | None, world: World):
        self.model, self.config = model, config  # the lm task's CharRNN: model.spec is its ModelSpec
        self.precision = f"{config.dtype}, numpy engine"
        weights = {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}
        self.network = NumpyCharRNN(model.spec, weight_decay=config.weight_decay, clip=config.clip,
                                    dtype=config.dtype, seed=config.rng_seed, params=weights)
        self.synced = True  # whether the torch model holds the numpy weights

    def step(self, task: Task, batch: Batch, carry: Any, lr: float,
             agree_to_skip: Callable[[bool], bool]) -> StepResult:
        """One window: forward, BPTT, clipping and AdamW in numpy (the task's loss is the same cross-entropy)."""
        x, y = (tensor.numpy() for tensor in batch.tensors)  # (T, B) ids each, views of the layout
        result = self.network.train_step(x, y, carry, lr)  # leaves the weights alone if not finite
        if agree_to_skip(not result.applied):
            return StepResult(loss=None, carry=None, grad_norm=None)
        self.synced = False
        return StepResult(loss=result.loss, carry=result.state, grad_norm=result.grad_norm)

    def sync_model(self) -> None:
        if not self.synced:
            # load_state_dict copies into the model's fp32 tensors (rounding a float64 run's weights).
            self.model.load_state_dict({name: torch.from_numpy(value) for name, value in self.network.params.items()})
            self.synced = True

    def to_task_carry(self, carry: Any) -> Any:
        if carry is None:
            return None
        return tuple(map(torch.from_numpy, carry)) if isinstance(carry, tuple) else torch.from_numpy(carry)

    def from_task_carry(self, carry: Any) -> Any:
        dtype = self.network.dtype
        if carry is None:
            return None
        if isinstance(carry, tuple):
            return tuple(np.array(part.numpy(), dtype=dtype) for part in carry)
        return np.array(carry.numpy(), dtype=dtype)

    def resume_parts(self) -> tuple[dict[str, torch.Tensor], dict]:
        arrays, optimizer_info = self.network.optimizer_state()
        if self.network.dtype != np.float32:
            arrays = dict(arrays, **{PARAMS_PREFIX + name: value for name, value in self.network.params.items()})
        tensors = {name: torch.from_numpy(value) for name, value in arrays.items()}
        # The generator's state is a small dict of integers (PCG64's two 128-bit words): JSON holds them exactly.
        return tensors, {"optimizer": optimizer_info, "numpy_rng": self.network.rng.bit_generator.state}

    def restore(self, point: ResumePoint, world: World) -> TrainState:
        load_weights(self.model, point.weights, point.weights_path)  # checks every name and shape
        own = {name[len(PARAMS_PREFIX):]: value for name, value in point.tensors_under(PARAMS_PREFIX).items()}
        with point.damaged_if_malformed():
            self.network.load_state_dict({name: value.numpy() for name, value in (own or point.weights).items()})
            self.network.load_optimizer_state({name: value.numpy()
                                               for name, value in point.tensors_under("optimizer.").items()})
            self.network.rng.bit_generator.state = point.record["trainer"]["numpy_rng"]
        return point.restore_counters(world)

    def record(self) -> dict:
        return {"engine": "numpy", "dtype": self.config.dtype}
