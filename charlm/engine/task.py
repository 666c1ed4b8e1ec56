"""The contract between the training engine and a task.

The engine (loop.py) owns everything every task needs: the optimizer and
schedule, the bounds, autocast and loss scaling, clipping, NaN skipping, the
evaluation cadence, checkpoints, exact resume, processes, progress. A task
owns what is particular to one kind of model: its data, its batches, its
model, the loss of a batch, its metrics, and what it shows of itself at each
evaluation. The loop calls a task only through the methods below and never
asks which task it is (spaCy's one loop over every component, makemore's one
forward contract).

Batches are planned per epoch from (seed, epoch) alone, so a resumed run
rebuilds the same plan and continues at the same batch without storing it.
Under torchrun every rank plans the same global batch and takes its share;
a batch therefore knows the size of the whole global batch, and the loss is
normalised by that, so N processes train the same weights as one process
reading all N shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from charlm.config import TrainConfig
from charlm.engine.distributed import World


@dataclass(frozen=True)
class Batch:
    """One rank's share of one global batch."""

    tensors: tuple[torch.Tensor, ...]  # what the task's loss reads, on the CPU
    units: int  # units (characters, examples) in the global batch: throughput counts these
    normaliser: float  # the global batch's loss denominator: units, or summed example weights


class EpochPlan(Protocol):
    """The batches of one epoch, in order; the same number on every rank."""

    def __len__(self) -> int: ...

    def batch(self, index: int) -> Batch: ...


@dataclass(frozen=True)
class Evaluation:
    """A task's validation figures: `metrics` named as in metrics.jsonl (val_loss, val_accuracy, ...)."""

    metrics: dict[str, float]


class Task(Protocol):
    """What the engine asks of a task (see tasks/lm/task.py for a complete example).

    Optional: `estimate_activation_bytes(world, element_size) -> int`, the
    bytes one batch of this rank keeps for backward at `element_size` bytes
    per autocast value. The engine adds it to the parameters' share when it
    checks that a run fits in memory (memory.py); a task without it is
    checked on its parameters alone. Optional too: `batch_flags`, the flags
    that shrink a batch, for the advice when one does not fit (default
    "--batch-size or --seq-len").
    """

    name: str  # lm | lines | classify | seq2seq: stored in every checkpoint
    config: TrainConfig
    unit: str  # what throughput counts: char, byte or example
    main_metric: str  # the metric that picks the best checkpoint
    higher_is_better: bool

    def prepare(self, world: World, resumed: dict | None) -> None:
        """Read and split the data, check it can train (raise CharlmError if not); write nothing.

        resumed: the checkpoint record when resuming, to check the data is the run's.
        """

    def data_facts(self) -> dict:
        """What the run records about its data (files, checksum, counts, split sizes)."""

    def data_summary(self) -> str:
        """Those facts in one line for people."""

    def build_model(self) -> nn.Module:
        """A freshly initialised model (the engine seeds the generator first).

        The engine also builds it once on the `meta` device to count its
        parameters, so it must create its tensors on the default device.
        """

    def model_summary(self) -> str: ...

    def record(self) -> dict:
        """What a checkpoint needs to rebuild the model for inference: spec, vocabulary, classes."""

    def epoch(self, epoch: int, world: World) -> EpochPlan: ...

    def loss(self, model: nn.Module, batch: Batch, carry: Any, device: torch.device) -> tuple[torch.Tensor, Any]:
        """(summed loss of this rank's share, fp32; the carry for the next batch).

        The carry is what a task hands from one batch to the next (the
        language model's hidden state); None at the start of every epoch and
        after a skipped step. The engine divides the sum by the batch's
        normaliser, so no task computes a mean that DDP would average wrongly.
        """

    def evaluate(self, model: nn.Module, device: torch.device, world: World,
                 amp_dtype: torch.dtype | None) -> Evaluation:
        """Score the validation split (every rank its shard, summed); deterministic."""

    def preview(self, model: nn.Module, device: torch.device, seed: int) -> str:
        """What to show of the model at an evaluation (rank 0 only): a sample, a few predictions."""

    def carry_tensors(self, carry: Any) -> dict[str, torch.Tensor]:
        """This rank's carry as named CPU tensors, for the resume state ({} when there is none)."""

    def join_carries(self, ranks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Every rank's carry_tensors() joined into one set (the whole global batch's)."""

    def restore_carry(self, tensors: dict[str, torch.Tensor], world: World, device: torch.device) -> Any:
        """This rank's part of join_carries()'s result, back on the device."""


class NoCarry:
    """The carry methods of a task whose batches hand nothing on to the next (records, pairs, texts)."""

    def carry_tensors(self, carry: Any) -> dict[str, torch.Tensor]:
        return {}

    def join_carries(self, ranks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {}

    def restore_carry(self, tensors: dict[str, torch.Tensor], world: World, device: torch.device) -> None:
        return None
