"""Pairs as padded batches: the two vocabularies, flat id arrays, batches bucketed by source length.

A pair (x1 .. xm, y1 .. yn) becomes three columns of a batch:

    source   x1 x2 ... xm              (S, B), padded with <pad>; its lengths (B,)
    decoder  <start> y1 ... yn         (T, B), T the longest target's n + 1
    expected y1 y2 ... yn <end>        (T, B), padded with <pad>, which the loss ignores

so the decoder reads the previous character and is scored on the next, the
end symbol included. Padding never reaches the loss or the attention: the
encoder runs over packed sources, the attention masks positions past each
source's length, and expected outputs past a target's end are <pad>, which
the loss skips (a test changes what the padding holds and gets the same loss
and gradients).

Bucketing: each epoch shuffles the pairs with a generator seeded by
(seed, epoch), sorts them by source length (then target length) within pools
of 50 global batches, cuts the pools into global batches and shuffles the
batches' order: similar lengths within a batch, randomness between them, and
a plan that depends on (seed, epoch) alone, so a resumed run rebuilds it.
Under torchrun each rank takes its block of every global batch's pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charlm.engine.task import Batch
from charlm.text.pairs import Pair
from charlm.text.vocab import PairVocab

POOL_BATCHES = 50  # batches sorted together: similar lengths within a batch, randomness between them
PAD, START, END = PairVocab.PAD, PairVocab.START, PairVocab.END


@dataclass(frozen=True)
class PairVocabs:
    """A seq2seq model's two vocabularies (what `Checkpoint.vocab` holds for a seq2seq run)."""

    source: PairVocab
    target: PairVocab

    @classmethod
    def from_pairs(cls, pairs: list[Pair]) -> "PairVocabs":
        return cls(PairVocab.from_texts(p.source for p in pairs), PairVocab.from_texts(p.target for p in pairs))

    @property
    def unit(self) -> str:
        return "char"


@dataclass(frozen=True)
class Side:
    """One side of the pairs as one flat array: text i is ids[starts[i]:starts[i] + lengths[i]]."""

    ids: np.ndarray  # (N_chars,) int64
    starts: np.ndarray  # (P,)
    lengths: np.ndarray  # (P,)

    @classmethod
    def encode(cls, texts: list[str], vocab: PairVocab) -> "Side":
        """Every text in one vectorised pass (an unknown character is a VocabularyError)."""
        lengths = np.array([len(text) for text in texts], dtype=np.int64)
        ids, _ = vocab.encode("".join(texts))
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
        return cls(ids.numpy(), starts, lengths)

    def padded(self, rows: np.ndarray, steps: int, pad_id: int) -> np.ndarray:
        """Texts `rows` as columns (steps, B), padded with pad_id."""
        position = np.arange(steps)[:, None]  # (T, 1)
        inside = position < self.lengths[rows][None, :]  # (T, B)
        gather = np.where(inside, self.starts[rows][None, :] + position, 0)  # (T, B)
        return np.where(inside, self.ids[gather], pad_id)  # (T, B)

    def subset(self, indices: np.ndarray) -> "Side":
        return Side(self.ids, self.starts[indices], self.lengths[indices])


@dataclass(frozen=True)
class EncodedPairs:
    source: Side
    target: Side

    @classmethod
    def encode(cls, pairs: list[Pair], vocabs: PairVocabs) -> "EncodedPairs":
        return cls(Side.encode([p.source for p in pairs], vocabs.source),
                   Side.encode([p.target for p in pairs], vocabs.target))

    def __len__(self) -> int:
        return len(self.source.lengths)

    @property
    def targets(self) -> int:
        """Positions scored: every target character plus one end symbol per pair."""
        return int(self.target.lengths.sum()) + len(self)

    def subset(self, indices) -> "EncodedPairs":
        indices = np.asarray(indices, dtype=np.int64)
        return EncodedPairs(self.source.subset(indices), self.target.subset(indices))


