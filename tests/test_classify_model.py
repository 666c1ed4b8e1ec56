import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charlm.errors import CharlmError
from charlm.modules.encoder import length_mask
from charlm.tasks.classify.metrics import balanced_class_weights, classification_scores
from charlm.tasks.classify.model import CharClassifier, ClassifierSpec


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: with two OpenMP threads on two shared, busy cores, each op
    # waits for the other thread to be scheduled (measured 20-40x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _padded(seqs, pad_value=0):
    lengths = torch.tensor([len(s) for s in seqs])
    x = torch.full((int(lengths.max()), len(seqs)), pad_value, dtype=torch.long)
    for b, s in enumerate(seqs):
        x[: len(s), b] = torch.as_tensor(s)
    return x, lengths


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padded_batch_gives_the_logits_of_each_name_alone(cell, bidirectional):
    torch.manual_seed(0)
    model = CharClassifier(ClassifierSpec(vocab_size=7, num_classes=3, cell=cell, hidden_size=8, num_layers=2,
                                          embedding_size=4, bidirectional=bidirectional)).eval()
    seqs = [[1, 2, 3, 4, 5], [6], [2, 2, 1], [3, 4, 5, 6, 1, 2, 3]]
    x, lengths = _padded(seqs)
    garbage = x.clone()
    pad = ~length_mask(lengths, x.shape[0])
    garbage[pad] = torch.randint(7, (int(pad.sum()),))
    with torch.no_grad():
        batched = model(x, lengths)
        assert batched.shape == (4, 3)
        torch.testing.assert_close(model(garbage, lengths), batched)  # what the padding holds changes nothing
        for b, seq in enumerate(seqs):  # the oracle: each name alone, no padding at all
            alone = model(torch.tensor(seq)[:, None], torch.tensor([len(seq)]))
            torch.testing.assert_close(alone[0], batched[b])


def _toy_names(count, generator):
    """Class = which of three marker characters (ids 1-3) the name holds, at a random place among fillers (4-9)."""
    seqs, labels = [], []
    for _ in range(count):
        length = int(torch.randint(2, 9, (1,), generator=generator))
        seq = torch.randint(4, 10, (length,), generator=generator)
        label = int(torch.randint(3, (1,), generator=generator))
        seq[int(torch.randint(length, (1,), generator=generator))] = label + 1
        seqs.append(seq)
        labels.append(label)
    return seqs, torch.tensor(labels)


def test_separable_toy_problem_reaches_full_accuracy():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    train_seqs, train_labels = _toy_names(256, generator)
    test_seqs, test_labels = _toy_names(200, generator)
    model = CharClassifier(ClassifierSpec(vocab_size=10, num_classes=3, cell="gru", hidden_size=16,
                                          embedding_size=8))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    x, lengths = _padded(train_seqs)
    for _ in range(80):  # about 20 steps are enough; stop once the training loss is tiny
        loss = F.cross_entropy(model(x, lengths), train_labels)
        if loss.item() < 0.01:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(*_padded(test_seqs)).argmax(-1)
    assert classification_scores(test_labels.numpy(), predicted.numpy(), 3).accuracy == 1.0


def test_metrics_by_hand():
    true = [0, 0, 0, 1, 1, 2]
    predicted = [0, 0, 1, 1, 2, 2]
    scores = classification_scores(true, predicted, 4)  # class 3 occurs nowhere
    assert scores.confusion.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert scores.accuracy == pytest.approx(4 / 6)
    # class 0: P 2/2, R 2/3, F1 0.8; class 1: P 1/2, R 1/2, F1 0.5; class 2: P 1/2, R 1/1, F1 2/3
    np.testing.assert_allclose(scores.precision, [1, 0.5, 0.5, 0])
    np.testing.assert_allclose(scores.recall, [2 / 3, 0.5, 1, 0])
    np.testing.assert_allclose(scores.f1, [0.8, 0.5, 2 / 3, 0])
    assert scores.support.tolist() == [3, 2, 1, 0]
    assert scores.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)  # class 3 is left out


def test_metrics_class_never_predicted_scores_zero():
    scores = classification_scores([0, 1, 1], [0, 0, 0], 2)
    np.testing.assert_allclose(scores.precision, [1 / 3, 0])  # no predictions of 1: precision 0, no NaN
    np.testing.assert_allclose(scores.f1, [0.5, 0])
    assert scores.macro_f1 == pytest.approx(0.25)


def test_balanced_weights_by_hand_and_their_effect_on_the_loss():
    labels = torch.tensor([0, 0, 0, 1])
    weights = balanced_class_weights(labels.numpy(), 2)
    np.testing.assert_allclose(weights, [4 / (2 * 3), 4 / (2 * 1)])
    # As specified: with these weights the mean cross-entropy is the average over
    # classes of each class's own mean cross-entropy (every class counts the same).
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.5], [0.0, 0.0], [3.0, -1.0]])
    weighted = F.cross_entropy(logits, labels, weight=torch.tensor(weights, dtype=torch.float32))
    per_example = F.cross_entropy(logits, labels, reduction="none")
    by_class = (per_example[:3].mean() + per_example[3]) / 2
    torch.testing.assert_close(weighted, by_class)
    assert not torch.isclose(weighted, per_example.mean())  # and it differs from the unweighted loss


def test_balanced_weights_need_every_class():
    with pytest.raises(CharlmError, match="no training example of class.*French.*--class-weights none"):
        balanced_class_weights([0, 0, 2], 3, ["Arabic", "French", "Greek"])
