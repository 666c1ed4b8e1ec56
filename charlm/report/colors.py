"""The colour scales of the text views, shared by the HTML report and the terminal (no plotting library).

Surprisal runs from white (0 bits: the model was sure) through yellow and
orange to dark red (SURPRISAL_MAX_BITS or more), ColorBrewer's YlOrRd;
activations from blue (-1) through white (0) to red (+1), ColorBrewer's RdBu;
a share of a whole (a confusion matrix's row) and attention weights from white (0) to dark blue (1),
ColorBrewer's Blues.
Each scale also has a one-character mark per value, for output without colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

SURPRISAL_MAX_BITS = 8  # a 65-character vocabulary guessed uniformly costs 6 bits
_YLORRD = ["#ffffff", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#bd0026", "#800026"]
_RDBU = ["#2166ac", "#92c5de", "#ffffff", "#f4a582", "#b2182b"]
_BLUES = ["#ffffff", "#deebf7", "#9ecae1", "#4292c6", "#08519c"]
_WEIGHT_MARKS = " .:-=+*#%@"  # weight 0 .. 1 in tenths


def _mix(stops: list[str], position: float) -> str:
    """The colour at position 0..1 along evenly spaced stops, linearly mixed."""
    position = min(max(position, 0.0), 1.0) * (len(stops) - 1)
    index = min(int(position), len(stops) - 2)
    frac = position - index
    low, high = (tuple(int(stop[i:i + 2], 16) for i in (1, 3, 5)) for stop in stops[index:index + 2])
    return "#" + "".join(f"{round(a + (b - a) * frac):02x}" for a, b in zip(low, high))


def ink_for(background: str) -> str:
    """Black or white text, whichever reads better on the background (by relative luminance)."""
    r, g, b = (int(background[i:i + 2], 16) / 255 for i in (1, 3, 5))
    luminance = sum(w * (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4)
                    for w, c in zip((0.2126, 0.7152, 0.0722), (r, g, b)))
    return "#000000" if luminance > 0.18 else "#ffffff"


@dataclass(frozen=True)
class Scale:
    """Value -> background colour, and value -> one-character mark for plain text."""

    name: str  # what the values are, for a legend
    low: float
    high: float
    color: Callable[[float], str]
    mark: Callable[[float], str]
    ticks: tuple[float, ...]
    mark_legend: str  # what the marks mean

    def tick_label(self, value: float) -> str:
        text = f"{value:g}"
        return text + ("+" if value == self.high and self.name.startswith("surprisal") else "")


def _surprisal_mark(bits: float) -> str:
    if not math.isfinite(bits):
        return " "
    return str(min(9, max(0, int(bits))))


def _activation_mark(value: float) -> str:
    if not math.isfinite(value):
        return " "
    return "=" if value < -0.6 else "-" if value < -0.2 else "." if value <= 0.2 else "+" if value <= 0.6 else "#"


SURPRISAL = Scale(
    name="surprisal, bits", low=0.0, high=SURPRISAL_MAX_BITS,
    color=lambda bits: _mix(_YLORRD, bits / SURPRISAL_MAX_BITS), mark=_surprisal_mark,
    ticks=tuple(range(0, SURPRISAL_MAX_BITS + 1, 2)),
    mark_legend="under each character its surprisal in whole bits (0: the model was sure; 9: 9 bits or more)")

ACTIVATION = Scale(
    name="activation", low=-1.0, high=1.0,
    color=lambda value: _mix(_RDBU, (value + 1) / 2), mark=_activation_mark,
    ticks=(-1.0, -0.5, 0.0, 0.5, 1.0),
    mark_legend="under each character its activation: = below -0.6, - below -0.2, . near 0, + above 0.2, # above 0.6")


def _share_mark(share: float) -> str:
    if not math.isfinite(share):
        return " "
    return "#" if share >= 1 else str(max(0, int(share * 10)))  # tenths


SHARE = Scale(
    name="share of the row", low=0.0, high=1.0, color=lambda share: _mix(_BLUES, share), mark=_share_mark,
    ticks=(0.0, 0.25, 0.5, 0.75, 1.0), mark_legend="the share of the row in tenths (0-9, # for all of it)")


def _weight_mark(value: float) -> str:
    if not math.isfinite(value):
        return " "
    return _WEIGHT_MARKS[min(9, max(0, int(value * 10)))]


ATTENTION = Scale(
    name="attention weight", low=0.0, high=1.0, color=lambda value: _mix(_BLUES, value), mark=_weight_mark,
    ticks=(0.0, 0.25, 0.5, 0.75, 1.0),
    mark_legend="each mark is the weight of a source character (column) for an output character (row), "
                "in tenths: ' ' below 0.1, then . : - = + * # % @ up to 1")


def legend_stops(scale: Scale, count: int = 9) -> list[str]:
    """Evenly spaced colours from the scale's low end to its high end (for a gradient bar)."""
    return [scale.color(scale.low + (scale.high - scale.low) * i / (count - 1)) for i in range(count)]


def visible(char: str) -> str:
    """A character as shown in a list: whitespace and control characters get a visible symbol.

    The symbols are ones common fonts have (DejaVu, the usual fallback, lacks the U+2400 control pictures)."""
    return {"\n": "↵", "\t": "→", " ": "␣", "\r": "\\r"}.get(char, char if char.isprintable() else f"U+{ord(char):04X}")
