"""Classification quality on the names data in a fixed time: `charlm train --task classify` against the tutorial.

    python bench/classify_quality.py [--time-budget 2m] [--config configs/names-classify.toml] [--threads N] [--out ...]

Data: ../shared/data/names/ (18 languages, 20,074 lines, 17,458 distinct
names). Split: charlm's, deduplicated and stratified by class, 85/15
(--val-frac 0.15, seed 1337), the same for every side; each is scored on
the same validation names by the same rule (a name filed under several
languages is right when the prediction is any of them).

charlm: `charlm train` for the budget (evaluations included in it), then
`charlm eval --json` of its best checkpoint (chosen by validation macro-F1).

The tutorial: PyTorch's "Classifying Names with a Character-Level RNN" as
written: names turned to ASCII (unicodeToAscii), one-hot letters of
`ascii_letters + " .,;'"`, an nn.RNN of 128 whose last hidden state goes
through nn.Linear and LogSoftmax, NLLLoss, plain SGD (lr 0.005), one name per
step, each drawn as the tutorial draws it (a class uniformly, then one of its
training names). It trains for the same wall-clock budget (its evaluation
is not counted) and is scored once at the end.

Naive Bayes: a classical reference with no training time to speak of,
multinomial naive Bayes over each name's character 1..n-grams, for n of 3 to
5 and three smoothings; the best of the nine on the validation names is
reported (optimistic for it: picked on what it is scored on).

Issue 13's goal: charlm accuracy >= 0.85 and macro-F1 >= 0.70 after 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit, machine_facts  # noqa: E402

from charlm.config import parse_duration  # noqa: E402
from charlm.tasks.classify.data import group_texts, split_by_class  # noqa: E402
from charlm.tasks.classify.evaluate import true_classes  # noqa: E402
from charlm.tasks.classify.metrics import confusion_matrix, scores_from_confusion  # noqa: E402
from charlm.text.records import read_records  # noqa: E402

NAMES = REPO.parent / "shared" / "data" / "names"
VAL_FRAC, SEED = 0.15, 1337
ALL_LETTERS = string.ascii_letters + " .,;'"


def unicode_to_ascii(text: str) -> str:
    """The tutorial's normalisation: accents dropped, anything outside its letters dropped."""
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c) != "Mn" and c in ALL_LETTERS)


def one_hot(name: str) -> torch.Tensor:
    """(T, 1, 57), as the tutorial's lineToTensor (a name with no letter left reads one blank)."""
    tensor = torch.zeros(max(len(name), 1), 1, len(ALL_LETTERS))
    for t, char in enumerate(name or " "):
        tensor[t, 0, ALL_LETTERS.index(char)] = 1
    return tensor


class TutorialRNN(nn.Module):
    def __init__(self, classes: int, hidden: int = 128):
        super().__init__()
        self.rnn = nn.RNN(len(ALL_LETTERS), hidden)
        self.h2o = nn.Linear(hidden, classes)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, line: torch.Tensor) -> torch.Tensor:
        _, hidden = self.rnn(line)  # (1, 1, H)
        return self.softmax(self.h2o(hidden[0]))  # (1, C)


