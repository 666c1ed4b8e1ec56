"""`charlm eval` on a seq2seq run: teacher-forced figures, decoded metrics, and attention maps in the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from charlm.decode.search import BeamOptions
from charlm.errors import CharlmError


def evaluate_pairs(loaded, path: Path | None, skip_unknown: bool, device, precision: str, as_json: bool,
                   beam_size: int, length_penalty: float, show_attention: int) -> None:
    from charlm.tasks.seq2seq.decode import Decoding
    from charlm.tasks.seq2seq.inference import evaluate_seq2seq
    from charlm.tasks.seq2seq.task import decoded_subset

    beam = BeamOptions(beam_size=beam_size, length_penalty=length_penalty)
    if show_attention < 0:
        raise CharlmError(f"--show-attention must be 0 or more, got {show_attention}")
    if show_attention and loaded.model.spec.attention == "none":
        raise CharlmError(f"--show-attention needs a model with attention; {loaded.run_dir} was trained with "
                          "--attention none")
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise CharlmError(f"--precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    stats, translations = evaluate_seq2seq(loaded, path, Decoding(beam=beam if beam_size > 1 else None),
                                           skip_unknown=skip_unknown, device=device, precision=precision)
    source = str(path) if path else "validation split"
    if as_json:
        typer.echo(json.dumps(dict(stats.to_dict(), checkpoint=str(loaded.path), text=source)))
    else:
        typer.echo(f"{loaded.path}: {source if path else 'validation pairs of ' + loaded.record['data']['source']}")
        typer.echo(f"  pairs scored       {stats.pairs:,} ({stats.sources:,} distinct sources)" +
                   (f"; {stats.skipped:,} with unknown characters skipped" if stats.skipped else ""))
        typer.echo(f"  characters scored  {stats.characters:,} (each target's end symbol included)")
        typer.echo(f"  cross-entropy      {stats.nats_per_char:.4f} nats/char (teacher-forced)")
        typer.echo(f"  bits per character {stats.bits_per_char:.4f}")
        typer.echo(f"  perplexity         {stats.perplexity:.3f}")
        typer.echo(f"  decoded            {stats.decoding}, every target of a source a reference")
        typer.echo(f"  exact match        {stats.exact_match:.2%}")
        typer.echo(f"  chrF               {stats.chrf:.2f}")
        typer.echo(f"  BLEU               {stats.bleu:.2f}")
    if show_attention:
        _draw_attention(decoded_subset(translations, show_attention), to_stderr=as_json)


def _draw_attention(translations, to_stderr: bool) -> None:
    """The maps after the figures (on stderr with --json, so stdout stays one JSON object)."""
    from charlm.report import terminal
    from charlm.report.attention import AttentionMap, attention_text
    from charlm.report.colors import ATTENTION

    console = Console(highlight=False, stderr=to_stderr)
    colour = console.color_system is not None and not console.no_color
    console.print()
    console.print(terminal.legend(ATTENTION, colour), soft_wrap=True)
    for translation in translations:
        if not translation.source:
            continue
        attention = AttentionMap.of(translation)
        console.print(f"\n{attention.source} -> {attention.output}", markup=False, soft_wrap=True)
        console.print(attention_text(attention, colour), soft_wrap=True, end="")
