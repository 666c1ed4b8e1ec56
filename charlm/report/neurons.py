"""What single hidden units track: per-layer activations, and units that separate a pattern from the rest.

nn.LSTM / nn.GRU / nn.RNN return only the last layer's outputs, so the
layers are run one at a time: each as a one-layer module of the same class
holding that layer's weights, fed the layer below's outputs. Activations are
the hidden outputs h (what a layer passes up; for an LSTM o * tanh(c)), in
[-1, 1], after reading each token.

Units are named LAYER:UNIT, layers counted from 1 (the one reading the
embeddings) and units from 0 (the index into the layer's hidden vector).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from charlm.errors import CharlmError
from charlm.report.surprisal import Character, one_thread
from charlm.tasks.lm.evaluate import EVAL_CHUNK_LEN
from charlm.tasks.lm.model import CharRNN


def single_layers(model: CharRNN) -> list[nn.Module]:
    """The stacked recurrent module as one one-layer module per layer, with the same weights."""
    stacked, layers = model.rnn, []
    for index in range(stacked.num_layers):
        extra = {"nonlinearity": stacked.nonlinearity} if isinstance(stacked, nn.RNN) else {}
        layer = type(stacked)(stacked.input_size if index == 0 else stacked.hidden_size, stacked.hidden_size, 1,
                              bias=stacked.bias, **extra)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                if hasattr(stacked, f"{name}_l{index}"):
                    getattr(layer, f"{name}_l0").copy_(getattr(stacked, f"{name}_l{index}"))
        layers.append(layer.to(stacked.weight_hh_l0.device).eval())
    return layers


@torch.inference_mode()
@one_thread()
def layer_activations(model: CharRNN, ids) -> np.ndarray:
    """(T, L, H): each layer's hidden output after reading each of the T tokens, from a zero state."""
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    layers = single_layers(model)
    states = [None] * len(layers)
    device = model.head.weight.device
    chunks = []
    for start in range(0, len(ids), EVAL_CHUNK_LEN):
        x = model.embedding(ids[start:start + EVAL_CHUNK_LEN, None].to(device))  # (T, 1, E)
        outputs = []
        for index, layer in enumerate(layers):
            x, states[index] = layer(x, states[index])  # (T, 1, H)
            outputs.append(x[:, 0])
        chunks.append(torch.stack(outputs, dim=1).float().cpu())  # (T, L, H)
    return torch.cat(chunks).numpy()


def parse_unit(spec: str, num_layers: int, hidden_size: int) -> tuple[int, int]:
    """'2:37' -> (layer index from 0, unit), checked against the model's shape."""
    shape = f"layers 1..{num_layers}, units 0..{hidden_size - 1}"
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", spec)
    if not match:
        raise CharlmError(f"--neuron takes LAYER:UNIT, e.g. 1:37, got {spec!r} (this model has {shape})")
    layer, unit = int(match.group(1)), int(match.group(2))
    if not (1 <= layer <= num_layers and 0 <= unit < hidden_size):
        raise CharlmError(f"--neuron {layer}:{unit} is outside the model ({shape})")
    return layer - 1, unit


def match_mask(text: str, pattern: str) -> np.ndarray:
    """(len(text),) bool: which characters lie inside a match of the regular expression."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise CharlmError(f"'{pattern}' is not a valid regular expression ({exc})") from None
    mask = np.zeros(len(text), dtype=bool)
    for match in regex.finditer(text):
        mask[match.start():match.end()] = True
    if not mask.any():
        raise CharlmError(f"the pattern '{pattern}' matches nothing in the text ({len(text):,} characters); "
                          "try another pattern or a longer text")
    if mask.all():
        raise CharlmError(f"the pattern '{pattern}' matches the whole text, so nothing is left to compare "
                          "it with; try a narrower pattern")
    return mask


def token_mask(characters: list[Character], char_mask: np.ndarray) -> np.ndarray:
    """A per-character mask as a per-token one (every byte of a matched character is inside)."""
    tokens = np.zeros(sum(c.count for c in characters), dtype=bool)
    for char, inside in zip(characters, char_mask):
        tokens[char.first:char.first + char.count] = inside
    return tokens


@dataclass(frozen=True)
class UnitScore:
    layer: int  # from 0
    unit: int
    auc: float  # P(activation inside > activation outside), ties counted half; 0.5 is no separation
    mean_inside: float
    mean_outside: float

    @property
    def name(self) -> str:
        return f"{self.layer + 1}:{self.unit}"

    @property
    def separation(self) -> float:
        """0 (none) to 1 (a threshold on this unit alone tells inside from outside), either sign."""
        return abs(2 * self.auc - 1)


_RANK_BLOCK = 128  # units ranked at a time: memory stays at a few (T, 128) arrays


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks (1..T) down each column of a (T, U) array, tied values sharing their mean rank."""
    order = np.argsort(values, axis=0, kind="stable")  # (T, U)
    ordered = np.take_along_axis(values, order, axis=0)
    rows = np.arange(len(values))[:, None]
    starts_group = np.ones_like(ordered, dtype=bool)
    starts_group[1:] = ordered[1:] != ordered[:-1]
    group_start = np.maximum.accumulate(np.where(starts_group, rows, 0), axis=0)  # first row of each tie
    ends_group = np.ones_like(ordered, dtype=bool)
    ends_group[:-1] = starts_group[1:]
    group_end = np.minimum.accumulate(np.where(ends_group, rows, len(values))[::-1], axis=0)[::-1]  # last row
    ranks = np.empty_like(values, dtype=np.float64)
    np.put_along_axis(ranks, order, (group_start + group_end) / 2 + 1, axis=0)
    return ranks


def rank_units(activations: np.ndarray, inside: np.ndarray) -> list[UnitScore]:
    """Every unit ranked by how well its activation separates `inside` tokens from the rest.

    activations: (T, L, H); inside: (T,) bool. The score is the area under the
    ROC curve of the unit's activation as a classifier of inside-ness (the
    Mann-Whitney statistic), which needs no threshold and ignores scale.
    """
    steps, num_layers, hidden = activations.shape
    flat = activations.reshape(steps, num_layers * hidden)  # (T, U)
    positives, negatives = int(inside.sum()), int((~inside).sum())
    rank_sum = np.concatenate([average_ranks(flat[:, block:block + _RANK_BLOCK])[inside].sum(axis=0)
                               for block in range(0, flat.shape[1], _RANK_BLOCK)])  # (U,)
    auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    mean_in, mean_out = flat[inside].mean(axis=0), flat[~inside].mean(axis=0)
    scores = [UnitScore(index // hidden, index % hidden, float(auc[index]), float(mean_in[index]),
                        float(mean_out[index])) for index in range(flat.shape[1])]
    return sorted(scores, key=lambda score: (-score.separation, score.layer, score.unit))
