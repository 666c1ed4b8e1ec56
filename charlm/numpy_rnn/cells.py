"""One recurrent layer over a whole window, forward and backward, for `rnn`, `lstm` and `gru`.

Notation, in PyTorch's layout (each row of a matrix is one stream of the batch):

    x_t  (B, I)       the layer's input at step t (an embedding, or the layer below's h_t)
    h_t  (B, H)       its hidden state; c_t (B, H) the LSTM's cell state
    W_ih (G·H, I)     weight_ih_l{k};  W_hh (G·H, H) weight_hh_l{k}
    b_ih, b_hh (G·H,) bias_ih_l{k}, bias_hh_l{k}
    G = 1, 4, 3 gates for rnn, lstm, gru, stacked in PyTorch's order: lstm i, f, g, o; gru r, z, n
    σ the logistic sigmoid, ⊙ the elementwise product, d· the gradient dL/d· of the loss

Textbooks (min-char-rnn, d2l) write one column vector: h_t = tanh(W_hh h_{t-1} + W_xh x_t + b_h).
With the batch as rows that reads h_t = tanh(x_t W_ih^T + h_{t-1} W_hh^T + b_ih + b_hh): W_xh is
W_ih, and PyTorch keeps two biases where the textbook has one (only their sum matters, except in
the GRU's n gate).

Steps are numbered t = 1..T, and h_0 (with c_0) is the state carried in from the window
before. Arrays are 0-based: hs (T+1, B, H) holds h_0..h_T, so a loop's hs[t] is the previous
state and hs[t + 1] the new one, while xs[t], gates[t], ... belong to step t + 1.

Each `*_forward(xs, state, w)` takes xs (T, B, I) and the carried state, and returns the outputs
h_1..h_T (T, B, H), the state after the last step and a cache. Each `*_backward(d_out, cache, w)`
takes d_out (T, B, H), the gradient arriving at every h_t from above (the next layer or the
head), runs backpropagation through time from t = T down to 1, and returns
(d_xs, weight gradients, d_state0).

d_state0 is the gradient into the carried state, dL/dh_0 (and dL/dc_0). It falls out of the
recursion for free and tests compare it with autograd's, but training drops it: the torch loop
calls `hidden.detach()` at the window edge, so the previous window never receives a gradient.
Truncated BPTT is exactly "compute it, then throw it away".

Two things are done for the whole window at once, outside the loop over t, as cuDNN does:
the input products x_t W_ih^T + b_ih do not depend on h, so they are one (T·B, I) x (I, G·H)
matmul before the loop; and the weight gradients are sums over t (dW_hh = Σ_t da_t^T h_{t-1}),
so they are one matmul each after it. Only h_{t-1} W_hh^T, forward, and da_t W_hh, backward,
must wait for the step before.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LayerWeights(NamedTuple):
    """The four tensors of one layer, named as in PyTorch (also used for their gradients)."""

    weight_ih: np.ndarray  # (G·H, I)
    weight_hh: np.ndarray  # (G·H, H)
    bias_ih: np.ndarray  # (G·H,)
    bias_hh: np.ndarray  # (G·H,)


def sigmoid(a: np.ndarray) -> np.ndarray:
    """σ(a) = 1 / (1 + e^-a), written as (1 + tanh(a/2)) / 2: the same function, and e^-a cannot overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def split_gates(a: np.ndarray, count: int) -> list[np.ndarray]:
    """(B, count·H) -> count views (B, H), one per gate (np.split does the same with more overhead)."""
    size = a.shape[1] // count
    return [a[:, k * size:(k + 1) * size] for k in range(count)]


def input_products(xs: np.ndarray, w: LayerWeights) -> np.ndarray:
    """x_t W_ih^T + b_ih for every t in one matmul: (T, B, I) -> (T, B, G·H)."""
    steps, batch, inputs = xs.shape
    return (xs.reshape(steps * batch, inputs) @ w.weight_ih.T + w.bias_ih).reshape(steps, batch, -1)


