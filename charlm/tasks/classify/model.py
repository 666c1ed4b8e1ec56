"""The character classifier: packed (bi)directional encoder -> final states -> dropout -> Linear.

One call over the whole batch: the encoder reads every sequence in one
packed nn.RNN/LSTM/GRU call (no padding enters the recurrence), and the
top layer's final state of each direction — the forward one after the last
character, the backward one after the first — is the sequence's summary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from charlm.modules.encoder import SequenceEncoder
from charlm.text.vocab import Vocab


@dataclass(frozen=True)
class ClassifierSpec:
    """Everything needed to rebuild the module (stored in every checkpoint)."""

    vocab_size: int
    num_classes: int
    cell: str = "gru"
    hidden_size: int = 128  # per direction
    num_layers: int = 1
    embedding_size: int = 64
    bidirectional: bool = True
    dropout: float = 0.0  # between recurrent layers and on the summary before the output layer

    def to_dict(self) -> dict:
        return asdict(self)


class CharClassifier(nn.Module):
    def __init__(self, spec: ClassifierSpec):
        super().__init__()
        self.spec = spec
        self.encoder = SequenceEncoder(spec.vocab_size, spec.embedding_size, spec.cell, spec.hidden_size,
                                       spec.num_layers, spec.bidirectional, spec.dropout)
        self.dropout = nn.Dropout(spec.dropout)
        self.head = nn.Linear(self.encoder.output_size, spec.num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (T, B) ids, lengths: (B,) -> logits (B, C). Positions at or past a length are never read."""
        encoded = self.encoder(x, lengths, keep_outputs=False)
        summary = self.encoder.top_layer_final(encoded.final)  # (B, D*H)
        return self.head(self.dropout(summary))  # (B, C)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def model_from_record(record: dict) -> tuple[CharClassifier, Vocab]:
    """An untrained classifier of a checkpoint's shape and its vocabulary (ValueError if they disagree)."""
    spec = ClassifierSpec(**record["model"])
    vocab = Vocab.from_json(record["vocab"])
    if type(vocab) is not Vocab:
        raise ValueError("a classifier's vocabulary is a list of characters")
    if spec.vocab_size != vocab.size:
        raise ValueError("vocabulary size does not match the model")
    if spec.num_classes != len(record.get("classes", [])):
        raise ValueError("the number of classes does not match the model")
    return CharClassifier(spec), vocab
