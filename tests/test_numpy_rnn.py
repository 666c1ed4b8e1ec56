"""charlm.numpy_rnn against oracles it does not share code with: central differences,
torch.autograd through charlm's CharRNN, torch.optim.AdamW + clip_grad_norm_, a torch training
loop, and charlm's own checkpoint readers."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file

from charlm.engine.checkpoint import join_optimizer_state, load_weights, read_tensors
from charlm.engine.schedule import lr_multiplier
from charlm.numpy_rnn import AdamW, NumpyCharRNN, clip_grad_norm, init_params, loss_and_gradients
from charlm.numpy_rnn.network import forward
from charlm.tasks.lm.model import CharRNN, ModelSpec, detach_hidden

REPO = Path(__file__).resolve().parent.parent
CELLS = ["rnn", "lstm", "gru"]
# vocab, embedding, hidden, layers, window, batch: tiny, but T >= 25 and two layers as issue 15 asks.
V, D, H, L, T, B = 7, 5, 6, 2, 25, 3
STEP = 1e-5  # central-difference step


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tensors are tiny: on a busy 2-core machine torch's second thread made the torch side ~40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_case(cell: str, seed: int = 0, dropout: float = 0.0):
    """Weights, a window and a non-zero carried state, all float64."""
    rng = np.random.default_rng(seed)
    spec = ModelSpec(vocab_size=V, cell=cell, hidden_size=H, num_layers=L, embedding_size=D, dropout=dropout)
    params = init_params(spec, rng, np.float64)
    x, y = rng.integers(V, size=(T, B)), rng.integers(V, size=(T, B))
    state = rng.normal(0.0, 0.5, (L, B, H))
    if cell == "lstm":
        state = (state, rng.normal(0.0, 0.5, (L, B, H)))
    return spec, params, x, y, state


def relative_error(a, n):
    return np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), 1e-8)


def torch_model(spec: ModelSpec, params: dict, dtype=torch.float64) -> CharRNN:
    model = CharRNN(spec).to(dtype)
    model.load_state_dict({name: torch.from_numpy(value.copy()) for name, value in params.items()})
    return model


def torch_state(state, requires_grad=False):
    if isinstance(state, tuple):
        return tuple(torch.tensor(s, requires_grad=requires_grad) for s in state)
    return torch.tensor(state, requires_grad=requires_grad)


def state_parts(state) -> list:
    return list(state) if isinstance(state, tuple) else [state]


# -- the hand-written backward against central differences ----------------------------------

# Float64 central differences at h = 1e-5 resolve a derivative to about 1e-12 absolute (rounding
# in the logits, ~1e-16, over 2h; over every entry of these three cases: median 8e-13, max 5e-12).
# So 1e-7 relative is a bar the method itself can clear only for |gradient| >= 1e-4 (worst seen
# there 1.2e-8; between 1e-5 and 1e-4 it reaches 1.0e-7). The relative check samples those
# entries; smaller ones, a minority, are sampled too and held to an absolute bound instead.
RESOLVED = 1e-4
NOISE = 5e-11


def per_position_losses(params, x, y, state, cell, dropout=0.0, seed=None):
    """-log softmax(logits)[target] at each of the T·B positions, written here rather than taken from the engine.

    The check sums the per-position differences L_n(+h) - L_n(-h) instead of differencing the
    two means: the same derivative, without the rounding of a running sum near T·B·log V.
    """
    rng = np.random.default_rng(seed) if seed is not None else None  # the same dropout masks every call
    logits = forward(params, x, state, cell, dropout, rng)[0].reshape(-1, V)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(shifted)), y.reshape(-1)]


def numerical_derivative(array, index, losses) -> float:
    flat = array.reshape(-1)
    original = flat[index]
    flat[index] = original + STEP
    plus = losses()
    flat[index] = original - STEP
    minus = losses()
    flat[index] = original
    return float(np.sum(plus - minus) / (2 * STEP * plus.size))


def check_sampled_entries(analytic, array, losses, rng, resolved_samples, small_samples=2) -> float:
    """Compare sampled entries of one tensor's gradient with central differences; return the worst relative error."""
    flat = analytic.reshape(-1)
    large = np.flatnonzero(np.abs(flat) >= RESOLVED)
    small = np.flatnonzero(np.abs(flat) < RESOLVED)
    assert len(large) >= resolved_samples  # otherwise the check would prove nothing
    worst = 0.0
    for index in rng.choice(large, resolved_samples, replace=False):
        error = relative_error(flat[index], numerical_derivative(array, index, losses))
        assert error <= 1e-7, (index, flat[index], error)
        worst = max(worst, error)
    for index in rng.choice(small, min(small_samples, len(small)), replace=False):
        assert abs(flat[index] - numerical_derivative(array, index, losses)) <= NOISE
    return worst


