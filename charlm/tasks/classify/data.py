"""Labelled texts for classification: deduplicated, split by class, encoded once, bucketed into batches.

Deduplication. The names data holds Arabic.txt's 2,000 lines but only 108
distinct names, and 465 names under more than one language. Every distinct
text is one item with the set of its labels; its *primary* label is the one it
carries most often (ties: the class with fewer distinct texts, then the first
in sorted order: most of the 100 Scottish names are English names too). Training reads
every distinct (text, label) pair once, so a name listed under two languages
teaches both, and a name repeated 20 times counts once.

Split. Stratified by primary label and seeded: each class's distinct texts
are shuffled and `val_frac` of them (at least one, when the class has two or
more) go to validation. A text is on one side only, with all its labels, so
validation never scores a text the model trained on. A class that cannot be on
both sides (one distinct text, or texts all filed under other primary labels)
trains only, and a warning says so; a class that would be in validation only
has a text moved to training.

Batches: (ids (T, B), lengths (B,), labels (B,), weights (B,) or None),
grouped by similar length each epoch exactly as the lines task groups
records (tasks/lines/data.py), reshuffled in an order that `--resume`
rebuilds. Padding is never read: the encoder packs the sequences.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from charlm.engine.task import Batch
from charlm.tasks.lines.data import RecordEpoch
from charlm.text.vocab import Vocab

PAD_ID = 0  # any id would do: the packed encoder never reads past a length


@dataclass(frozen=True)
class LabelledTexts:
    """Distinct texts, each with the set of its labels and its primary (most frequent) label."""

    texts: list[str]  # sorted
    labels: list[tuple[int, ...]]  # class ids of each text, primary first
    classes: tuple[str, ...]

    @property
    def primary(self) -> np.ndarray:
        return np.array([labels[0] for labels in self.labels], dtype=np.int64)  # (N,)


def group_texts(texts: list[str], labels: list[str], classes: tuple[str, ...]) -> LabelledTexts:
    """Records (one per line, repeats included) -> distinct texts with their labels, primary first."""
    index = {name: i for i, name in enumerate(classes)}
    by_text: dict[str, Counter] = {}
    for text, label in zip(texts, labels):
        by_text.setdefault(text, Counter())[index[label]] += 1
    distinct = sorted(by_text)
    size = Counter(label for counts in by_text.values() for label in counts)  # distinct texts per class
    # Most frequent first; among equals the class with fewer texts (a name that is both English and
    # Scottish once each is evidence for the rarer class), then the one that sorts first.
    ordered = [tuple(sorted(counts, key=lambda c, n=counts: (-n[c], size[c], c)))
               for counts in (by_text[text] for text in distinct)]
    return LabelledTexts(texts=distinct, labels=ordered, classes=classes)


@dataclass(frozen=True)
class ClassSplit:
    train: list[int]  # indices into LabelledTexts.texts
    val: list[int]
    train_only: list[str]  # classes with no validation text
    warnings: list[str]


def split_by_class(grouped: LabelledTexts, val_frac: float, seed: int) -> ClassSplit:
    """A seeded split of distinct texts, stratified by primary label (see the module docstring)."""
    generator = np.random.default_rng(seed)
    primary, num_classes = grouped.primary, len(grouped.classes)
    in_val = np.zeros(len(grouped.texts), dtype=bool)
    for label in range(num_classes):
        members = generator.permutation(np.flatnonzero(primary == label))
        if len(members) >= 2:
            in_val[members[:min(max(1, round(len(members) * val_frac)), len(members) - 1)]] = True
    membership = _membership(grouped)  # (N, C)
    moved = []
    for label in range(num_classes):  # a class in validation only could never be learned: train on one text
        if not (membership[~in_val, label]).any() and membership[in_val, label].any():
            first = int(np.flatnonzero(in_val & membership[:, label])[0])
            in_val[first] = False
            moved.append(grouped.classes[label])
    train_only = [grouped.classes[c] for c in range(num_classes) if not membership[in_val, c].any()]
    warnings = []
    if train_only:
        counts = membership.sum(axis=0)
        shown = ", ".join(f"{name} ({counts[grouped.classes.index(name)]})" for name in train_only)
        warnings.append(f"{len(train_only)} class(es) have too few distinct texts to appear in both splits: "
                        f"{shown}; they train only and validation does not score them")
    if moved:
        warnings.append(f"class(es) {', '.join(moved)} had every text filed under another class's split; "
                        "one text of each moved to training")
    return ClassSplit(train=np.flatnonzero(~in_val).tolist(), val=np.flatnonzero(in_val).tolist(),
                      train_only=train_only, warnings=warnings)


def _membership(grouped: LabelledTexts) -> np.ndarray:
    """(N, C) bool: text n carries label c."""
    membership = np.zeros((len(grouped.texts), len(grouped.classes)), dtype=bool)
    for row, labels in enumerate(grouped.labels):
        membership[row, list(labels)] = True
    return membership


@dataclass(frozen=True)
class EncodedTexts:
    """Texts as one flat id array: text i is ids[starts[i]:starts[i] + lengths[i]].

    labels: one class per row (training: the pair's label; validation: the
    text's primary label). members: (N, C) bool, every label of each text, for
    scoring a text that carries several; None for training pairs.
    """

    ids: np.ndarray  # (N_chars,) int64
    starts: np.ndarray  # (N,)
    lengths: np.ndarray  # (N,)
    labels: np.ndarray  # (N,)
    members: np.ndarray | None = None  # (N, C) bool
    texts: tuple[str, ...] = ()  # for previews and messages

    def __len__(self) -> int:
        return len(self.lengths)


def encode_texts(texts: list[str], labels: list[int], vocab: Vocab, members: np.ndarray | None = None
                 ) -> EncodedTexts:
    """Encode every text in one vectorised pass (VocabularyError for an unknown character)."""
    lengths = np.array([len(text) for text in texts], dtype=np.int64)
    ids, _ = vocab.encode("".join(texts))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
    return EncodedTexts(ids.numpy(), starts, lengths, np.asarray(labels, dtype=np.int64), members, tuple(texts))


def training_pairs(grouped: LabelledTexts, indices: list[int], vocab: Vocab) -> EncodedTexts:
    """Every distinct (text, label) pair of the given texts, one row each."""
    texts = [grouped.texts[i] for i in indices for _ in grouped.labels[i]]
    labels = [label for i in indices for label in grouped.labels[i]]
    return encode_texts(texts, labels, vocab)


def scored_texts(grouped: LabelledTexts, indices: list[int], vocab: Vocab) -> EncodedTexts:
    """The given texts one row each, with their primary label and the set of all their labels."""
    return encode_texts([grouped.texts[i] for i in indices], [grouped.labels[i][0] for i in indices], vocab,
                        _membership(grouped)[indices])


def pad_texts(texts: EncodedTexts, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows -> ids (T, B) padded with PAD_ID, lengths (B,)."""
    lengths = texts.lengths[rows]  # (B,)
    position = np.arange(int(lengths.max()))[:, None]  # (T, 1)
    inside = position < lengths[None, :]  # (T, B)
    gather = np.where(inside, texts.starts[rows][None, :] + position, 0)  # (T, B)
    ids = np.where(inside, texts.ids[gather], PAD_ID)  # (T, B)
    return torch.from_numpy(ids), torch.from_numpy(lengths)


class ClassifyEpoch(RecordEpoch):
    """One epoch's bucketed batches of training pairs (the lines task's plan); this rank reads its block.

    With class weights, a batch's normaliser is the summed weight of the
    global batch's examples, so the engine's loss is their weighted mean,
    the same under any number of processes.
    """

    def __init__(self, pairs: EncodedTexts, weights: np.ndarray | None, batch_size: int, world_rank: int,
                 world_size: int, seed: int, epoch: int):
        super().__init__(pairs, batch_size, world_rank, world_size, seed, epoch)
        self.weights = weights  # (C,) per class, or None

    def batch(self, index: int) -> Batch:
        global_rows = self.batches[index]
        rows = global_rows[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        ids, lengths = pad_texts(self.records, rows)
        labels = self.records.labels[rows]  # (B,)
        if self.weights is None:
            return Batch(tensors=(ids, lengths, torch.from_numpy(labels), None), units=len(global_rows),
                         normaliser=float(len(global_rows)))
        weights = torch.from_numpy(self.weights[labels]).float()  # (B,)
        normaliser = float(self.weights[self.records.labels[global_rows]].sum())
        return Batch(tensors=(ids, lengths, torch.from_numpy(labels), weights), units=len(global_rows),
                     normaliser=normaliser)
