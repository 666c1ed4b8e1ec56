"""Classification data: repeats collapsed, labels kept per text, the stratified split, batches and their weights."""

import numpy as np
import pytest
import torch

from charlm.tasks.classify.data import (ClassifyEpoch, group_texts, pad_texts, scored_texts, split_by_class,
                                        training_pairs)
from charlm.text.vocab import Vocab


def test_repeats_collapse_and_each_text_keeps_all_its_labels_most_frequent_first():
    classes = ("Big", "Small", "Tiny")
    texts = ["ann", "ann", "ann", "bo", "bo", "cy", "cy", "cy", "dee", "eve", "fay"]
    labels = ["Small", "Big", "Small", "Big", "Small", "Tiny", "Big", "Big", "Big", "Big", "Small"]
    grouped = group_texts(texts, labels, classes)
    assert grouped.texts == ["ann", "bo", "cy", "dee", "eve", "fay"]  # sorted, once each
    # ann: Small twice, Big once. bo: a tie between Big (5 texts) and Small (3): the rarer class first.
    # cy: Big twice, Tiny once.
    assert grouped.labels == [(1, 0), (1, 0), (0, 2), (0,), (0,), (1,)]
    assert grouped.primary.tolist() == [1, 1, 0, 0, 0, 1]


def _grouped(sizes: dict[str, int], extra: list[tuple[str, str]] = ()):
    texts, labels = [], []
    for name, size in sizes.items():
        for i in range(size):
            texts += [f"{name.lower()}{i}"] * (1 + i % 3)  # repeats, which must not count twice
            labels += [name] * (1 + i % 3)
    for text, label in extra:
        texts.append(text)
        labels.append(label)
    classes = tuple(sorted(set(labels)))
    return group_texts(texts, labels, classes)


def test_the_split_is_stratified_seeded_and_disjoint_by_text():
    grouped = _grouped({"A": 200, "B": 40, "C": 9})
    split = split_by_class(grouped, 0.15, seed=3)
    train, val = set(split.train), set(split.val)
    assert not train & val and len(train | val) == len(grouped.texts)
    per_class = np.bincount(grouped.primary[split.val], minlength=3).tolist()
    assert per_class == [30, 6, 1]  # round(200 * .15), round(40 * .15), round(9 * .15) = 1: at least one
    assert split.warnings == [] and split.train_only == []
    assert split_by_class(grouped, 0.15, seed=3) == split
    assert split_by_class(grouped, 0.15, seed=4).val != split.val


def test_a_class_with_one_distinct_text_trains_only_and_says_so():
    grouped = _grouped({"A": 50, "B": 50}, extra=[("solo", "Lonely"), ("solo", "Lonely")])
    split = split_by_class(grouped, 0.2, seed=0)
    solo = grouped.texts.index("solo")
    assert solo in split.train and split.train_only == ["Lonely"]
    assert len(split.warnings) == 1 and "Lonely (1)" in split.warnings[0] and "train only" in split.warnings[0]


def test_a_class_whose_texts_all_lean_elsewhere_still_gets_a_training_text():
    # "Rare"'s only text is filed under "A" (twice A, once Rare): the split by primary label may put it in
    # validation, where Rare could never be learned. Across seeds it always trains.
    moved = 0
    for seed in range(12):
        grouped = _grouped({"A": 4}, extra=[("a0", "A"), ("a0", "Rare")])
        split = split_by_class(grouped, 0.5, seed=seed)
        assert grouped.texts.index("a0") in split.train
        moved += any("moved to training" in w for w in split.warnings)
    assert 0 < moved < 12  # the move happened for some seeds, not all


def test_training_reads_every_distinct_pair_and_validation_every_text_once_with_its_labels():
    grouped = group_texts(["ab", "ab", "ab", "c"], ["X", "Y", "X", "Y"], ("X", "Y"))
    vocab = Vocab.from_text("abc")
    pairs = training_pairs(grouped, [0, 1], vocab)
    assert list(pairs.texts) == ["ab", "ab", "c"] and pairs.labels.tolist() == [0, 1, 1]
    scored = scored_texts(grouped, [0, 1], vocab)
    assert scored.labels.tolist() == [0, 1] and scored.members.tolist() == [[True, True], [False, True]]
    ids, lengths = pad_texts(scored, np.array([1, 0]))
    assert ids.T.tolist() == [[2, 0], [0, 1]] and lengths.tolist() == [1, 2]  # (B, T); c, then a b


def test_a_batch_weighs_its_examples_by_class_and_its_normaliser_is_the_global_batchs_weight():
    grouped = _grouped({"A": 30, "B": 6})
    vocab = Vocab.from_text("".join(grouped.texts))
    pairs = training_pairs(grouped, list(range(len(grouped.texts))), vocab)
    weights = np.array([0.5, 3.0])
    whole = ClassifyEpoch(pairs, weights, 8, 0, 1, seed=1, epoch=0)
    halves = [ClassifyEpoch(pairs, weights, 4, rank, 2, seed=1, epoch=0) for rank in (0, 1)]
    assert len(whole) == len(halves[0]) == 36 // 8
    for index in range(len(whole)):
        batch = whole.batch(index)
        ids, lengths, labels, example_weights = batch.tensors
        assert ids.shape == (int(lengths.max()), 8) and batch.units == 8
        assert example_weights.tolist() == [weights[label] for label in labels.tolist()]
        assert batch.normaliser == pytest.approx(float(example_weights.sum()))
        shares = [half.batch(index) for half in halves]
        assert all(share.normaliser == batch.normaliser and share.units == 8 for share in shares)
        assert torch.cat([share.tensors[2] for share in shares]).tolist() == labels.tolist()
    plain = ClassifyEpoch(pairs, None, 8, 0, 1, seed=1, epoch=0).batch(0)
    assert plain.tensors[3] is None and plain.normaliser == 8.0
