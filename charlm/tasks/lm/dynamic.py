"""Dynamic evaluation (Krause et al. 2018): score a text while adapting the model to it as it goes.

The text is read as one stream, in segments. Each segment is first scored
with the current weights (that score counts), then the weights take one
gradient step on that same segment, so later segments are predicted by a
model that has seen what came before: names, phrases and the style of this
text. The hidden state is carried from segment to segment, as in the exact
static pass. Two update rules:

- sgd:  θ ← θ − η ∇L(segment) + λ (θ₀ − θ)
- rms:  θ ← θ − η ∇L / (√MS + ε) + λ (θ₀ − θ), MS the running mean of the squared
        gradients of the segments already read (Krause et al. take MS from the training
        data; an online estimate needs nothing but the text being scored)

θ₀ are the trained weights; λ pulls the adapted weights back towards them
so the model does not drift away on a long text. The model passed in is
copied: the saved model never changes. Every prediction is made before its
character's gradient is used, so the figure is a fair score of the text.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charlm.errors import CharlmError
from charlm.tasks.lm.data import as_array, to_long
from charlm.tasks.lm.model import CharRNN, detach_hidden

METHODS = ("sgd", "rms")


@dataclass(frozen=True)
class DynamicOptions:
    method: str = "sgd"
    segment_len: int = 50  # characters scored, then learned from, at a time
    lr: float = 0.003  # η (for rms: the step in units of the gradient's RMS)
    decay: float = 0.0001  # λ, per segment, towards the trained weights
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CharlmError(f"--dynamic-method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.segment_len < 1:
            raise CharlmError(f"--dynamic-segment must be at least 1, got {self.segment_len}")
        if not self.lr > 0 or not 0 <= self.decay < 1:
            raise CharlmError("--dynamic-lr must be positive and --dynamic-decay in [0, 1)")


def dynamic_score(model: CharRNN, ids, options: DynamicOptions = DynamicOptions(),
                  device: torch.device | None = None) -> float:
    """Mean nats per character of ids[1:] under dynamic evaluation (the model itself is left untouched)."""
    ids = as_array(ids)
    if len(ids) < 2:
        raise ValueError("evaluation needs at least two characters")
    device = device or next(model.parameters()).device
    adapted = copy.deepcopy(model).to(device)
    adapted.eval()  # no dropout: the adaptation is the only change
    params = [p for p in adapted.parameters()]
    trained = [p.detach().clone() for p in params]
    mean_square = [torch.zeros_like(p) for p in params] if options.method == "rms" else None
    total = torch.zeros((), dtype=torch.float64, device=device)
    hidden = None
    for index, start in enumerate(range(0, len(ids) - 1, options.segment_len)):
        stop = min(start + options.segment_len, len(ids) - 1)
        block = to_long(ids[start:stop + 1]).to(device)
        x, y = block[:-1].unsqueeze(1), block[1:]  # (T, 1), (T,)
        with torch.enable_grad():
            logits, new_hidden = adapted(x, hidden)  # (T, 1, V)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y, reduction="sum")
            total += loss.detach()
            grads = torch.autograd.grad(loss, params)  # of the summed loss, as Krause et al.
        hidden = detach_hidden(new_hidden)
        with torch.no_grad():
            for p, g, p0, position in zip(params, grads, trained, range(len(params))):
                if mean_square is not None:
                    ms = mean_square[position]
                    ms.mul_(index / (index + 1)).addcmul_(g, g, value=1 / (index + 1))  # running mean of g²
                    g = g / (ms.sqrt() + options.eps)
                p.sub_(options.lr * g).add_(options.decay * (p0 - p))
    return float(total) / (len(ids) - 1)
