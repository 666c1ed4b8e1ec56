"""Regularising the recurrence, as AWD-LSTM does (Merity et al. 2018), on PyTorch's fused kernels.

Plain dropout draws a new mask at every time step, which on a recurrent
network mostly adds noise to what the state is trying to remember. These
keep one mask for a whole window:

- weight drop (DropConnect on W_hh): one Bernoulli mask over each layer's
  hidden-to-hidden matrix per window, the same for every stream and step;
- locked (variational) dropout: one mask per stream over the features,
  shared by every step of the window, on the embedding output, between
  layers and before the head;
- embedding dropout: whole characters' embeddings dropped (one mask over
  the vocabulary rows per window), so the model cannot lean on any one
  character always being visible.

Masks are drawn from torch's global generator, which a checkpoint saves, so
resume stays bitwise exact. In evaluation none of this runs: the model's
forward() takes its ordinary multi-layer kernel with the weights as they are
(every mask is scaled by 1/(1-p) in training, so expectations match).

The layers run one call each on the same fused kernels nn.LSTM uses
(torch.lstm / torch.gru / torch.rnn_tanh: oneDNN on a CPU, cuDNN on a GPU),
with the dropped matrix passed in place of the parameter, so the gradient
reaches the parameter through the mask and nothing is re-registered or
re-flattened in the module. On a GPU the passed weights are not part of
cuDNN's flat buffer, so PyTorch gathers them once per call (a copy of the
weights, not of the activations) and warns that it does; the warning is
silenced here because it is expected.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

_KERNELS = {"lstm": torch.lstm, "gru": torch.gru, "rnn": torch.rnn_tanh}


def keep_mask(shape, p: float, like: torch.Tensor) -> torch.Tensor:
    """Bernoulli(1 - p) mask scaled by 1 / (1 - p), so the expected value is unchanged."""
    return like.new_empty(shape).bernoulli_(1.0 - p).div_(1.0 - p)


def locked_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """x (T, B, F): one mask per stream and feature, the same at every step."""
    if p <= 0:
        return x
    return x * keep_mask((1, x.shape[1], x.shape[2]), p, x)  # (1, B, F) broadcast over T


def embedded_dropout(weight: torch.Tensor, p: float) -> torch.Tensor:
    """weight (V, E): whole rows (characters) dropped for this window."""
    if p <= 0:
        return weight
    return weight * keep_mask((weight.shape[0], 1), p, weight)  # (V, 1)


def regularised_forward(model, x: torch.Tensor, hidden):
    """model.forward in training with weight drop, locked dropout and/or embedding dropout. x: (T, B)."""
    spec = model.spec
    emb = F.embedding(x, embedded_dropout(model.embedding.weight, spec.embedding_dropout))  # (T, B, E)
    out = locked_dropout(emb, spec.locked_dropout)
    layers = (model.split_hidden(hidden, x.shape[1], x.device) if hidden is not None
              else [None] * spec.num_layers)
    kernel, finals = _KERNELS[spec.cell], []
    for index, (w_ih, w_hh, b_ih, b_hh) in enumerate(model.rnn.all_weights):
        if spec.weight_drop > 0:
            w_hh = w_hh * keep_mask(w_hh.shape, spec.weight_drop, w_hh)  # (G, H), one mask per window
        state = layers[index]
        if state is None:
            zeros = out.new_zeros(1, x.shape[1], spec.hidden_size, dtype=model.embedding.weight.dtype)
            state = (zeros, zeros) if spec.cell == "lstm" else zeros
        else:
            state = (state[0].unsqueeze(0), state[1].unsqueeze(0)) if spec.cell == "lstm" else state.unsqueeze(0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
            result = kernel(out, state, [w_ih, w_hh, b_ih, b_hh], True, 1, 0.0, True, False, False)
        out = result[0]  # (T, B, H)
        finals.append((result[1][0], result[2][0]) if spec.cell == "lstm" else result[1][0])
        if index < spec.num_layers - 1:  # between layers: locked dropout, or else plain dropout as nn.LSTM's
            out = (locked_dropout(out, spec.locked_dropout) if spec.locked_dropout > 0
                   else F.dropout(out, spec.dropout, training=True))
    out = locked_dropout(out, spec.locked_dropout)
    return model.logits(model.dropout(out)), model.join_hidden(finals)  # (T, B, V)
