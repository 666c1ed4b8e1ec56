"""The character model: Embedding -> nn.RNN | nn.LSTM | nn.GRU -> Linear.

Tensors are sequence-first, (T, B), the native layout of PyTorch's recurrent
kernels, so a window of the stream layout goes in without a transpose. The
hidden state is passed in and returned, never kept inside the module: the
caller decides when to carry, detach or reset it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

_RNN_CLASSES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the module (stored in every checkpoint)."""

    vocab_size: int
    cell: str = "lstm"
    hidden_size: int = 256
    num_layers: int = 2
    embedding_size: int = 64
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class CharRNN(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.embedding = nn.Embedding(spec.vocab_size, spec.embedding_size)
        rnn_class = _RNN_CLASSES[spec.cell]
        extra = {"nonlinearity": "tanh"} if spec.cell == "rnn" else {}
        # nn.RNN-family dropout acts between layers only, so one layer gets none there.
        self.rnn = rnn_class(spec.embedding_size, spec.hidden_size, spec.num_layers,
                             dropout=spec.dropout if spec.num_layers > 1 else 0.0, **extra)
        self.dropout = nn.Dropout(spec.dropout)
        self.head = nn.Linear(spec.hidden_size, spec.vocab_size)

    def forward(self, x: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """x: (T, B) ids -> logits (T, B, V) and the hidden state after the last step."""
        emb = self.embedding(x)  # (T, B, E)
        out, hidden = self.rnn(emb, hidden)  # (T, B, H)
        logits = self.head(self.dropout(out))  # (T, B, V)
        return logits, hidden

    def step(self, token: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """One character per stream: token (B,) -> logits (B, V) and the next hidden state.

        The same function as forward() with T = 1, computed layer by layer with
        PyTorch's single-step cell kernels (torch.lstm_cell, gru_cell,
        rnn_tanh_cell) on the module's own weights. For one step at a time
        these are several times faster on a CPU than nn.LSTM's oneDNN path,
        which is the fastest for whole windows, so training keeps forward()
        and sampling uses this (bench/sampling.py measures both).
        """
        logits, layers = self.step_layers(token, self.split_hidden(hidden, token.shape[0], token.device))
        return logits, self.join_hidden(layers)

    def step_layers(self, token: torch.Tensor, layers: list) -> tuple[torch.Tensor, list]:
        """step() on the hidden state kept as one entry per layer ((h, c) or h, each (B, H)).

        A sampling loop keeps this form between steps: stacking and slicing
        the (L, B, H) form would add four small ops per character.
        """
        x = self.embedding(token)  # (B, E)
        new_layers = []
        for state, weights in zip(layers, self.rnn.all_weights):  # weights: [w_ih, w_hh, b_ih, b_hh]
            if self.spec.cell == "lstm":
                state = torch.lstm_cell(x, state, *weights)  # (h, c), (B, H) each
                x = state[0]
            else:
                cell = torch.gru_cell if self.spec.cell == "gru" else torch.rnn_tanh_cell
                state = x = cell(x, state, *weights)  # (B, H)
            new_layers.append(state)
        return self.head(x), new_layers  # (B, V); dropout is identity at inference

    def split_hidden(self, hidden: Hidden | None, batch: int, device: torch.device | None = None) -> list:
        """(L, B, H) hidden state (or None: zeros) -> one entry per layer."""
        if hidden is None:
            zeros = torch.zeros(self.spec.num_layers, batch, self.spec.hidden_size, device=device,
                                dtype=self.head.weight.dtype)
            hidden = (zeros, zeros) if self.spec.cell == "lstm" else zeros
        if self.spec.cell == "lstm":
            return list(zip(hidden[0].unbind(0), hidden[1].unbind(0)))
        return list(hidden.unbind(0))

    def join_hidden(self, layers: list) -> Hidden:
        if self.spec.cell == "lstm":
            return torch.stack([h for h, _ in layers]), torch.stack([c for _, c in layers])
        return torch.stack(layers)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def detach_hidden(hidden: Hidden | None, dtype: torch.dtype | None = None) -> Hidden | None:
    """Cut the graph at a window boundary but keep the values (truncated BPTT), optionally as `dtype`."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.detach().to(dtype or h.dtype) for h in hidden)
    return hidden.detach().to(dtype or hidden.dtype)


def hidden_to_tensors(hidden: Hidden | None) -> dict[str, torch.Tensor]:
    """Name the parts of a hidden state, for saving: {'h': ...} or {'h': ..., 'c': ...}."""
    if hidden is None:
        return {}
    if isinstance(hidden, tuple):
        return {"h": hidden[0], "c": hidden[1]}
    return {"h": hidden}


def hidden_from_tensors(tensors: dict[str, torch.Tensor]) -> Hidden | None:
    if not tensors:
        return None
    if "c" in tensors:
        return (tensors["h"], tensors["c"])
    return tensors["h"]
