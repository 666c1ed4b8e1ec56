"""`charlm eval`: a model's figures on its validation split or on a file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from charlm.cli.common import user_errors
from charlm.engine.runtime import resolve_device
from charlm.errors import CharlmError
from charlm.runs import load_checkpoint
from charlm.tasks.lm.dynamic import DynamicOptions
from charlm.tasks.lm.evaluate import evaluate_checkpoint
from charlm.text.cache import default_cache_dir


def evaluate(
    text: Optional[Path] = typer.Argument(None, help="text file to score (seq2seq: a .tsv of pairs); default: the "
                                                     "run's validation split"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="run directory or checkpoint JSON; default: the newest run under checkpoints/"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    skip_unknown: bool = typer.Option(False, "--skip-unknown", help="score around characters the model does not know, and count them"),
    exact: bool = typer.Option(False, "--exact", help="one sequential pass over the whole text (slower; the default batched pass agrees to about 1e-3)"),
    split: str = typer.Option("val", "--split", help="without FILE: the run's val split, or test (corpora with standard splits: enwik8, text8)"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto"),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 where training would use it; "
                                  "agrees with fp32 to ~1e-4 nats), fp32, bf16 or fp16 (GPU)"),
    dynamic: bool = typer.Option(False, "--dynamic", help="lm: also score while adapting the model to the text as "
                                 "it goes (dynamic evaluation; the saved model is not changed)"),
    dynamic_method: Optional[str] = typer.Option(None, "--dynamic-method", help="with --dynamic: sgd or rms "
                                                 "(updates normalised by the running RMS of the gradients) "
                                                 f"\\[default: {DynamicOptions.method}]", show_default=False),
    dynamic_lr: Optional[float] = typer.Option(None, "--dynamic-lr", help="with --dynamic: step size of the "
                                               "adaptation \\[default: 0.003 for sgd, 0.0002 for rms]",
                                               show_default=False),
    dynamic_decay: Optional[float] = typer.Option(None, "--dynamic-decay", help="with --dynamic: pull back "
                                                  "towards the trained weights, per segment "
                                                  f"\\[default: {DynamicOptions.decay}]", show_default=False),
    dynamic_segment: Optional[int] = typer.Option(None, "--dynamic-segment", help="with --dynamic: characters "
                                                  "scored, then learned from, at a time "
                                                  f"\\[default: {DynamicOptions.segment_len}]", show_default=False),
    beam_size: int = typer.Option(1, "--beam-size", help="seq2seq: decode by beam search over this many "
                                  "hypotheses; 1 is greedy"),
    length_penalty: float = typer.Option(0.6, "--length-penalty", help="seq2seq: beam search's GNMT alpha"),
    show_attention: int = typer.Option(0, "--show-attention", metavar="N", help="seq2seq: also draw the attention "
                                       "of N examples (source across, output down)"),
) -> None:
    """Cross-entropy, bits per character and perplexity of a model on a text (or on records, for lines);
    accuracy, macro-F1 and the confusion matrix of a classifier; exact match, chrF and BLEU of a seq2seq
    model's outputs."""
    with user_errors():
        loaded = load_checkpoint(checkpoint, tasks=("lm", "lines", "classify", "seq2seq"), command="charlm eval")
        if loaded.task != "seq2seq" and (beam_size != 1 or show_attention):
            raise CharlmError(f"--{'beam-size' if beam_size != 1 else 'show-attention'} applies to seq2seq runs; "
                              f"{loaded.run_dir} is a {loaded.task} run")
        # A --dynamic-* option that would be ignored is refused, as --dynamic is for a records run.
        dynamic_flags = [flag for flag, value in (("--dynamic", dynamic or None), ("--dynamic-method", dynamic_method),
                                                  ("--dynamic-lr", dynamic_lr), ("--dynamic-decay", dynamic_decay),
                                                  ("--dynamic-segment", dynamic_segment)) if value is not None]
        if dynamic_flags and loaded.task != "lm":
            what = {"classify": "a classifier scores whole texts", "seq2seq": "a seq2seq run is scored on pairs"}.get(
                loaded.task, "a records model starts every record afresh")
            raise CharlmError(f"{dynamic_flags[0]} applies to language-model runs; {what}, so there is nothing to "
                              "adapt to")
        if dynamic_flags and not dynamic:
            raise CharlmError(f"{dynamic_flags[0]} sets up dynamic evaluation; add --dynamic, or leave it out")
        if loaded.task == "seq2seq":
            from charlm.cli.evaluate_pairs import evaluate_pairs

            for flag, given in (("--exact", exact), ("--split", split != "val")):
                if given:
                    raise CharlmError(f"{flag} applies to language-model runs; a seq2seq run is scored on pairs")
            evaluate_pairs(loaded, text, skip_unknown, resolve_device(device), precision, as_json, beam_size,
                           length_penalty, show_attention)
            return
        if loaded.task == "classify":
            if exact or split != "val":
                raise CharlmError(f"--{'exact' if exact else 'split'} applies to language-model runs; a classifier "
                                  "scores whole texts")
            from charlm.cli.classify import evaluate_run

            evaluate_run(loaded, text, skip_unknown, resolve_device(device), precision, as_json)
            return
        if loaded.task == "lines":
            if exact or split != "val":
                raise CharlmError(f"--{'exact' if exact else 'split'} applies to language-model runs; "
                                  "records are always scored whole, one by one")
            _evaluate_records(loaded, text, skip_unknown, resolve_device(device), precision, as_json)
            return
        if split not in ("val", "test"):
            raise CharlmError(f"--split must be val or test, got {split!r}")
        if dynamic:
            method = dynamic_method if dynamic_method is not None else DynamicOptions.method
            lr = dynamic_lr if dynamic_lr is not None else DYNAMIC_LR.get(method, DynamicOptions.lr)
            options = DynamicOptions(method=method, lr=lr,
                                     segment_len=DynamicOptions.segment_len if dynamic_segment is None
                                     else dynamic_segment,
                                     decay=DynamicOptions.decay if dynamic_decay is None else dynamic_decay)
            _evaluate_dynamic(loaded, text, skip_unknown, split, resolve_device(device), options, as_json)
            return
        stats = evaluate_checkpoint(loaded, text, skip_unknown=skip_unknown, device=resolve_device(device),
                                    exact=exact, split=split, cache_dir=default_cache_dir(), precision=precision)
        split_name = {"val": "validation", "test": "test"}[split]
        if as_json:
            extra = {"bits_per_byte": stats.bits_per_char} if stats.unit == "byte" else {}
            typer.echo(json.dumps(dict(stats.to_dict(), **extra, checkpoint=str(loaded.path),
                                       text=str(text) if text else f"{split_name} split")))
            return
        source = text or f"{split_name} split of {loaded.record['corpus'].get('name', 'its corpus')}"
        unit = stats.unit
        typer.echo(f"{loaded.path}: {source}")
        typer.echo(f"  {unit}s scored".ljust(21) + f"{stats.characters:,}" +
                   (f" ({stats.skipped:,} unknown skipped)" if stats.skipped else ""))
        typer.echo(f"  cross-entropy      {stats.nats_per_char:.4f} nats/{unit}")
        typer.echo(f"  bits per {'byte     ' if unit == 'byte' else 'character'} {stats.bits_per_char:.4f}")
        typer.echo(f"  perplexity         {stats.perplexity:.3f}")
        typer.echo("  pass               " + ("exact, one stream" if stats.streams == 1 else
                                             f"batched, {stats.streams} streams with 1,024 characters of burn-in")
                   + f", {stats.precision}")