def run_tutorial(grouped, split, seconds: float, lr: float) -> dict:
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    by_class: dict[int, list[torch.Tensor]] = {}
    for index in split.train:
        for label in grouped.labels[index]:
            by_class.setdefault(label, []).append(one_hot(unicode_to_ascii(grouped.texts[index])))
    classes = sorted(by_class)
    model, loss_fn = TutorialRNN(len(grouped.classes)), nn.NLLLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        label = rng.choice(classes)
        line = rng.choice(by_class[label])
        loss = loss_fn(model(line), torch.tensor([label]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    trained = time.perf_counter() - start
    with torch.no_grad():
        predicted = torch.tensor([int(model(one_hot(unicode_to_ascii(grouped.texts[i]))).argmax())
                                  for i in split.val])
    scores = score_predictions(grouped, split, predicted)
    return {"model": "nn.RNN(57, 128) -> Linear -> LogSoftmax, NLLLoss, SGD lr %g, one name per step" % lr,
            "steps": steps, "train_seconds": round(trained, 1), "names_per_second": round(steps / trained),
            "accuracy": round(scores.accuracy, 4), "macro_f1": round(scores.macro_f1, 4)}


def score_predictions(grouped, split, predicted: torch.Tensor):
    """charlm's rule on the validation names: a name filed under several languages is right for any of them.

    predicted (V,) class ids, in the order of split.val
    """
    members = torch.zeros(len(split.val), len(grouped.classes), dtype=torch.bool)  # (V, C)
    for row, index in enumerate(split.val):
        members[row, list(grouped.labels[index])] = True
    primary = torch.from_numpy(grouped.primary[split.val])  # (V,)
    true = true_classes(predicted, members, primary)
    return scores_from_confusion(confusion_matrix(true.numpy(), predicted.numpy(), len(grouped.classes)))


def char_ngrams(name: str, longest: int) -> list[str]:
    marked = "^" + name.lower() + "$"
    return [marked[i:i + n] for n in range(1, longest + 1) for i in range(len(marked) - n + 1)]


def run_naive_bayes(grouped, split) -> dict:
    """A classical reference: multinomial naive Bayes over the character 1..n-grams of each name.

    Its n and smoothing are picked on the validation names themselves (an optimistic figure for it).
    """
    settings = []
    for longest in (3, 4, 5):
        counts = [Counter() for _ in grouped.classes]
        names_per_class = np.zeros(len(grouped.classes))
        for index in split.train:
            grams = char_ngrams(grouped.texts[index], longest)
            for label in grouped.labels[index]:
                counts[label].update(grams)
                names_per_class[label] += 1
        vocabulary = len(set().union(*counts))
        totals = np.array([sum(c.values()) for c in counts], dtype=float)  # (C,)
        log_prior = np.log(np.maximum(names_per_class, 1) / names_per_class.sum())  # (C,)
        val_grams = [char_ngrams(grouped.texts[i], longest) for i in split.val]
        for alpha in (0.03, 0.1, 0.3):
            denominators = np.log(totals + alpha * vocabulary)  # (C,)
            predicted = torch.tensor([
                int(np.argmax([log_prior[c] + sum(np.log(counts[c][g] + alpha) for g in grams)
                               - len(grams) * denominators[c] for c in range(len(grouped.classes))]))
                for grams in val_grams])
            scores = score_predictions(grouped, split, predicted)
            settings.append({"ngrams": f"1..{longest}", "alpha": alpha, "accuracy": round(scores.accuracy, 4),
                             "macro_f1": round(scores.macro_f1, 4)})
    best = max(settings, key=lambda s: s["macro_f1"])
    return {"model": "multinomial naive Bayes over character n-grams (^name$, lower-cased), class priors fitted",
            "best_by_validation_macro_f1": best, "settings": settings}


def run_charlm(config: str, budget: str, env: dict) -> dict:
    run = Path(tempfile.mkdtemp()) / "run"
    command = ["train", str(NAMES), "--task", "classify", "--config", config, "--time-budget", budget,
               "--val-frac", str(VAL_FRAC), "--rng-seed", str(SEED), "--out", str(run)]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "charlm", *command], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"charlm train failed: {done.stderr.strip()}")
    wall = time.perf_counter() - started
    scored = subprocess.run([sys.executable, "-m", "charlm", "eval", "--checkpoint", str(run), "--json"],
                            capture_output=True, text=True, env=env)
    if scored.returncode != 0:
        sys.exit(f"charlm eval failed: {scored.stderr.strip()}")
    figures = json.loads(scored.stdout)
    evaluations = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    curve = [{"step": e["step"], "elapsed_seconds": e["elapsed_seconds"], "accuracy": round(e["val_accuracy"], 4),
              "macro_f1": round(e["val_macro_f1"], 4)} for e in evaluations if "val_accuracy" in e]
    return {"command": "charlm " + " ".join(command), "wall_seconds_with_startup": round(wall, 1),
            "accuracy": round(figures["accuracy"], 4), "macro_f1": round(figures["macro_f1"], 4),
            "val_texts": figures["texts"], "curve": curve, "summary_line": done.stdout.strip().splitlines()[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-budget", default="2m")
    parser.add_argument("--config", default=str(REPO / "configs" / "names-classify.toml"))
    parser.add_argument("--threads", type=int, help="torch threads of both sides (default: torch's own choice)")
    parser.add_argument("--tutorial-lr", type=float, default=0.005, help="the tutorial's SGD step (its own value)")
    parser.add_argument("--out")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.threads:
        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    records = read_records(NAMES)
    grouped = group_texts(records.texts, records.labels, records.classes)
    split = split_by_class(grouped, VAL_FRAC, SEED)
    charlm = run_charlm(args.config, args.time_budget, env)
    tutorial = run_tutorial(grouped, split, parse_duration(args.time_budget), args.tutorial_lr)
    naive_bayes = run_naive_bayes(grouped, split)
    assert charlm["val_texts"] == len(split.val), "charlm's validation split is not the one the tutorial is scored on"
    emit({"benchmark": "classify_quality", "machine": machine_facts(), "data": str(NAMES),
          "split": f"distinct names, stratified by class, {1 - VAL_FRAC:.0%}/{VAL_FRAC:.0%}, seed {SEED}",
          "train_texts": len(split.train), "val_texts": len(split.val), "time_budget": args.time_budget,
          "charlm": charlm, "tutorial": tutorial, "naive_bayes": naive_bayes,
          "goal": {"accuracy": 0.85, "macro_f1": 0.70,
                   "met": charlm["accuracy"] >= 0.85 and charlm["macro_f1"] >= 0.70}}, args.out)


if __name__ == "__main__":
    main()
