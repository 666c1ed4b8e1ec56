"""The numpy engine as one object for a training loop: weights, AdamW moments, a train step, a forward.

    model = NumpyCharRNN(spec, weight_decay=0.01, clip=1.0)        # spec: charlm's ModelSpec or alike
    result = model.train_step(x, y, state, lr)                      # x, y (T, B) ids; state carried
    logits, state = model.forward(x, state)                         # evaluation, no dropout

The hidden state stays with the caller, as in the torch path: pass the previous window's
`result.state` to carry it, None to reset it. Weights and optimizer state leave and enter as
dicts of arrays named as charlm's torch checkpoints name theirs, ready for safetensors.numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from charlm.numpy_rnn.network import SpecLike, State, forward, init_params, loss_and_gradients
from charlm.numpy_rnn.optim import AdamW, clip_grad_norm


@dataclass
class StepResult:
    loss: float  # mean cross-entropy of the window, nats per character, before the update
    state: State  # the state after the window: carry it into the next one
    grad_norm: float  # global gradient norm before clipping
    applied: bool  # False when the loss or the norm was not finite: the weights were left untouched


class NumpyCharRNN:
    def __init__(self, spec: SpecLike, weight_decay: float = 0.0, clip: float = 0.0, dtype="float32",
                 seed: int = 0, params: dict[str, np.ndarray] | None = None):
        """clip 0 measures the gradient norm without clipping, as charlm's --clip 0 does."""
        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.clip = clip if clip > 0 else math.inf
        self.rng = np.random.default_rng(seed)  # the dropout masks; its .bit_generator.state is JSON-able
        self.params = (init_params(spec, self.rng, self.dtype) if params is None
                       else {name: np.array(value, dtype=self.dtype) for name, value in params.items()})
        self.optimizer = AdamW(self.params, weight_decay)

    def forward(self, x: np.ndarray, state: State | None = None) -> tuple[np.ndarray, State]:
        """x (T, B) ids -> logits (T, B, V) and the state after the last step; no dropout, no gradient."""
        logits, state, _ = forward(self.params, x, state, self.spec.cell)
        return logits, state

    def train_step(self, x: np.ndarray, y: np.ndarray, state: State | None, lr: float) -> StepResult:
        """Forward, loss, BPTT through the window, clipping and one AdamW step at learning rate lr.

        The gradient into `state` is computed and dropped: the window edge is a detach.
        A step whose loss or gradient norm is not finite is not applied (charlm skips it).
        """
        loss, grads, new_state, _ = loss_and_gradients(self.params, x, y, state, self.spec.cell,
                                                       self.spec.dropout, self.rng)
        grad_norm = clip_grad_norm(grads, self.clip)
        applied = math.isfinite(loss) and math.isfinite(grad_norm)
        if applied:
            self.optimizer.step(self.params, grads, lr)
        return StepResult(loss=loss, state=new_state, grad_norm=grad_norm, applied=applied)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The weights as float32, contiguous, named as CharRNN's state_dict: a charlm weights file."""
        return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in self.params.items()}

    def load_state_dict(self, tensors: dict[str, np.ndarray]) -> None:
        for name, value in self.params.items():
            if tensors[name].shape != value.shape:
                raise ValueError(f"tensor {name} has shape {tensors[name].shape}, the model needs {value.shape}")
        self.params = {name: np.array(tensors[name], dtype=self.dtype) for name in self.params}

    def optimizer_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(tensors, JSON-able info) in the form of charlm's split_optimizer_state."""
        return self.optimizer.state_tensors(), {"param_groups": self.optimizer.param_groups(), "scalars": {}}

    def load_optimizer_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.optimizer.load_state_tensors(tensors)