def _evaluate_records(loaded, path: Path | None, skip_unknown: bool, device, precision: str, as_json: bool) -> None:
    from charlm.tasks.lines.inference import evaluate_lines

    stats = evaluate_lines(loaded, path, skip_unknown=skip_unknown, device=device, precision=precision)
    source = str(path) if path else "validation split"
    if as_json:
        typer.echo(json.dumps(dict(stats.to_dict(), checkpoint=str(loaded.path), text=source)))
        return
    typer.echo(f"{loaded.path}: {source if path else 'validation records of ' + loaded.record['data']['source']}")
    typer.echo(f"  records scored     {stats.records:,}" +
               (f" ({stats.skipped:,} with unknown characters skipped)" if stats.skipped else ""))
    typer.echo(f"  characters scored  {stats.characters:,} (each record's end symbol included)")
    typer.echo(f"  cross-entropy      {stats.nats_per_char:.4f} nats/char")
    typer.echo(f"  bits per character {stats.bits_per_char:.4f}")
    typer.echo(f"  perplexity         {stats.perplexity:.3f}")


DYNAMIC_LR = {"sgd": 0.003, "rms": 0.0002}


def _evaluate_dynamic(loaded, text: Path | None, skip_unknown: bool, split: str, device, options: DynamicOptions,
                      as_json: bool) -> None:
    from charlm.tasks.lm.dynamic import dynamic_score
    from charlm.tasks.lm.evaluate import checkpoint_text_ids, evaluate_ids

    ids, skipped = checkpoint_text_ids(loaded, text, skip_unknown, split, default_cache_dir())
    model = loaded.model.to(device)
    static = evaluate_ids(model, ids, device, streams=1, skipped=skipped, unit=loaded.vocab.unit)
    adapted = dynamic_score(model, ids, options, device)
    source = str(text) if text else f"{split} split"
    if as_json:
        typer.echo(json.dumps({"characters": static.characters, "static_nats_per_char": static.nats_per_char,
                               "dynamic_nats_per_char": adapted, "static_bits_per_char": static.bits_per_char,
                               "dynamic_bits_per_char": adapted / math.log(2), "method": options.method,
                               "lr": options.lr, "decay": options.decay, "segment": options.segment_len,
                               "skipped": skipped, "checkpoint": str(loaded.path), "text": source}))
        return
    unit = loaded.vocab.unit
    typer.echo(f"{loaded.path}: {source}, {static.characters:,} {unit}s, one stream, fp32")
    typer.echo(f"                     static    dynamic ({options.method}, lr {options.lr:g}, decay {options.decay:g}, "
               f"segments of {options.segment_len})")
    typer.echo(f"  nats/{unit:<13} {static.nats_per_char:.4f}    {adapted:.4f}")
    typer.echo(f"  bits/{unit:<13} {static.bits_per_char:.4f}    {adapted / math.log(2):.4f}")
