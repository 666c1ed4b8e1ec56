"""A text under a model as cells to colour: by surprisal, by one unit's activation, by the units a pattern picks.

A character's activation is the unit's value after reading the whole
character (for a byte model, its last byte); its surprisal is the bits its
tokens cost (surprisal.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm.report.neurons import UnitScore, layer_activations, match_mask, rank_units, token_mask
from charlm.report.surprisal import Character, Surprisal, characters_of
from charlm.report.terminal import Cell


def surprisal_cells(scored: Surprisal, start: int, stop: int) -> list[Cell]:
    """Characters start..stop-1 (counted in characters) with their surprisal in bits."""
    return [Cell(char.text, bits) for char, bits, _ in scored.characters()[start:stop]]


def line_start(characters: list[Character], limit: int = 200) -> int:
    """The first character after the first newline within `limit` characters, else 0: where an excerpt reads well."""
    for index, char in enumerate(characters[:limit]):
        if char.text == "\n":
            return index + 1
    return 0


@dataclass(frozen=True)
class UnitView:
    characters: list[Character]
    activations: np.ndarray  # (T, L, H) per token
    inside: np.ndarray | None = None  # (characters,) bool: inside a pattern match

    def cells(self, layer: int, unit: int, start: int, stop: int) -> list[Cell]:
        out = []
        for index, char in enumerate(self.characters[start:stop], start):
            value = float(self.activations[char.first + char.count - 1, layer, unit])
            out.append(Cell(char.text, value, bool(self.inside[index]) if self.inside is not None else False))
        return out

    def summary(self, layer: int, unit: int) -> tuple[float, float, float]:
        """(mean, min, max) of the unit's activation over the whole text."""
        values = self.activations[:, layer, unit]
        return float(values.mean()), float(values.min()), float(values.max())


def unit_view(model, vocab, ids: np.ndarray, pattern: str | None = None) -> tuple[UnitView, list[UnitScore]]:
    """Every unit's activations over the text; with a pattern, the units ranked by how well they separate it."""
    characters = characters_of(vocab, ids)
    activations = layer_activations(model, ids)
    if pattern is None:
        return UnitView(characters, activations), []
    inside = match_mask("".join(char.text for char in characters), pattern)
    if len(inside) != len(characters):  # a character whose text is several code points (a broken byte: U+FFFD is one)
        raise ValueError("characters and text are out of step")
    scores = rank_units(activations, token_mask(characters, inside))
    return UnitView(characters, activations, inside), scores
