"""Scoring records: mean nats per character, the end symbol included (makemore's convention).

Each record is scored from its start state (its class's, when conditional)
to its end symbol; the figure is the summed cross-entropy over every scored
position divided by their number, so a long record weighs by its length.
Deterministic: batches in a fixed order, sums in fp64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charlm.nats import PerCharacter
from charlm.tasks.lines.data import IGNORE, EncodedRecords, evaluation_batches, pad_batch


@dataclass(frozen=True)
class RecordStats(PerCharacter):
    records: int
    characters: int  # scored positions: characters plus one end symbol per record
    nats_per_char: float
    skipped: int = 0  # records dropped for unknown characters


@torch.inference_mode()
def score_records(model, records: EncodedRecords, device: torch.device, shard: tuple[int, int] = (0, 1),
                  amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Summed cross-entropy (nats, fp64) of the records, or of one shard's batches of them."""
    rank, world_size = shard
    total = torch.zeros((), dtype=torch.float64, device=device)
    batches = evaluation_batches(records)
    mine = np.array_split(np.arange(len(batches)), world_size)[rank]
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            for index in mine:
                inputs, targets, classes = pad_batch(records, batches[index])
                logits, _ = model(inputs.to(device), classes=None if classes is None else classes.to(device))
                total += F.cross_entropy(logits.flatten(0, 1).float(), targets.to(device).flatten(),
                                         ignore_index=IGNORE, reduction="sum")  # (T, B, V) -> one sum
    finally:
        model.train(was_training)
    return total


def evaluate_records(model, records: EncodedRecords, device: torch.device | None = None,
                     amp_dtype: torch.dtype | None = None, skipped: int = 0) -> RecordStats:
    device = device or next(model.parameters()).device
    total = score_records(model, records, device, amp_dtype=amp_dtype)
    return RecordStats(records=len(records), characters=records.targets,
                       nats_per_char=float(total) / records.targets, skipped=skipped)