def gradient_check(cell, dropout=0.0, samples=6) -> dict[str, float]:
    spec, params, x, y, state = make_case(cell, dropout=dropout)
    seed = 7 if dropout else None
    _, grads, _, d_state = loss_and_gradients(params, x, y, state, cell, dropout,
                                              np.random.default_rng(seed) if dropout else None)
    rng = np.random.default_rng(1)
    losses = lambda: per_position_losses(params, x, y, state, cell, dropout, seed)  # noqa: E731
    worst = {name: check_sampled_entries(grads[name], params[name], losses, rng, samples) for name in params}
    # The gradient into the carried state (dropped in training, but it must still be right).
    for part, (value, grad) in enumerate(zip(state_parts(state), state_parts(d_state))):
        worst[f"state[{part}]"] = check_sampled_entries(grad, value, losses, rng, samples)
    return worst


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_central_differences(cell):
    worst = gradient_check(cell)
    assert len(worst) == 11 + (2 if cell == "lstm" else 1)  # every parameter, and the state


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_with_dropout_match_central_differences(cell):
    gradient_check(cell, dropout=0.3, samples=2)


def test_dropout_keeps_the_expected_logits():
    """Inverted dropout, as nn.Dropout: with one layer the head is linear in the dropped-out
    output, so train-mode logits average out to the evaluation logits."""
    spec, params, x, _, state = make_case("gru", dropout=0.5)
    params = {name: value for name, value in params.items() if "_l1" not in name}  # one layer
    state = state[:1]
    evaluation = forward(params, x, state, "gru")[0]  # (T, B, V)
    rng = np.random.default_rng(0)
    draws = np.array([forward(params, x, state, "gru", 0.5, rng)[0] for _ in range(500)])
    assert np.abs(draws[0] - evaluation).max() > 0.3  # a single draw is far off: dropout is on
    assert np.abs(draws.mean(axis=0) - evaluation).max() < 0.1  # without the 1/(1-p) it is ~0.3


# -- against torch.autograd ------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_forward_and_gradients_equal_autograd(cell):
    spec, params, x, y, state = make_case(cell)
    loss, grads, new_state, d_state = loss_and_gradients(params, x, y, state, cell)
    model = torch_model(spec, params)
    state0 = torch_state(state, requires_grad=True)
    logits, hidden = model(torch.from_numpy(x), state0)
    torch_loss = F.cross_entropy(logits.flatten(0, 1), torch.from_numpy(y).flatten())
    torch_loss.backward()
    assert relative_error(loss, torch_loss.item()) <= 1e-12
    for ours, theirs in zip(state_parts(new_state), state_parts(hidden)):
        assert relative_error(ours, theirs.detach().numpy()).max() <= 1e-12
    for name, parameter in model.named_parameters():
        assert grads[name].shape == tuple(parameter.shape)
        assert relative_error(grads[name], parameter.grad.numpy()).max() <= 1e-9, name
    for ours, theirs in zip(state_parts(d_state), state_parts(state0)):
        assert relative_error(ours, theirs.grad.numpy()).max() <= 1e-9


