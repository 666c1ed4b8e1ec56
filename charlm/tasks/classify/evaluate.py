"""Scoring a classifier on labelled texts: the confusion matrix and the loss, summable across processes.

Each distinct text is scored once. A text that carries several labels (a
name filed under two languages) counts as correctly classified when the
prediction is any of its labels; in the confusion matrix its true class is
then the predicted one, and otherwise its primary (most frequent) label.
The loss is the mean cross-entropy over every (text, label) pair, unweighted
(whatever --class-weights training used), so it compares across runs.
Deterministic: batches in a fixed order, sums in fp64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charlm.tasks.classify.data import EncodedTexts, pad_texts
from charlm.tasks.classify.metrics import ClassificationScores, scores_from_confusion
from charlm.tasks.lines.data import evaluation_batches


@dataclass
class Scored:
    """What a pass over labelled texts adds up to: confusion counts and the summed loss over label pairs."""

    confusion: np.ndarray  # (C, C) [true, predicted]
    loss_sum: float  # nats, over every (text, label) pair
    pairs: int

    @property
    def loss(self) -> float:
        return self.loss_sum / self.pairs if self.pairs else float("nan")

    def scores(self) -> ClassificationScores:
        return scores_from_confusion(self.confusion)

    def metrics(self) -> dict[str, float]:
        scores = self.scores()
        return {"val_loss": self.loss, "val_accuracy": scores.accuracy, "val_macro_f1": scores.macro_f1}

    def to_vector(self) -> torch.Tensor:
        """Everything as one fp64 vector, for a sum across processes."""
        return torch.cat([torch.from_numpy(self.confusion.astype(np.float64)).flatten(),
                          torch.tensor([self.loss_sum, float(self.pairs)], dtype=torch.float64)])

    @classmethod
    def from_vector(cls, vector: torch.Tensor, num_classes: int) -> "Scored":
        values = vector.cpu().double()
        confusion = values[:num_classes * num_classes].round().long().view(num_classes, num_classes).numpy()
        return cls(confusion=confusion, loss_sum=float(values[-2]), pairs=int(round(float(values[-1]))))


def true_classes(predicted: torch.Tensor, members: torch.Tensor, primary: torch.Tensor) -> torch.Tensor:
    """The class each text counts as: the prediction when it is one of the text's labels, else the primary label.

    predicted (B,), members (B, C) bool, primary (B,) -> (B,)
    """
    hit = members.gather(1, predicted[:, None])[:, 0]  # (B,)
    return torch.where(hit, predicted, primary)


@torch.inference_mode()
def score_texts(model, texts: EncodedTexts, device: torch.device, shard: tuple[int, int] = (0, 1),
                amp_dtype: torch.dtype | None = None) -> Scored:
    """Confusion and summed pair loss of the texts, or of one shard's batches of them."""
    rank, world_size = shard
    num_classes = texts.members.shape[1]
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64)
    loss_sum = torch.zeros((), dtype=torch.float64)
    pairs = 0
    batches = evaluation_batches(texts)
    mine = np.array_split(np.arange(len(batches)), world_size)[rank]
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            for index in mine:
                rows = batches[index]
                ids, lengths = pad_texts(texts, rows)
                logits = model(ids.to(device), lengths).float().cpu()  # (B, C)
                members = torch.from_numpy(texts.members[rows])  # (B, C)
                log_probs = torch.log_softmax(logits, dim=-1)  # (B, C)
                loss_sum -= log_probs.double()[members].sum()
                pairs += int(members.sum())
                predicted = logits.argmax(dim=-1)  # (B,)
                true = true_classes(predicted, members, torch.from_numpy(texts.labels[rows]))
                confusion += torch.bincount(true * num_classes + predicted, minlength=num_classes * num_classes)
    finally:
        model.train(was_training)
    return Scored(confusion=confusion.view(num_classes, num_classes).numpy(), loss_sum=float(loss_sum),
                  pairs=pairs)
