"""Classification scores from true and predicted labels, and `balanced` class weights.

Plain numpy over label arrays: the figures add up from a confusion matrix,
which is also what a multi-process evaluation would sum across ranks.
Conventions follow scikit-learn: the confusion matrix has true classes as rows
and predicted classes as columns; precision with no predictions of a class, or
recall with no examples of it, is 0; macro-F1 averages over the classes that
occur among the true or the predicted labels (a class absent from both says
nothing about the classifier).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm.errors import CharlmError


@dataclass
class ClassificationScores:
    accuracy: float
    macro_f1: float
    precision: np.ndarray  # (C,)
    recall: np.ndarray  # (C,)
    f1: np.ndarray  # (C,)
    support: np.ndarray  # (C,) how many true examples of each class
    confusion: np.ndarray  # (C, C): [true, predicted] counts

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "precision": self.precision.tolist(),
                "recall": self.recall.tolist(), "f1": self.f1.tolist(), "support": self.support.tolist(),
                "confusion": self.confusion.tolist()}


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows true, columns predicted."""
    true, predicted = np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if true.shape != predicted.shape:
        raise ValueError(f"true and predicted labels differ in shape: {true.shape} and {predicted.shape}")
    flat = np.bincount(true * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def scores_from_confusion(confusion: np.ndarray) -> ClassificationScores:
    confusion = np.asarray(confusion, dtype=np.int64)
    correct = np.diag(confusion).astype(np.float64)  # (C,)
    support = confusion.sum(axis=1)  # (C,) true examples per class
    predicted = confusion.sum(axis=0)  # (C,) predictions per class
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    recall = np.divide(correct, support, out=np.zeros_like(correct), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(correct), where=both > 0)
    seen = (support > 0) | (predicted > 0)
    total = int(confusion.sum())
    return ClassificationScores(
        accuracy=float(correct.sum() / total) if total else float("nan"),
        macro_f1=float(f1[seen].mean()) if seen.any() else float("nan"),
        precision=precision, recall=recall, f1=f1, support=support, confusion=confusion)


def classification_scores(true, predicted, num_classes: int) -> ClassificationScores:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    return scores_from_confusion(confusion_matrix(true, predicted, num_classes))


def balanced_class_weights(labels, num_classes: int, class_names: list[str] | None = None) -> np.ndarray:
    """scikit-learn's `balanced` weights, n_samples / (n_classes * count), one per class: (C,).

    Each class then contributes the same total weight to the loss. A class with
    no training example would get an infinite weight, so it is an error.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    missing = np.flatnonzero(counts == 0)
    if len(missing):
        names = [class_names[i] if class_names else str(i) for i in missing[:5]]
        raise CharlmError(f"--class-weights balanced: no training example of class(es) {', '.join(names)}"
                          f"{' and more' if len(missing) > 5 else ''}; add examples or use --class-weights none")
    return counts.sum() / (num_classes * counts)