# -- AdamW and clipping against torch's ---------------------------------------------------------

def torch_optimizer(parameters: list, weight_decay: float) -> torch.optim.AdamW:
    """charlm's make_optimizer: matrices decay, the rest do not; fused on the CPU."""
    groups = [{"params": [p for p in parameters if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-3, fused=True)


def test_adamw_and_clipping_steps_equal_torch():
    _, params, *_ = make_case("lstm")
    torch_params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params.values()]
    optimizer, ours = torch_optimizer(torch_params, 0.1), AdamW(params, 0.1)
    rng = np.random.default_rng(3)
    clip, clipped = 1.0, []
    for gradient_scale, lr in [(1.0, 1e-2), (0.01, 5e-3), (30.0, 2e-2), (0.003, 1e-3), (1.0, 3e-2)]:
        grads = {name: rng.normal(0.0, gradient_scale, p.shape) for name, p in params.items()}
        for parameter, grad in zip(torch_params, grads.values()):
            parameter.grad = torch.from_numpy(grad.copy())
        torch_norm = torch.nn.utils.clip_grad_norm_(torch_params, clip).item()
        norm = clip_grad_norm(grads, clip)
        assert relative_error(norm, torch_norm) <= 1e-14
        clipped.append(norm > clip)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        ours.step(params, grads, lr)
        for value, parameter in zip(params.values(), torch_params):
            assert relative_error(value, parameter.detach().numpy()).max() <= 1e-12
    assert any(clipped) and not all(clipped)  # both branches of the clip ran


# -- a short training run against a torch loop ----------------------------------------------------

def stream_windows(seq_len: int, batch: int, count: int, seed: int = 0):
    """(x, y) windows of a batch of streams over a repetitive text, as the lm task lays them out."""
    rng = np.random.default_rng(seed)
    text = np.tile(np.arange(V), 60)
    text = np.where(rng.random(text.size) < 0.1, rng.integers(V, size=text.size), text)  # some noise
    streams = text[:batch * (count * seq_len + 1)].reshape(batch, -1)  # (B, S)
    return [(streams[:, k * seq_len:(k + 1) * seq_len].T.copy(),
             streams[:, k * seq_len + 1:(k + 1) * seq_len + 1].T.copy()) for k in range(count)]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-8), ("float32", 1e-4)])
def test_fifty_training_steps_equal_a_torch_loop(cell, dtype, tolerance):
    spec = ModelSpec(vocab_size=V, cell=cell, hidden_size=8, num_layers=2, embedding_size=D, dropout=0.0)
    steps, peak_lr, clip, weight_decay = 50, 0.02, 0.25, 0.1
    ours = NumpyCharRNN(spec, weight_decay=weight_decay, clip=clip, dtype=dtype, seed=0)
    model = torch_model(spec, ours.params, getattr(torch, dtype))
    parameters = list(model.parameters())
    optimizer = torch_optimizer(parameters, weight_decay)
    windows = stream_windows(seq_len=10, batch=4, count=8)
    state = hidden = None
    our_losses, torch_losses, norms = [], [], []
    for step in range(steps):
        if step % len(windows) == 0:
            state = hidden = None  # an epoch boundary: fresh state, as the loop does
        x, y = windows[step % len(windows)]
        lr = peak_lr * lr_multiplier("cosine", step, 5, step / steps, 0.1)
        result = ours.train_step(x, y, state, lr)
        state = result.state
        our_losses.append(result.loss)
        norms.append(result.grad_norm)

        logits, hidden = model(torch.from_numpy(x), hidden)
        loss = F.cross_entropy(logits.flatten(0, 1), torch.from_numpy(y).flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, clip)
        hidden = detach_hidden(hidden)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        torch_losses.append(loss.item())
    assert np.max(np.abs(np.array(our_losses) - np.array(torch_losses))) <= tolerance
    assert our_losses[-1] < our_losses[0] - 0.3  # it learned something
    assert any(n > clip for n in norms)  # clipping took part