def window_gradients(xs: np.ndarray, h_prev: np.ndarray, d_gx: np.ndarray, d_gh: np.ndarray,
                     w: LayerWeights) -> tuple[np.ndarray, LayerWeights]:
    """Sum the per-step weight gradients over the window, one matmul each, and pass d_x down.

    d_gx (T, B, G·H) is dL/d(x_t W_ih^T + b_ih), d_gh (T, B, G·H) is dL/d(h_{t-1} W_hh^T + b_hh)
    (the same array for rnn and lstm; GRU's n gate differs), h_prev (T, B, H) holds h_{t-1}:

        dW_ih = Σ_t d_gx_t^T x_t     db_ih = Σ_t Σ_b d_gx_t     d_x_t = d_gx_t W_ih
        dW_hh = Σ_t d_gh_t^T h_{t-1}  db_hh = Σ_t Σ_b d_gh_t
    """
    steps, batch, _ = xs.shape
    d_gx_rows = d_gx.reshape(steps * batch, -1)  # (T·B, G·H)
    d_gh_rows = d_gh.reshape(steps * batch, -1)  # (T·B, G·H)
    grads = LayerWeights(weight_ih=d_gx_rows.T @ xs.reshape(steps * batch, -1),
                         weight_hh=d_gh_rows.T @ h_prev.reshape(steps * batch, -1),
                         bias_ih=d_gx_rows.sum(axis=0), bias_hh=d_gh_rows.sum(axis=0))
    # Flattened to 2-D: numpy runs a 3-D @ 2-D product as T separate matmuls (1.4x slower at B=32, H=256).
    return (d_gx_rows @ w.weight_ih).reshape(steps, batch, -1), grads  # (T, B, I)


# -- rnn -----------------------------------------------------------------------

def rnn_forward(xs: np.ndarray, h0: np.ndarray, w: LayerWeights):
    """Elman RNN:  h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh).

    Cache: xs, and hs (T+1, B, H) = h_0..h_T.
    """
    steps, batch, _ = xs.shape
    gx = input_products(xs, w)  # (T, B, H)
    hs = np.empty((steps + 1, batch, h0.shape[1]), dtype=xs.dtype)
    hs[0] = h0
    for t in range(steps):
        hs[t + 1] = np.tanh(gx[t] + hs[t] @ w.weight_hh.T + w.bias_hh)  # (B, H)
    return hs[1:], hs[steps], (xs, hs)


def rnn_backward(d_out: np.ndarray, cache, w: LayerWeights):
    """With a_t the argument of tanh, going back from t = T:

        dh_t = d_out_t + da_{t+1} W_hh       (the second term is 0 at t = T)
        da_t = dh_t ⊙ (1 - h_t²)            tanh' = 1 - tanh²
    and finally dh_0 = da_1 W_hh, the gradient into the carried state.
    """
    xs, hs = cache
    da = np.empty_like(d_out)  # (T, B, H)
    dh_next = np.zeros_like(hs[0])  # (B, H): da_{t+1} W_hh
    for t in reversed(range(len(d_out))):
        dh = d_out[t] + dh_next
        da[t] = dh * (1.0 - hs[t + 1] * hs[t + 1])
        dh_next = da[t] @ w.weight_hh
    d_xs, grads = window_gradients(xs, hs[:-1], da, da, w)
    return d_xs, grads, dh_next


# -- lstm ----------------------------------------------------------------------

