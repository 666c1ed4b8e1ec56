"""Attention maps: which source characters each output character looked at, for the terminal and the report.

A map has one row per character written (and one for the end symbol, when
the output ended) and one column per source character; each row is a
distribution over the source (it sums to 1). In the terminal each cell is
shaded by its weight (colors.ATTENTION), or, without colour, shown as a mark
from ' ' (below 0.1) to '@' (1). In the report it is a matplotlib heatmap.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text

from charlm.report.colors import ATTENTION, ink_for, visible

END_LABEL = "<end>"


@dataclass(frozen=True)
class AttentionMap:
    source: str
    output: str
    weights: list[list[float]]  # (rows, len(source)): a row per output character, then the end symbol's if ended
    ended: bool

    @classmethod
    def of(cls, translation) -> "AttentionMap":
        """The best candidate of a seq2seq Translation (which must carry attention weights)."""
        best = translation.candidates[0]
        return cls(translation.source, best.text, best.attention.tolist(), best.ended)

    @property
    def row_labels(self) -> list[str]:
        return [_shown(c) for c in self.output][:len(self.weights)] + ([END_LABEL] if self.ended else [])


def _shown(char: str) -> str:
    return visible(char) if char.isspace() or not char.isprintable() else char


def _padded(text: str, width: int) -> str:
    return text + " " * max(width - cell_len(text), 0)


def attention_text(attention: AttentionMap, colour: bool) -> Text:
    """The map as rich Text: a header of source characters, then a row per output character (2 cells per column)."""
    labels = attention.row_labels
    margin = max(cell_len(label) for label in labels + [""]) + 2
    out = Text(_padded("", margin) + "".join(_padded(_shown(c), 2) for c in attention.source) + "\n")
    for label, row in zip(labels, attention.weights):
        out.append(_padded(label, margin))
        for weight in row:
            if colour:
                background = ATTENTION.color(weight)
                out.append("  ", Style(color=ink_for(background), bgcolor=background))
            else:
                out.append(ATTENTION.mark(weight) + " ")
        out.append("\n")
    return out


def attention_figure(plt, attention: AttentionMap, key: str, title: str):
    """The map as a report Figure: source characters across, output characters down."""
    from charlm.report.plots import Figure, _to_svg

    rows, columns = len(attention.weights), len(attention.source)
    fig, ax = plt.subplots(figsize=(min(0.22 * columns + 1.5, 9), min(0.2 * rows + 1.2, 9)))
    ax.imshow(attention.weights, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(columns), [_shown(c) for c in attention.source], fontsize=8)
    ax.set_yticks(range(rows), attention.row_labels, fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.xaxis.set_label_position("top")
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    return Figure(key, title, _to_svg(plt, fig, key),
                  f"{attention.source} → {attention.output}" + ("" if attention.ended else " (cut at the length limit)"))
