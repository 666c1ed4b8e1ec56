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

from charlm.text.vocab import ByteVocab, Vocab

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
    # Regularisation of the recurrence (regularise.py); checkpoints from before have none.
    weight_drop: float = 0.0
    locked_dropout: float = 0.0
    embedding_dropout: float = 0.0
    tie_weights: bool = False  # the head's matrix is the embedding's (with a projection when H != E)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def regularised(self) -> bool:
        return self.weight_drop > 0 or self.locked_dropout > 0 or self.embedding_dropout > 0


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
        if spec.tie_weights:
            # Logits = E (P h) + b: the embedding matrix E (V, E) reads the output too, which saves
            # V x H weights (less a projection P of E x H when the sizes differ).
            self.projection = (nn.Linear(spec.hidden_size, spec.embedding_size, bias=False)
                               if spec.hidden_size != spec.embedding_size else None)
            self.head_bias = nn.Parameter(torch.zeros(spec.vocab_size))
        else:
            self.head = nn.Linear(spec.hidden_size, spec.vocab_size)

    def forward(self, x: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """x: (T, B) ids -> logits (T, B, V) and the hidden state after the last step."""
        if self.training and self.spec.regularised:
            from charlm.tasks.lm.regularise import regularised_forward

            return regularised_forward(self, x, hidden)
        emb = self.embedding(x)  # (T, B, E)
        out, hidden = self.rnn(emb, hidden)  # (T, B, H)
        logits = self.logits(self.dropout(out))  # (T, B, V)
        return logits, hidden

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Top-layer outputs (..., H) -> logits (..., V)."""
        if not self.spec.tie_weights:
            return self.head(h)
        if self.projection is not None:
            h = self.projection(h)  # (..., E)
        return torch.nn.functional.linear(h, self.embedding.weight, self.head_bias)

    def step(self, token: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """One character per stream: token (B,) -> logits (B, V) and the next hidden state.

        The same function as forward() with T = 1; a sampling loop should
        keep one stepper() and the per-layer state instead of calling this.
        """
        logits, layers = self.stepper()(token, self.split_hidden(hidden, token.shape[0], token.device))
        return logits, self.join_hidden(layers)

    @torch.no_grad()
    def stepper(self) -> "Stepper":
        """A single-step function over the module's current weights (take a new one after training more)."""
        return Stepper(self)

    def split_hidden(self, hidden: Hidden | None, batch: int, device: torch.device | None = None) -> list:
        """(L, B, H) hidden state (or None: zeros) -> one entry per layer."""
        if hidden is None:
            zeros = torch.zeros(self.spec.num_layers, batch, self.spec.hidden_size, device=device,
                                dtype=self.embedding.weight.dtype)
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


class Stepper:
    """The model one step at a time, built for sampling at batch size 1, where
    the cost of a step is its weight reads plus a few microseconds per op.

    - The recurrent layers run on PyTorch's single-step cell kernels
      (torch.lstm_cell, gru_cell, rnn_tanh_cell) with the module's own
      weights. One step at a time these are several times faster on a CPU
      than nn.LSTM's oneDNN path, the fastest for whole windows, so training
      keeps forward() and sampling uses this (bench/sampling.py measures both).
    - The first layer's input product, W_ih · embedding(c) + b_ih, depends on
      the character alone: it is computed once for the whole vocabulary, and a
      step passes the character's row as the input bias of a zero-width input,
      so the cell kernel adds it where it would have added its product. That
      saves the embedding lookup and one matrix product per character.

    The hidden state is kept as one entry per layer ((h, c) or h, each (B, H)):
    stacking and slicing the (L, B, H) form would add small ops per character.

    torch.compile of a whole step (inductor, with and without cpp_wrapper) ran
    at 0.54-0.60x of this eager path at hidden 256 on the 2-core CPU (6.5-6.9k
    against 10.8-12.0k chars/s), after 9-18 s of compiling: its generated
    batch-1 products are slower than MKL's, so it is not used.
    """

    def __init__(self, model: CharRNN):
        self.cell = {"lstm": torch.lstm_cell, "gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}[model.spec.cell]
        weights = [list(layer) for layer in model.rnn.all_weights]  # [w_ih, w_hh, b_ih, b_hh] per layer
        w_ih, w_hh, b_ih, b_hh = weights[0]
        self.first_input = torch.addmm(b_ih, model.embedding.weight, w_ih.t())  # (V, G)
        self.no_input = w_ih.new_zeros(1, 0)  # (B, 0): the cell's own input product is then empty
        self.no_weight = w_ih.new_zeros(w_ih.shape[0], 0)  # (G, 0)
        self.first_hidden = (w_hh, b_hh)
        self.upper = weights[1:]
        self.head = None if model.spec.tie_weights else (model.head.weight, model.head.bias)
        self.tied_logits = model.logits

    def __call__(self, token: torch.Tensor, layers: list) -> tuple[torch.Tensor, list]:
        """token (B,) ids, layers: per-layer state -> logits (B, V), next per-layer state."""
        first_input = self.first_input[token]  # (B, G)
        no_input = self.no_input if token.shape[0] == 1 else self.no_input.expand(token.shape[0], 0)
        state = self.cell(no_input, layers[0], self.no_weight, self.first_hidden[0], first_input,
                          self.first_hidden[1])
        new_layers = [state]
        for previous, weights in zip(layers[1:], self.upper):
            state = self.cell(state[0] if isinstance(state, tuple) else state, previous, *weights)  # (B, H)
            new_layers.append(state)
        x = state[0] if isinstance(state, tuple) else state
        if self.head is None:
            return self.tied_logits(x), new_layers  # (B, V)
        return torch.nn.functional.linear(x, *self.head), new_layers  # (B, V); dropout is identity here


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


def model_from_record(record: dict) -> tuple[CharRNN, Vocab | ByteVocab]:
    """An untrained CharRNN of a checkpoint's shape and its vocabulary (ValueError if they disagree)."""
    spec = ModelSpec(**record["model"])
    vocab = Vocab.from_json(record["vocab"])
    if spec.vocab_size != vocab.size:
        raise ValueError("vocabulary size does not match the model")
    return CharRNN(spec), vocab
