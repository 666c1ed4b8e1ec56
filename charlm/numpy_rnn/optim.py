"""AdamW and global-norm clipping, step for step what charlm's torch path does.

charlm's torch optimiser is `torch.optim.AdamW` with two parameter groups: tensors with
two or more dimensions (embedding, recurrent and head matrices) decay, biases do not.
The moments round-trip through plain dicts of arrays named as charlm's checkpoints name
torch's (`optimizer.<id>.exp_avg`, ...), with torch's parameter numbering: decayed
tensors first, then the others, each in state_dict order.
"""

from __future__ import annotations

import math

import numpy as np

BETAS = (0.9, 0.999)
EPS = 1e-8


def is_decayed(value: np.ndarray) -> bool:
    """charlm decays matrices only: decaying biases just fights the data."""
    return value.ndim >= 2


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Global-norm clipping, as torch.nn.utils.clip_grad_norm_; returns the norm before clipping.

        total = ‖(‖g_1‖₂, ..., ‖g_n‖₂)‖₂               (the norm of all gradients as one vector)
        g_i ← g_i · min(1, max_norm / (total + 1e-6))          in place

    max_norm = inf measures without clipping (charlm's clip 0).
    """
    values = list(grads.values())
    dtype = values[0].dtype.type
    total = np.linalg.norm(np.array([np.linalg.norm(g.reshape(-1)) for g in values], dtype=values[0].dtype))
    scale = dtype(max_norm) / (total + dtype(1e-6))  # computed in the gradients' dtype, as torch does
    if scale < 1.0:
        for g in values:
            g *= scale
    return float(total)


class AdamW:
    """torch.optim.AdamW (amsgrad off) over a dict of arrays, updated in place.

    For every parameter p with gradient g, at step t = 1, 2, ...:

        p ← p - lr·λ·p                                  decoupled weight decay; λ = 0 for biases
        m ← β1·m + (1 - β1)·g  = m + (1 - β1)(g - m)     first moment (torch's lerp form)
        v ← β2·v + (1 - β2)·g²                          second moment
        p ← p - lr/(1 - β1^t) · m / (√v / √(1 - β2^t) + ε)

    with β1, β2 = 0.9, 0.999 and ε = 1e-8, and lr set per step by the schedule.
    """

    def __init__(self, params: dict[str, np.ndarray], weight_decay: float):
        self.weight_decay = weight_decay
        # torch numbers parameters group by group: the decayed group first.
        decayed = [name for name, p in params.items() if is_decayed(p)]
        self.order = decayed + [name for name, p in params.items() if not is_decayed(p)]
        self.num_decayed = len(decayed)
        self.exp_avg = {name: np.zeros_like(p) for name, p in params.items()}
        self.exp_avg_sq = {name: np.zeros_like(p) for name, p in params.items()}
        self.steps = 0
        self.lr = 0.0

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        beta1, beta2 = BETAS
        self.steps += 1
        self.lr = lr
        step_size = lr / (1.0 - beta1 ** self.steps)
        root_correction2 = math.sqrt(1.0 - beta2 ** self.steps)
        for name, p in params.items():
            g, m, v = grads[name], self.exp_avg[name], self.exp_avg_sq[name]
            if is_decayed(p):
                p *= 1.0 - lr * self.weight_decay
            m += (1.0 - beta1) * (g - m)
            v *= beta2
            v += (1.0 - beta2) * g * g
            p -= step_size * m / (np.sqrt(v) / root_correction2 + EPS)

    def state_tensors(self) -> dict[str, np.ndarray]:
        """The moments and step counts, named as charlm's checkpoints name torch's AdamW state."""
        tensors = {}
        for index, name in enumerate(self.order):
            tensors[f"optimizer.{index}.exp_avg"] = self.exp_avg[name]
            tensors[f"optimizer.{index}.exp_avg_sq"] = self.exp_avg_sq[name]
            tensors[f"optimizer.{index}.step"] = np.array(self.steps, dtype=np.float32)  # torch keeps a float tensor
        return tensors

    def param_groups(self) -> list[dict]:
        """The JSON side of torch's state_dict: the two groups, their hyperparameters and parameter ids.

        Every key torch's AdamW writes is here: a torch optimizer loading a group without
        `decoupled_weight_decay` would default it to False and quietly become Adam with L2.
        """
        common = {"lr": self.lr, "betas": list(BETAS), "eps": EPS, "amsgrad": False, "maximize": False,
                  "foreach": None, "capturable": False, "differentiable": False, "fused": None,
                  "decoupled_weight_decay": True}
        return [dict(common, weight_decay=self.weight_decay, params=list(range(self.num_decayed))),
                dict(common, weight_decay=0.0, params=list(range(self.num_decayed, len(self.order))))]

    def load_state_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        for index, name in enumerate(self.order):
            self.exp_avg[name] = np.array(tensors[f"optimizer.{index}.exp_avg"], dtype=self.exp_avg[name].dtype)
            self.exp_avg_sq[name] = np.array(tensors[f"optimizer.{index}.exp_avg_sq"],
                                             dtype=self.exp_avg_sq[name].dtype)
        self.steps = int(tensors["optimizer.0.step"]) if self.order else 0
