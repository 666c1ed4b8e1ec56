"""One optimiser step, the same for every task: autocast, loss scaling, clipping, skipping NaN/inf.

The task gives the summed loss of its share of the batch; the step divides
it by the global batch's normaliser, backpropagates (DDP averages the
gradients of the ranks meanwhile), unscales, measures and clips the global
gradient norm, and, unless the loss or the norm is not finite on any rank,
sets the learning rate and updates the weights.

This is the torch engine's strategy. The numpy engine's (numpy_step.py) has
the same interface (OptimisationStrategy); optimisation_for() picks one per
run, and the loop never asks which it has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from charlm.config import TrainConfig
from charlm.engine.distributed import World
from charlm.engine.resume import ResumePoint, optimizer_parts
from charlm.engine.runtime import precision_name
from charlm.engine.state import TrainState
from charlm.engine.task import Batch, Task


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # Decay matrices only: decaying biases and gains just fights the data.
    decayed = [p for p in model.parameters() if p.dim() >= 2]
    plain = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decayed, "weight_decay": config.weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    # The fused kernel updates every tensor in one pass: about a third of the
    # foreach optimiser's time per step on a CPU (bench/train_throughput.py).
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=config.lr, fused=fused)


@dataclass(frozen=True)
class StepResult:
    loss: torch.Tensor | float | None  # the batch's mean loss (detached), None when the step was skipped
    carry: Any  # for the next batch
    grad_norm: torch.Tensor | float | None  # before clipping


class OptimisationStrategy(Protocol):
    """What the loop asks of an engine: a step, and what evaluation, checkpoints and resume need."""

    amp_dtype: torch.dtype | None  # autocast of the task's evaluation
    precision: str  # for the start of the run: "fp32", "bf16", "float64, numpy engine", ...

    def step(self, task: Task, batch: Batch, carry: Any, lr: float,
             agree_to_skip: Callable[[bool], bool]) -> StepResult: ...

    def sync_model(self) -> None:
        """Bring the torch model up to date before the loop evaluates, previews or saves it."""

    def to_task_carry(self, carry: Any) -> Any:
        """The carry as the task's carry_tensors() takes it."""

    def from_task_carry(self, carry: Any) -> Any:
        """The task's restore_carry() result as step() takes it."""

    def resume_parts(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON) of the optimizer and anything else an exact resume needs, for resume_state()."""

    def restore(self, point: ResumePoint, world: World) -> TrainState:
        """Weights, optimizer and RNG states from a checkpoint; returns the counters."""

    def record(self) -> dict:
        """What a checkpoint records of the engine."""


def optimisation_for(config: TrainConfig, world: World) -> type:
    """The strategy class of config.engine, once it is clear that it can run here (else a one-line error)."""
    if config.engine == "numpy":
        from charlm.engine.numpy_step import NumpyOptimisation  # imported only by numpy runs

        NumpyOptimisation.check(world)
        return NumpyOptimisation
    return Optimisation


class Optimisation:
    """The model's optimiser, loss scaler and (under torchrun) DDP wrapper, and the step that uses them."""

    def __init__(self, model: nn.Module, config: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None,
                 world: World):
        self.model, self.config, self.device, self.amp_dtype, self.world = model, config, device, amp_dtype, world
        self.optimizer = make_optimizer(model, config)
        # Loss scaling keeps fp16 gradients from underflowing; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.params = list(model.parameters())
        # DDP averages gradients across ranks during backward; evaluation, previews
        # and checkpoints use the plain module underneath.
        self.network = (DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
                        if world.distributed else model)

    @property
    def precision(self) -> str:
        return precision_name(self.amp_dtype)

    def sync_model(self) -> None:
        pass  # the model is what trains

    def to_task_carry(self, carry: Any) -> Any:
        return carry

    def from_task_carry(self, carry: Any) -> Any:
        return carry

    def resume_parts(self) -> tuple[dict[str, torch.Tensor], dict]:
        return optimizer_parts(self.optimizer, self.scaler)

    def restore(self, point: ResumePoint, world: World) -> TrainState:
        return point.restore(self.model, self.optimizer, self.scaler, world)

    def record(self) -> dict:
        return {"engine": "torch"}

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def step(self, task: Task, batch: Batch, carry: Any, lr: float,
             agree_to_skip: Callable[[bool], bool]) -> StepResult:
        """One step on `batch`. agree_to_skip(bad_here) -> whether any rank found its step bad."""
        with self.autocast():
            loss_sum, carry = task.loss(self.network, batch, carry, self.device)
        # DDP averages the ranks' gradients: scaling each rank's sum by size/normaliser
        # makes that average the gradient of the global batch's mean loss.
        loss = loss_sum * (self.world.size / batch.normaliser)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradient (a no-op without fp16 loss scaling)
        # clip_grad_norm_ with an infinite bound measures without clipping.
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.clip if self.config.clip > 0 else math.inf)
        if agree_to_skip(not bool(torch.isfinite(loss) and torch.isfinite(norm))):
            if self.scaler.is_enabled():
                self.scaler.update()  # fp16 overflow: a smaller loss scale for the next step
            return StepResult(loss=None, carry=None, grad_norm=None)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # The local mean of this rank's share, for the progress report (ranks' reports are summed there).
        return StepResult(loss=loss.detach() / self.world.size, carry=carry, grad_norm=norm.detach())
