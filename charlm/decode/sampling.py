"""Turning logits into tokens: temperature, top-k, top-p, greedy, and Gumbel noise in blocks.

Shared by every task that generates (the language model, records); the
loops that call these live with their tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charlm.errors import CharlmError


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0  # 0 means greedy (always the most likely character)
    top_k: int | None = None  # keep only the k most likely; None or >= vocab size keeps all
    top_p: float = 1.0  # keep the smallest set whose probability reaches p

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise CharlmError(f"--temperature must be 0 (greedy) or positive, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise CharlmError(f"--top-k must be at least 1, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise CharlmError(f"--top-p must be in (0, 1], got {self.top_p}")


# Above this the Gumbel-max shortcut (logits + T * noise) would overflow float32; pick_next takes over,
# and is exact there: every kept logit / T is then 0, so the draw is uniform over them.
_GUMBEL_MAX_TEMPERATURE = 1e30


def scale_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature, shifted so the best is 0: safe for any temperature > 0. logits: (..., V)."""
    # Dividing first, a tiny temperature (1e-20) made every logit +-inf, softmax
    # gave NaN (inf - inf) and argmax picked id 0. Shifted, the best stays 0 and
    # the others go to -inf. Below the dtype's smallest normal number the
    # temperature may round to 0 (0 / 0): that is greedy outright.
    shifted = logits - logits.amax(dim=-1, keepdim=True)  # (..., V), <= 0
    if temperature < torch.finfo(shifted.dtype).tiny:  # it would round to 0 here: greedy
        return shifted.masked_fill(shifted < 0, float("-inf"))
    if temperature > torch.finfo(shifted.dtype).max:  # it would round to inf (-inf / inf = NaN): uniform
        return torch.zeros_like(shifted).masked_fill(shifted == float("-inf"), float("-inf"))
    return shifted.div_(temperature)


def filter_logits(logits: torch.Tensor, options: SamplingOptions) -> torch.Tensor:
    """Scale by temperature and mask what top-k / top-p exclude with -inf. logits: (..., V).

    Which characters top-k and top-p keep follows the ranking of the raw
    logits, which no temperature changes. Ranked by the scaled logits, an
    infinite temperature (every scaled logit 0) made all of them tie, and
    top-k kept everything.
    """
    scaled = scale_logits(logits, options.temperature)
    keep = torch.ones_like(scaled, dtype=torch.bool)
    vocab_size = logits.shape[-1]
    if options.top_k is not None and options.top_k < vocab_size:
        kth_best = torch.topk(logits, options.top_k, dim=-1).values[..., -1:]  # (..., 1)
        keep &= logits >= kth_best
    if options.top_p < 1.0:
        order = torch.sort(logits, dim=-1, descending=True, stable=True).indices  # (..., V), by raw logit
        probs = torch.softmax(scaled.masked_fill(~keep, float("-inf")), dim=-1).gather(-1, order)
        # Drop a character when the ones ranked above it already reach top_p;
        # the most likely one is therefore always kept.
        drop_sorted = (torch.cumsum(probs, dim=-1) - probs) >= options.top_p
        keep &= ~torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return scaled.masked_fill(~keep, float("-inf"))


def is_plain(options: SamplingOptions, vocab_size: int) -> bool:
    """Whether GumbelNoise's shortcut applies: temperature sampling over the whole vocabulary."""
    return (0 < options.temperature <= _GUMBEL_MAX_TEMPERATURE and options.top_p >= 1.0
            and (options.top_k is None or options.top_k >= vocab_size))


def pick_next(logits: torch.Tensor, options: SamplingOptions, generator: torch.Generator) -> torch.Tensor:
    """logits (B, V) -> next ids (B,)."""
    if options.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_logits(logits.float(), options), dim=-1)
    # Exponential race: argmax(p_i / E_i) with E_i ~ Exp(1) picks i with
    # probability p_i, exactly as torch.multinomial does, in a third of its
    # time for one draw (it matters at one call per character).
    race = torch.empty_like(probs).exponential_(generator=generator)
    # A draw of exactly 0 would make 0 / 0 = NaN for a filtered-out character,
    # and argmax takes NaN as the largest.
    race.clamp_(min=torch.finfo(race.dtype).tiny)
    return probs.div_(race).argmax(dim=-1)


class GumbelNoise:
    """Gumbel noise drawn in blocks: sampling becomes argmax(logits + T * noise).

    argmax(l/T + G) with G ~ Gumbel(0, 1) picks i with probability softmax(l/T)_i
    (the Gumbel-max trick), so plain temperature sampling is two small ops per
    character instead of softmax, a draw, a divide and an argmax; drawing the
    noise for many characters at once saves one more.
    """

    def __init__(self, generator: torch.Generator, vocab_size: int, temperature: float, device, block: int = 512):
        self.generator, self.shape, self.temperature, self.device = generator, (block, vocab_size), temperature, device
        self.rows, self.used = None, block

    def next(self) -> torch.Tensor:
        if self.used == self.shape[0]:
            draws = torch.empty(self.shape, device=self.device).exponential_(generator=self.generator)
            draws.clamp_(min=torch.finfo(draws.dtype).tiny)  # a draw of exactly 0 would be a certain win
            self.rows, self.used = draws.log_().mul_(-self.temperature), 0  # T * Gumbel(0, 1)
        self.used += 1
        return self.rows[self.used - 1]
