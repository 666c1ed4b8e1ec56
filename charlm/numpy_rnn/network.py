"""The whole network in numpy: embedding -> L recurrent layers -> linear head, its loss and its backward pass.

The same model as charlm's `CharRNN`, with its state_dict's names and shapes:

    embedding.weight  E (V, D)         e_t = E[x_t]                                  (T, B, D)
    rnn.*_l{k}        layer k          h^k_t = cell(h^{k-1}_t, state^k_{t-1}), h^0 = e  (T, B, H)
    head.weight  W_y (V, H)            z_t = drop(h^L_t) W_y^T + b_y   (logits)      (T, B, V)
    head.bias    b_y (V,)

Dropout (rate p) is applied to every layer's output, the last one included, as CharRNN's
`nn.RNN(dropout=p)` (between layers) plus its `nn.Dropout` before the head do: inverted
dropout, h ⊙ m / (1 - p) with m ~ Bernoulli(1 - p). Its masks come from a numpy Generator
(they are not torch's masks), and with `rng=None` there is none (evaluation).

`params` is a dict name -> array in PyTorch's order; its dtype (float32 or float64) is the
dtype of every computation. The carried state is (L, B, H), a pair (h, c) for lstm, or None
for zeros, exactly as `nn.RNN` / `nn.LSTM` / `nn.GRU` take and return it.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from charlm.numpy_rnn.cells import BACKWARD, FORWARD, GATES, LayerWeights

State = np.ndarray | tuple[np.ndarray, np.ndarray]


class SpecLike(Protocol):
    """The model's sizes: charlm's ModelSpec has these fields (so would a dataclass without torch)."""

    vocab_size: int
    cell: str
    hidden_size: int
    num_layers: int
    embedding_size: int
    dropout: float


def layer_names(k: int) -> LayerWeights:
    """The state_dict names of layer k's four tensors."""
    return LayerWeights(*(f"rnn.{name}_l{k}" for name in LayerWeights._fields))


def num_layers(params: dict[str, np.ndarray]) -> int:
    return sum(1 for name in params if name.startswith("rnn.weight_ih_l"))


def init_params(spec: SpecLike, rng: np.random.Generator, dtype=np.float32) -> dict[str, np.ndarray]:
    """Fresh weights drawn from PyTorch's default distributions (not its random stream):

    embedding ~ N(0, 1); every recurrent tensor ~ U(-1/√H, 1/√H); the head's weight is
    kaiming_uniform(a=√5), which works out to U(-1/√H, 1/√H) as well, and its bias U(-1/√H, 1/√H).
    """
    size, gates = spec.hidden_size, GATES[spec.cell]
    bound = 1.0 / math.sqrt(size)
    params = {"embedding.weight": rng.standard_normal((spec.vocab_size, spec.embedding_size))}
    inputs = spec.embedding_size
    for k in range(spec.num_layers):
        shapes = LayerWeights((gates * size, inputs), (gates * size, size), (gates * size,), (gates * size,))
        for name, shape in zip(layer_names(k), shapes):
            params[name] = rng.uniform(-bound, bound, shape)
        inputs = size
    params["head.weight"] = rng.uniform(-bound, bound, (spec.vocab_size, size))
    params["head.bias"] = rng.uniform(-bound, bound, (spec.vocab_size,))
    return {name: value.astype(dtype) for name, value in params.items()}


def zero_state(params: dict[str, np.ndarray], cell: str, batch: int) -> State:
    size = params["rnn.weight_hh_l0"].shape[1]
    zeros = np.zeros((num_layers(params), batch, size), dtype=params["head.weight"].dtype)
    return (zeros, zeros.copy()) if cell == "lstm" else zeros


def _layer_state(state: State, k: int, cell: str):
    return (state[0][k], state[1][k]) if cell == "lstm" else state[k]


def _stack_states(states: list, cell: str) -> State:
    if cell == "lstm":
        return np.stack([h for h, _ in states]), np.stack([c for _, c in states])
    return np.stack(states)