def pair_batch(pairs: EncodedPairs, rows: np.ndarray, pad_id: int = PAD
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs `rows` -> source (S, B), source lengths (B,), decoder input (T, B), expected output (T, B).

    pad_id fills the source and decoder-input padding (tests vary it); the
    expected output is always padded with PAD, the id the loss ignores.
    """
    source_lengths = pairs.source.lengths[rows]  # (B,)
    target_lengths = pairs.target.lengths[rows]  # (B,)
    source = pairs.source.padded(rows, int(source_lengths.max()), pad_id)  # (S, B)
    steps = int(target_lengths.max()) + 1
    chars = pairs.target.padded(rows, steps, PAD)  # (T, B): y1 .. yn, then PAD
    position = np.arange(steps)[:, None]  # (T, 1)
    expected = np.where(position == target_lengths[None, :], END, chars)  # (T, B): the end symbol after yn
    decoder = np.full((steps, len(rows)), pad_id, dtype=np.int64)  # (T, B)
    decoder[0] = START
    decoder[1:] = np.where(position[:-1] < target_lengths[None, :], chars[:-1], pad_id)  # (T-1, B)
    return (torch.from_numpy(source), torch.from_numpy(source_lengths.copy()), torch.from_numpy(decoder),
            torch.from_numpy(expected))


class PairEpoch:
    """One epoch's bucketed batches; this rank reads its block of each global batch."""

    def __init__(self, pairs: EncodedPairs, batch_size: int, world_rank: int, world_size: int, seed: int,
                 epoch: int):
        self.pairs, self.batch_size, self.rank = pairs, batch_size, world_rank
        global_batch = batch_size * world_size
        generator = np.random.default_rng([seed, epoch])
        order = generator.permutation(len(pairs))
        pool = global_batch * POOL_BATCHES
        ordered = np.concatenate([self._by_length(order[i:i + pool]) for i in range(0, len(order), pool)])
        # The last incomplete global batch waits for the next epoch's shuffle, so every
        # batch has the same number of pairs on every rank.
        n_batches = len(ordered) // global_batch
        batches = ordered[:n_batches * global_batch].reshape(n_batches, global_batch)
        self.batches = batches[generator.permutation(n_batches)]

    def _by_length(self, rows: np.ndarray) -> np.ndarray:
        """Rows sorted by source length, then target length (stable)."""
        return rows[np.lexsort((self.pairs.target.lengths[rows], self.pairs.source.lengths[rows]))]

    def __len__(self) -> int:
        return len(self.batches)

    def batch(self, index: int) -> Batch:
        global_rows = self.batches[index]
        rows = global_rows[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        units = int(self.pairs.target.lengths[global_rows].sum()) + len(global_rows)  # characters + end symbols
        return Batch(tensors=pair_batch(self.pairs, rows), units=units, normaliser=units)


def evaluation_batches(pairs: EncodedPairs, max_tokens: int = 16384) -> list[np.ndarray]:
    """Pair indices in batches of similar length, at most max_tokens padded positions each, in a fixed order."""
    order = np.lexsort((pairs.target.lengths, pairs.source.lengths))
    return _fill(order, pairs.source.lengths + pairs.target.lengths + 1, max_tokens)


def length_batches(lengths: np.ndarray, max_tokens: int, max_rows: int) -> list[np.ndarray]:
    """Indices of texts of these lengths in batches of similar length (at most max_rows each), in a fixed order."""
    return _fill(np.argsort(lengths, kind="stable"), np.asarray(lengths), max_tokens, max_rows)


def _fill(order: np.ndarray, sizes: np.ndarray, max_tokens: int, max_rows: int | None = None) -> list[np.ndarray]:
    batches, current, longest = [], [], 0
    for index in order:
        longest_if_added = max(longest, int(sizes[index]), 1)
        full = max_rows is not None and len(current) >= max_rows
        if current and (full or longest_if_added * (len(current) + 1) > max_tokens):
            batches.append(np.array(current))
            current, longest_if_added = [], max(int(sizes[index]), 1)
        current.append(index)
        longest = longest_if_added
    if current:
        batches.append(np.array(current))
    return batches
