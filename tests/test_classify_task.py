"""The task `classify` through the engine: loss and class weights, scoring of multi-label texts, training to
full accuracy, patience, selection of the best checkpoint; slow: SIGKILL resume and 2 Gloo processes."""

import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from charlm.config import build_config
from charlm.engine.checkpoint import read_tensors
from charlm.engine.distributed import SINGLE
from charlm.engine.events import Evaluated, RunFinished
from charlm.engine.loop import train
from charlm.runs import load_checkpoint
from charlm.tasks.classify.data import group_texts, pad_texts, scored_texts
from charlm.tasks.classify.evaluate import score_texts
from charlm.tasks.classify.inference import Classifier, evaluate_classifier
from charlm.tasks.classify.task import ClassifyTask
from charlm.text.records import read_records
from charlm.text.vocab import Vocab


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on two shared cores: a second thread only waits
    yield
    torch.set_num_threads(threads)


FILLERS, MARKERS = "abcdefgh", {"x": "ex", "y": "why", "z": "zed"}


def marker_tsv(path, count=240, seed=0):
    """Names of filler letters holding one marker letter, whose class it names: separable by one character."""
    generator = np.random.default_rng(seed)
    lines = set()
    while len(lines) < count:
        marker = "xyz"[len(lines) % 3]
        name = list(generator.choice(list(FILLERS), generator.integers(2, 8)))
        name.insert(int(generator.integers(0, len(name) + 1)), marker)
        lines.add(f"{''.join(name)}\t{MARKERS[marker]}")
    path.write_text("\n".join(sorted(lines)) + "\n")
    return path


def _config(**changes):
    values = {"task": "classify", "hidden_size": 16, "embedding_size": 8, "batch_size": 16, "lr": 0.02,
              "warmup_steps": 5, "max_steps": 40, "time_budget": "none", "eval_every": 20, "log_every": 5,
              "device": "cpu", "precision": "fp32", "val_frac": 0.2}
    return build_config(values, changes)


def test_the_loss_with_balanced_weights_is_the_weighted_mean_by_hand(tmp_path):
    path = tmp_path / "imbalanced.tsv"
    path.write_text("".join(f"{'ab'[i % 2]}{i}\tmany\n" for i in range(30)) +
                    "".join(f"c{i}\tfew\n" for i in range(6)))
    task = ClassifyTask(read_records(path), _config(class_weights="balanced", batch_size=12))
    task.prepare(SINGLE, None)
    counts = np.bincount(task.train.labels, minlength=2)  # few, many (sorted class names)
    expected_weights = counts.sum() / (2 * counts)  # n / (C * n_c)
    np.testing.assert_allclose(task.weights, expected_weights)
    torch.manual_seed(0)
    model = task.build_model()
    batch = task.epoch(0, SINGLE).batch(0)
    ids, lengths, labels, weights = batch.tensors
    loss_sum, _ = task.loss(model, batch, None, torch.device("cpu"))
    mean = loss_sum.item() / batch.normaliser  # what the engine minimises
    with torch.no_grad():
        logits = model(ids, lengths).double()
    by_hand = [float(torch.logsumexp(logits[i], 0) - logits[i, y]) for i, y in enumerate(labels.tolist())]
    w = [expected_weights[y] for y in labels.tolist()]
    assert mean == pytest.approx(sum(wi * li for wi, li in zip(w, by_hand)) / sum(w), rel=1e-5)
    assert len(set(labels.tolist())) == 2 and abs(mean - sum(by_hand) / len(by_hand)) > 1e-3  # the weights matter