def forward(params: dict[str, np.ndarray], x: np.ndarray, state: State | None, cell: str,
            dropout: float = 0.0, rng: np.random.Generator | None = None):
    """x (T, B) int ids -> logits (T, B, V), the state after the last step, and the cache for backward."""
    if state is None:
        state = zero_state(params, cell, x.shape[1])
    hs = params["embedding.weight"][x]  # (T, B, D)
    layers, new_states, masks = [], [], []
    for k in range(num_layers(params)):
        weights = LayerWeights(*(params[name] for name in layer_names(k)))
        out, last, cache = FORWARD[cell](hs, _layer_state(state, k, cell), weights)  # (T, B, H)
        mask = None
        if dropout > 0 and rng is not None:
            # The mask already holds the 1/(1-p) rescaling, so backward multiplies by the same array.
            mask = (rng.random(out.shape) >= dropout).astype(out.dtype) / out.dtype.type(1.0 - dropout)
            out = out * mask
        layers.append((weights, cache))
        new_states.append(last)
        masks.append(mask)
        hs = out
    steps, batch, size = hs.shape
    logits = (hs.reshape(steps * batch, size) @ params["head.weight"].T + params["head.bias"])  # (T·B, V)
    cache = {"x": x, "layers": layers, "masks": masks, "top": hs}
    return logits.reshape(steps, batch, -1), _stack_states(new_states, cell), cache


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy over the window and its gradient:

        L = 1/N Σ_n (log Σ_v exp(z_nv) - z_{n,y_n})      z = logits, y = targets, N = T·B positions
        dL/dz_n = (softmax(z_n) - onehot(y_n)) / N

    Subtracting each row's maximum first keeps exp() finite; it cancels in both lines.
    """
    vocab = logits.shape[-1]
    rows = logits.reshape(-1, vocab)  # (N, V)
    targets = y.reshape(-1)  # (N,)
    shifted = rows - rows.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)  # (N, 1)
    picked = np.arange(len(targets))
    loss = float(np.mean(np.log(total[:, 0]) - shifted[picked, targets]))
    d_rows = exp / total  # softmax, (N, V)
    d_rows[picked, targets] -= 1.0
    d_rows /= len(targets)
    return loss, d_rows.reshape(logits.shape)


def backward(params: dict[str, np.ndarray], cache: dict, d_logits: np.ndarray, cell: str):
    """d_logits (T, B, V) -> (a gradient for every parameter, named as `params`; dL/d(carried state)).

        dW_y = Σ_n dz_n^T h^L_n     db_y = Σ_n dz_n     dh^L = dz W_y     (h^L after dropout)
        then each layer from the top: its dropout mask m gives d_out = dh^k ⊙ m (m already
        holds the 1/(1-p)), and its BPTT (cells.py) gives dh^{k-1}, the layer below's dh
        dE[v] = Σ_{n: x_n = v} de_n  (rows of the embedding that were looked up)

    The state gradient is returned for tests and teaching; training drops it (see cells.py).
    """
    steps, batch, vocab = d_logits.shape
    d_rows = d_logits.reshape(steps * batch, vocab)  # (T·B, V)
    top = cache["top"]
    grads = {"head.weight": d_rows.T @ top.reshape(steps * batch, -1),  # (V, H)
             "head.bias": d_rows.sum(axis=0)}
    d_hs = (d_rows @ params["head.weight"]).reshape(steps, batch, -1)  # (T, B, H)
    d_states = []
    for k in reversed(range(len(cache["layers"]))):
        if cache["masks"][k] is not None:
            d_hs = d_hs * cache["masks"][k]
        weights, layer_cache = cache["layers"][k]
        d_hs, layer_grads, d_state = BACKWARD[cell](d_hs, layer_cache, weights)  # d_hs: (T, B, input size)
        grads.update(zip(layer_names(k), layer_grads))
        d_states.insert(0, d_state)
    d_embedding = np.zeros_like(params["embedding.weight"])  # (V, D)
    # add.at sums rows of repeated ids; d_embedding[ids] += rows would keep only one of them.
    np.add.at(d_embedding, cache["x"].reshape(-1), d_hs.reshape(steps * batch, -1))
    grads["embedding.weight"] = d_embedding
    return {name: grads[name] for name in params}, _stack_states(d_states, cell)


def loss_and_gradients(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, state: State | None,
                       cell: str, dropout: float = 0.0, rng: np.random.Generator | None = None):
    """One window's forward, loss and backward: -> (loss, grads, state after the window, dL/d(state in))."""
    logits, new_state, cache = forward(params, x, state, cell, dropout, rng)
    loss, d_logits = cross_entropy(logits, y)
    grads, d_state = backward(params, cache, d_logits, cell)
    return loss, grads, new_state, d_state
