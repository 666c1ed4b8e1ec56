"""Figures derived from a mean cross-entropy in nats per character, shared by every task's statistics."""

from __future__ import annotations

import math
from dataclasses import asdict


class PerCharacter:
    """For a dataclass with a `nats_per_char` field: bits per character and perplexity, and both in to_dict()."""

    nats_per_char: float

    @property
    def bits_per_char(self) -> float:
        """Bits per token: per character, or per byte for a byte-level model."""
        return self.nats_per_char / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_char)

    def to_dict(self) -> dict:
        return dict(asdict(self), bits_per_char=self.bits_per_char, perplexity=self.perplexity)