class FixedLogits(nn.Module):
    """A stand-in model: the logits of each text are a row of a table, chosen by the text's first character."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float32)

    def forward(self, x, lengths):
        return self.table[x[0]]  # (B, C)


def test_a_text_with_several_labels_is_right_when_the_prediction_is_any_of_them():
    # classes A, B, C; texts a (A), b (B), c (A or B, mostly B), d (C, predicted A)
    grouped = group_texts(["a", "b", "c", "c", "c", "d"], ["A", "B", "A", "B", "B", "C"], ("A", "B", "C"))
    vocab = Vocab.from_text("abcd")
    texts = scored_texts(grouped, [0, 1, 2, 3], vocab)
    # rows by character id: a -> A, b -> B, c -> A (one of its labels, not its primary), d -> A (wrong)
    probs = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.5, 0.25, 0.25]]
    scored = score_texts(FixedLogits(np.log(probs)), texts, torch.device("cpu"))
    assert scored.confusion.tolist() == [[2, 0, 0], [0, 1, 0], [1, 0, 0]]  # c counts as A: right
    metrics = scored.metrics()
    assert metrics["val_accuracy"] == pytest.approx(3 / 4)
    # the loss: every (text, label) pair once: a-A, b-B, c-A, c-B, d-C
    pairs = [probs[0][0], probs[1][1], probs[2][0], probs[2][1], probs[3][2]]
    assert metrics["val_loss"] == pytest.approx(-sum(map(math.log, pairs)) / 5, rel=1e-6)
    # per class F1 by hand: A P 2/3 R 1 -> 0.8; B 1; C 0 (never predicted)
    assert metrics["val_macro_f1"] == pytest.approx((0.8 + 1 + 0) / 3)


def test_padding_changes_nothing_a_batch_gives_each_texts_logits_alone(tmp_path):
    task = ClassifyTask(read_records(marker_tsv(tmp_path / "m.tsv")), _config())
    task.prepare(SINGLE, None)
    torch.manual_seed(0)
    model = task.build_model().eval()
    rows = np.arange(12)
    assert len(set(task.val.lengths[rows].tolist())) > 1  # the batch really is padded
    ids, lengths = pad_texts(task.val, rows)
    with torch.no_grad():
        batched = model(ids, lengths)  # (B, C)
        for b, row in enumerate(rows):
            alone, one = pad_texts(task.val, np.array([row]))  # (T, 1), no padding at all
            torch.testing.assert_close(model(alone, one)[0], batched[b])


def test_a_separable_problem_reaches_full_accuracy_and_eval_and_classify_agree_with_training(tmp_path):
    path = marker_tsv(tmp_path / "markers.tsv")
    events = list(train(ClassifyTask(read_records(path), _config(max_steps=120, eval_every=40)), tmp_path / "run"))
    evals = [e for e in events if isinstance(e, Evaluated)]
    assert evals[-1].metrics["val_accuracy"] == 1.0 and evals[-1].metrics["val_macro_f1"] == 1.0
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.main_metric == "val_macro_f1"
    loaded = load_checkpoint(tmp_path / "run")
    report = evaluate_classifier(loaded, precision="fp32")
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert report.scores.accuracy == best["metrics"]["val_accuracy"] == 1.0
    assert report.loss == pytest.approx(best["metrics"]["val_loss"], abs=1e-6)
    assert report.scores.confusion.tolist() == best["validation"]["confusion"]
    answers = Classifier(loaded).classify(["abxab", "hyh", "zzz", "ffffffffffx"], top_k=2)
    assert [a.top[0][0] for a in answers] == ["ex", "why", "zed", "ex"]
    assert all(len(a.top) == 2 and a.top[0][1] >= a.top[1][1] for a in answers)


def test_patience_stops_a_run_that_no_longer_improves(tmp_path):
    task = ClassifyTask(read_records(marker_tsv(tmp_path / "m.tsv")),
                        _config(lr=1e-12, max_steps=200, eval_every=5, patience=2, warmup_steps=0))
    events = list(train(task, tmp_path / "run"))
    finished = events[-1]
    assert finished.reason == "patience" and finished.step == 15  # best at 5, then 10 and 15 no better


@pytest.mark.parametrize("select_by, metric, higher", [("loss", "val_loss", False), ("accuracy", "val_accuracy", True),
                                                       ("macro-f1", "val_macro_f1", True)])
def test_select_by_names_the_metric_that_picks_the_best_checkpoint(tmp_path, select_by, metric, higher):
    task = ClassifyTask(read_records(marker_tsv(tmp_path / "m.tsv")), _config(select_by=select_by, max_steps=30,
                                                                             eval_every=10))
    events = list(train(task, tmp_path / "run"))
    evals = [e for e in events if isinstance(e, Evaluated)]
    scores = [e.metrics[metric] for e in evals]
    best = (max if higher else min)(scores)
    assert events[-1].best_score == best and events[-1].best_step == evals[scores.index(best)].step
    record = json.loads((tmp_path / "run" / "best.json").read_text())
    assert record["main_metric"] == metric and record["metrics"][metric] == best


# -- processes ------------------------------------------------------------------------------------------

FLAGS = ["--task", "classify", "--hidden-size", "16", "--embedding-size", "8", "--num-layers", "2",
         "--batch-size", "8", "--lr", "0.01", "--warmup-steps", "5", "--time-budget", "none", "--val-frac", "0.2",
         "--sample-length", "0", "--device", "cpu", "--precision", "fp32", "--class-weights", "balanced"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _charlm(cwd, *args):
    return subprocess.run([sys.executable, "-m", "charlm", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=ENV)


def _weights(run_dir):
    record = json.loads((run_dir / "last.json").read_text())
    return read_tensors(run_dir / record["weights"]), record


@pytest.mark.slow
def test_a_classify_run_killed_with_sigkill_resumes_bitwise_identically(tmp_path):
    from test_resume import _wait_for_step

    marker_tsv(tmp_path / "m.tsv", count=600)
    flags = [*FLAGS, "--dropout", "0.2", "--max-steps", "240", "--eval-every", "20"]
    straight = _charlm(tmp_path, "train", "m.tsv", "--out", "straight", *flags)
    assert straight.returncode == 0, straight.stderr
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "train", "m.tsv", "--out", "killed", *flags],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for_step(tmp_path / "killed", 110, proc)  # past an epoch boundary (57 batches of 8)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((tmp_path / "killed" / "last.json").read_text())["step"]
    assert 0 < killed_at < 240
    resumed = _charlm(tmp_path, "train", "--resume", "--out", "killed")
    assert resumed.returncode == 0, resumed.stderr
    expected, expected_record = _weights(tmp_path / "straight")
    got, record = _weights(tmp_path / "killed")
    assert record["step"] == 240 and all(torch.equal(expected[k], got[k]) for k in expected)
    assert record["metrics"] == expected_record["metrics"]


@pytest.mark.slow
def test_two_gloo_processes_train_a_classifier_like_one_with_the_whole_batch(tmp_path):
    marker_tsv(tmp_path / "m.tsv", count=300)
    flags = [*FLAGS, "--max-steps", "20", "--eval-every", "10", "--dist-timeout", "60s"]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "-m", "charlm", "train", "m.tsv", "--out", "ddp", *flags, "--batch-size", "4"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, env=ENV)
    assert ddp.returncode == 0, ddp.stderr
    single = _charlm(tmp_path, "train", "m.tsv", "--out", "single", *flags, "--batch-size", "8")
    assert single.returncode == 0, single.stderr
    got, record = _weights(tmp_path / "ddp")
    expected, expected_record = _weights(tmp_path / "single")
    for name in expected:  # balanced weights: each batch's normaliser is the summed weight of the global batch
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)
    assert record["val_loss"] == pytest.approx(expected_record["val_loss"], abs=1e-5)
    assert record["validation"]["confusion"] == expected_record["validation"]["confusion"]