# -- checkpoints: the same files as the torch engine's ----------------------------------------------

def test_weights_written_with_safetensors_numpy_load_into_charlm(tmp_path):
    spec = ModelSpec(vocab_size=V, cell="gru", hidden_size=H, num_layers=L, embedding_size=D)
    ours = NumpyCharRNN(spec, clip=1.0)
    x, y = stream_windows(seq_len=10, batch=4, count=1)[0]
    ours.train_step(x, y, None, 0.01)
    path = tmp_path / "weights.safetensors"
    save_file(ours.state_dict(), str(path))
    model = CharRNN(spec)
    load_weights(model, read_tensors(path), path)
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(x))
    np.testing.assert_allclose(ours.forward(x)[0], logits.numpy(), rtol=1e-5, atol=1e-6)


def test_optimizer_state_resumes_in_numpy_and_in_torch(tmp_path):
    spec = ModelSpec(vocab_size=V, cell="lstm", hidden_size=H, num_layers=L, embedding_size=D)
    windows = stream_windows(seq_len=10, batch=4, count=5)
    ours = NumpyCharRNN(spec, weight_decay=0.1, clip=1.0, dtype="float64")
    for x, y in windows[:3]:
        ours.train_step(x, y, None, 0.01)
    tensors, info = ours.optimizer_state()
    path = tmp_path / "state.safetensors"
    save_file(tensors, str(path))

    resumed = NumpyCharRNN(spec, weight_decay=0.1, clip=1.0, dtype="float64", params=ours.params)
    resumed.load_optimizer_state(load_file(str(path)))
    model = torch_model(spec, ours.params)
    optimizer = torch_optimizer(list(model.parameters()), 0.1)
    optimizer.load_state_dict(join_optimizer_state(read_tensors(path), info))
    for x, y in windows[3:]:
        expected = ours.train_step(x, y, None, 0.01).loss
        assert resumed.train_step(x, y, None, 0.01).loss == expected
        loss = F.cross_entropy(model(torch.from_numpy(x))[0].flatten(0, 1), torch.from_numpy(y).flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
        optimizer.step()
        assert relative_error(loss.item(), expected) <= 1e-12
    for name, parameter in model.named_parameters():
        assert relative_error(ours.params[name], parameter.detach().numpy()).max() <= 1e-10


def test_float32_stays_float32():
    spec = ModelSpec(vocab_size=V, cell="lstm", hidden_size=H, num_layers=L, embedding_size=D, dropout=0.2)
    ours = NumpyCharRNN(spec, weight_decay=0.1, clip=1.0)
    x, y = stream_windows(seq_len=10, batch=4, count=1)[0]
    result = ours.train_step(x, y, None, 0.01)
    logits, _ = ours.forward(x, result.state)
    arrays = [*ours.params.values(), *ours.optimizer.state_tensors().values(), *result.state, logits]
    assert {a.dtype for a in arrays} == {np.dtype(np.float32)}


# -- the package stays torch-free ----------------------------------------------------------------------

def test_numpy_engine_never_imports_torch():
    script = ("import sys, types, numpy as np\n"
              "from charlm.numpy_rnn import NumpyCharRNN\n"
              "spec = types.SimpleNamespace(vocab_size=5, cell='lstm', hidden_size=4, num_layers=2,"
              " embedding_size=3, dropout=0.1)\n"
              "x = np.zeros((6, 2), dtype=np.int64)\n"
              "result = NumpyCharRNN(spec, clip=1.0).train_step(x, x, None, 1e-3)\n"
              "assert result.applied and np.isfinite(result.loss)\n"
              "assert 'torch' not in sys.modules, 'torch was imported'\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    completed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
