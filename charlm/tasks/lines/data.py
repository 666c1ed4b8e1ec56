"""Records as padded batches: encoded once into one flat array, bucketed by length, reshuffled each epoch.

A record of n characters is the pair

    inputs   <end> c1 c2 ... cn          (n + 1 ids)
    targets  c1 c2 ... cn <end>

and a batch stacks records as columns of a (T, B) block, T the longest
record's n + 1. Shorter columns are padded: inputs with the end symbol
(any id would do: an RNN reads left to right, so what follows a record's
last character cannot change its predictions) and targets with -1, which
the loss ignores. So padding never reaches the loss, and a test changes what
the padding holds to prove it.

Bucketing: each epoch shuffles the records with a generator seeded by
(seed, epoch), sorts them by length within pools of 50 global batches (so a
batch holds records of similar length and little padding), cuts the pools
into global batches and shuffles the batches' order. The plan depends on
(seed, epoch) alone, so a resumed run rebuilds it. Under torchrun each rank
takes its block of every global batch's records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charlm.engine.task import Batch
from charlm.text.vocab import RecordVocab

POOL_BATCHES = 50  # batches sorted together: similar lengths within a batch, randomness between them
IGNORE = -1  # target id the loss skips


@dataclass(frozen=True)
class EncodedRecords:
    """Records as one flat id array: record i is ids[starts[i]:starts[i] + lengths[i]] (no end symbol)."""

    ids: np.ndarray  # (N_chars,) int64
    starts: np.ndarray  # (R,)
    lengths: np.ndarray  # (R,)
    classes: np.ndarray | None  # (R,) class ids, or None without conditioning

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def targets(self) -> int:
        """Positions scored: every character plus one end symbol per record."""
        return int(self.lengths.sum()) + len(self.lengths)

    def subset(self, indices) -> "EncodedRecords":
        indices = np.asarray(indices, dtype=np.int64)
        return EncodedRecords(self.ids, self.starts[indices], self.lengths[indices],
                              None if self.classes is None else self.classes[indices])


def encode_records(texts: list[str], vocab: RecordVocab, class_ids: list[int] | None = None,
                   skip_unknown: bool = False) -> tuple[EncodedRecords, int]:
    """Encode every record in one vectorised pass. Returns (records, number dropped for unknown characters).

    With skip_unknown, a record holding a character the vocabulary lacks is
    dropped (and counted); without it that is a VocabularyError.
    """
    if skip_unknown:
        known = set(vocab.chars)
        keep = [i for i, text in enumerate(texts) if set(text) <= known]
        dropped = len(texts) - len(keep)
        texts = [texts[i] for i in keep]
        class_ids = None if class_ids is None else [class_ids[i] for i in keep]
    else:
        dropped = 0
    lengths = np.array([len(text) for text in texts], dtype=np.int64)
    ids, _ = vocab.encode("".join(texts))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
    classes = None if class_ids is None else np.asarray(class_ids, dtype=np.int64)
    return EncodedRecords(ids.numpy(), starts, lengths, classes), dropped


def pad_batch(records: EncodedRecords, rows: np.ndarray, pad_id: int = RecordVocab.END
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Records `rows` -> inputs (T, B), targets (T, B) padded with -1, class ids (B,) or None."""
    lengths = records.lengths[rows]  # (B,)
    steps = int(lengths.max()) + 1
    position = np.arange(steps)[:, None]  # (T, 1)
    inside = position < lengths[None, :]  # (T, B): a character of the record
    gather = np.where(inside, records.starts[rows][None, :] + position, 0)  # (T, B)
    chars = np.where(inside, records.ids[gather], IGNORE)  # (T, B)
    targets = np.where(position == lengths[None, :], RecordVocab.END, chars)  # the end symbol after the last
    inputs = np.full((steps, len(rows)), pad_id, dtype=np.int64)
    inputs[0] = RecordVocab.END  # every record starts from the end symbol
    inputs[1:] = np.where(inside[:-1], chars[:-1], pad_id)
    classes = None if records.classes is None else torch.from_numpy(records.classes[rows])
    return torch.from_numpy(inputs), torch.from_numpy(targets), classes


class RecordEpoch:
    """One epoch's bucketed batches; this rank reads its block of each global batch."""

    def __init__(self, records: EncodedRecords, batch_size: int, world_rank: int, world_size: int,
                 seed: int, epoch: int):
        self.records, self.batch_size, self.rank = records, batch_size, world_rank
        global_batch = batch_size * world_size
        generator = np.random.default_rng([seed, epoch])
        order = generator.permutation(len(records))
        pool = global_batch * POOL_BATCHES
        pools = [order[i:i + pool] for i in range(0, len(order), pool)]
        # Stable sort by length inside each pool; the last incomplete global batch waits for the next epoch's
        # shuffle, so every batch has the same number of records on every rank.
        ordered = np.concatenate([p[np.argsort(records.lengths[p], kind="stable")] for p in pools])
        n_batches = len(ordered) // global_batch
        batches = ordered[:n_batches * global_batch].reshape(n_batches, global_batch)
        self.batches = batches[generator.permutation(n_batches)]

    def __len__(self) -> int:
        return len(self.batches)

    def batch(self, index: int) -> Batch:
        global_rows = self.batches[index]
        rows = global_rows[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        inputs, targets, classes = pad_batch(self.records, rows)
        units = int(self.records.lengths[global_rows].sum()) + len(global_rows)  # characters + end symbols
        return Batch(tensors=(inputs, targets, classes), units=units, normaliser=units)


def evaluation_batches(records: EncodedRecords, max_tokens: int = 16384) -> list[np.ndarray]:
    """Record indices in batches of similar length, at most max_tokens padded positions each, in a fixed order."""
    order = np.argsort(records.lengths, kind="stable")
    batches, current, longest = [], [], 0
    for index in order:
        longest_if_added = max(longest, int(records.lengths[index]) + 1)
        if current and longest_if_added * (len(current) + 1) > max_tokens:
            batches.append(np.array(current))
            current, longest_if_added = [], int(records.lengths[index]) + 1
        current.append(index)
        longest = longest_if_added
    if current:
        batches.append(np.array(current))
    return batches