def lstm_forward(xs: np.ndarray, state: tuple[np.ndarray, np.ndarray], w: LayerWeights):
    """LSTM, gates in PyTorch's order i, f, g, o:

        a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh          (B, 4H), split in four (B, H)
        i_t = σ(a_i)   f_t = σ(a_f)   g_t = tanh(a_g)   o_t = σ(a_o)
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        h_t = o_t ⊙ tanh(c_t)

    Cache: xs, hs and cs (T+1, B, H) = h_0..h_T and c_0..c_T, the activated gates
    (T, B, 4H) and tanh(c_t) (T, B, H).
    """
    h0, c0 = state
    steps, batch, _ = xs.shape
    size = h0.shape[1]
    gx = input_products(xs, w)  # (T, B, 4H)
    hs = np.empty((steps + 1, batch, size), dtype=xs.dtype)
    cs = np.empty_like(hs)
    gates = np.empty_like(gx)
    tanh_c = np.empty((steps, batch, size), dtype=xs.dtype)
    hs[0], cs[0] = h0, c0
    for t in range(steps):
        a = gx[t] + hs[t] @ w.weight_hh.T + w.bias_hh  # (B, 4H)
        gates[t, :, :2 * size] = sigmoid(a[:, :2 * size])  # i and f, side by side
        gates[t, :, 2 * size:3 * size] = np.tanh(a[:, 2 * size:3 * size])  # g
        gates[t, :, 3 * size:] = sigmoid(a[:, 3 * size:])  # o
        i, f, g, o = split_gates(gates[t], 4)  # views, (B, H) each
        cs[t + 1] = f * cs[t] + i * g
        tanh_c[t] = np.tanh(cs[t + 1])
        hs[t + 1] = o * tanh_c[t]
    return hs[1:], (hs[steps], cs[steps]), (xs, hs, cs, gates, tanh_c)


def lstm_backward(d_out: np.ndarray, cache, w: LayerWeights):
    """Going back from t = T (the terms from step t+1 are 0 at t = T):

        dh_t = d_out_t + da_{t+1} W_hh
        dc_t = dc_{t+1} ⊙ f_{t+1} + dh_t ⊙ o_t ⊙ (1 - tanh²(c_t))
        da_i = dc_t ⊙ g_t ⊙ i_t(1 - i_t)        da_f = dc_t ⊙ c_{t-1} ⊙ f_t(1 - f_t)
        da_g = dc_t ⊙ i_t ⊙ (1 - g_t²)         da_o = dh_t ⊙ tanh(c_t) ⊙ o_t(1 - o_t)

    using σ' = σ(1 - σ) and tanh' = 1 - tanh². Past step 1 the same recurrences give the
    carried state's gradients: dh_0 = da_1 W_hh and dc_0 = dc_1 ⊙ f_1.
    """
    xs, hs, cs, gates, tanh_c = cache
    size = hs.shape[2]
    da = np.empty_like(gates)  # (T, B, 4H)
    dh_next = np.zeros_like(hs[0])  # (B, H): da_{t+1} W_hh
    dc_next = np.zeros_like(cs[0])  # (B, H): dc_{t+1} ⊙ f_{t+1}
    for t in reversed(range(len(d_out))):
        i, f, g, o = split_gates(gates[t], 4)  # (B, H) each
        dh = d_out[t] + dh_next
        dc = dc_next + dh * o * (1.0 - tanh_c[t] * tanh_c[t])
        da[t, :, :size] = dc * g * i * (1.0 - i)
        da[t, :, size:2 * size] = dc * cs[t] * f * (1.0 - f)
        da[t, :, 2 * size:3 * size] = dc * i * (1.0 - g * g)
        da[t, :, 3 * size:] = dh * tanh_c[t] * o * (1.0 - o)
        dc_next = dc * f
        dh_next = da[t] @ w.weight_hh
    d_xs, grads = window_gradients(xs, hs[:-1], da, da, w)
    return d_xs, grads, (dh_next, dc_next)


# -- gru -----------------------------------------------------------------------

