"""The records model: the language model of tasks/lm, started from a state that can depend on a class.

A record is read as   <end> c1 c2 ... cn   and predicts   c1 c2 ... cn <end>
(makemore's layout: one reserved symbol both starts and ends a record). For
labelled data the model learns P(record | class): each class has a learned
initial hidden state for every layer (and an initial cell state `c` for an
LSTM), so the whole record is generated in the class's voice from its first
character. Zeros at first, so training starts from the unconditional model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from charlm.tasks.lm.model import CharRNN, Hidden, ModelSpec
from charlm.text.vocab import RecordVocab, Vocab


@dataclass(frozen=True)
class RecordModelSpec:
    """Everything needed to rebuild the module (stored in every checkpoint)."""

    vocab_size: int
    num_classes: int = 0  # 0: unconditional
    cell: str = "lstm"
    hidden_size: int = 256
    num_layers: int = 2
    embedding_size: int = 64
    dropout: float = 0.0
    weight_drop: float = 0.0
    locked_dropout: float = 0.0
    embedding_dropout: float = 0.0
    tie_weights: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def language_model(self) -> ModelSpec:
        values = self.to_dict()
        del values["num_classes"]
        return ModelSpec(**values)


class RecordRNN(CharRNN):
    def __init__(self, spec: RecordModelSpec):
        super().__init__(spec.language_model())
        self.record_spec = spec
        if spec.num_classes:
            parts = 2 if spec.cell == "lstm" else 1  # (h, c) for an LSTM
            self.class_start = nn.Embedding(spec.num_classes, parts * spec.num_layers * spec.hidden_size)
            nn.init.zeros_(self.class_start.weight)

    def start_state(self, classes: torch.Tensor | None, batch: int) -> Hidden | None:
        """The state a record starts from: the class's (classes (B,) ids), or None (zeros) without classes."""
        if classes is None or not self.record_spec.num_classes:
            return None
        spec = self.record_spec
        parts = 2 if spec.cell == "lstm" else 1
        start = self.class_start(classes).view(batch, parts, spec.num_layers, spec.hidden_size)  # (B, P, L, H)
        start = start.permute(1, 2, 0, 3).contiguous()  # (P, L, B, H)
        return (start[0], start[1]) if spec.cell == "lstm" else start[0]

    def forward(self, x: torch.Tensor, hidden: Hidden | None = None,
                classes: torch.Tensor | None = None) -> tuple[torch.Tensor, Hidden]:
        """x: (T, B) ids -> logits (T, B, V); without a hidden state, records start from their class's."""
        if hidden is None:
            hidden = self.start_state(classes, x.shape[1])
        return super().forward(x, hidden)


def model_from_record(record: dict) -> tuple[RecordRNN, RecordVocab]:
    """An untrained RecordRNN of a checkpoint's shape and its vocabulary (ValueError if they disagree)."""
    spec = RecordModelSpec(**record["model"])
    vocab = Vocab.from_json(record["vocab"])
    if not isinstance(vocab, RecordVocab):
        raise ValueError("its vocabulary has no end-of-record symbol")
    if spec.vocab_size != vocab.size:
        raise ValueError("vocabulary size does not match the model")
    if spec.num_classes != len(record.get("classes", [])):
        raise ValueError("the number of classes does not match the model")
    return RecordRNN(spec), vocab