def gru_forward(xs: np.ndarray, h0: np.ndarray, w: LayerWeights):
    """GRU, gates in PyTorch's order r, z, n:

        gx_t = x_t W_ih^T + b_ih       gh_t = h_{t-1} W_hh^T + b_hh       (B, 3H) each
        r_t = σ(gx_r + gh_r)           z_t = σ(gx_z + gh_z)
        n_t = tanh(gx_n + r_t ⊙ gh_n)  (PyTorch's variant: the reset gate multiplies W_hn h + b_hn)
        h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    The reset gate multiplies the recurrent product's n part, bias included, so GRU is the
    one cell where b_ih and b_hh are not interchangeable. Cache: xs, hs (T+1, B, H) = h_0..h_T,
    the gates r, z, n (T, B, 3H) and gh_n (T, B, H).
    """
    steps, batch, _ = xs.shape
    size = h0.shape[1]
    gx = input_products(xs, w)  # (T, B, 3H)
    hs = np.empty((steps + 1, batch, size), dtype=xs.dtype)
    gates = np.empty_like(gx)
    gh_n = np.empty((steps, batch, size), dtype=xs.dtype)
    hs[0] = h0
    for t in range(steps):
        gh = hs[t] @ w.weight_hh.T + w.bias_hh  # (B, 3H)
        gates[t, :, :2 * size] = sigmoid(gx[t, :, :2 * size] + gh[:, :2 * size])  # r and z
        r, z = gates[t, :, :size], gates[t, :, size:2 * size]
        gh_n[t] = gh[:, 2 * size:]
        n = gates[t, :, 2 * size:] = np.tanh(gx[t, :, 2 * size:] + r * gh_n[t])
        hs[t + 1] = n + z * (hs[t] - n)  # = (1 - z) n + z h_{t-1}, one multiply fewer
    return hs[1:], hs[steps], (xs, hs, gates, gh_n)


def gru_backward(d_out: np.ndarray, cache, w: LayerWeights):
    """Going back from t = T, with a_· the arguments of σ and tanh:

        dh_t = d_out_t + dh_{t+1} ⊙ z_{t+1} + d_gh_{t+1} W_hh     (the direct path and the gates'; 0 at t = T)
        da_n = dh_t ⊙ (1 - z_t) ⊙ (1 - n_t²)
        da_z = dh_t ⊙ (h_{t-1} - n_t) ⊙ z_t(1 - z_t)
        da_r = da_n ⊙ gh_n ⊙ r_t(1 - r_t)
        d_gx_t = [da_r, da_z, da_n]      d_gh_t = [da_r, da_z, da_n ⊙ r_t]

    Past step 1 the first line's last two terms, dh_1 ⊙ z_1 + d_gh_1 W_hh, are dh_0.
    """
    xs, hs, gates, gh_n = cache
    size = hs.shape[2]
    d_gx = np.empty_like(gates)  # (T, B, 3H)
    d_gh = np.empty_like(gates)  # (T, B, 3H)
    dh_next = np.zeros_like(hs[0])  # (B, H)
    for t in reversed(range(len(d_out))):
        r, z, n = split_gates(gates[t], 3)  # (B, H) each
        dh = d_out[t] + dh_next
        da_n = dh * (1.0 - z) * (1.0 - n * n)
        d_gx[t, :, size:2 * size] = dh * (hs[t] - n) * z * (1.0 - z)  # da_z
        d_gx[t, :, :size] = da_n * gh_n[t] * r * (1.0 - r)  # da_r
        d_gx[t, :, 2 * size:] = da_n
        d_gh[t, :, :2 * size] = d_gx[t, :, :2 * size]
        d_gh[t, :, 2 * size:] = da_n * r
        dh_next = dh * z + d_gh[t] @ w.weight_hh
    d_xs, grads = window_gradients(xs, hs[:-1], d_gx, d_gh, w)
    return d_xs, grads, dh_next


FORWARD = {"rnn": rnn_forward, "lstm": lstm_forward, "gru": gru_forward}
BACKWARD = {"rnn": rnn_backward, "lstm": lstm_backward, "gru": gru_backward}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
