"""`charlm sample`: text streamed from a language model, or records generated side by side."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from charlm.cli.common import user_errors
from charlm.decode.sampling import SamplingOptions
from charlm.engine.runtime import make_generator, resolve_device
from charlm.errors import CharlmError
from charlm.runs import Checkpoint, load_checkpoint
from charlm.tasks.lm.generate import default_prime, generate, generate_many, line_ending, with_line_ending

DEFAULT_LENGTH = 500


def sample(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="run directory or checkpoint JSON; default: the newest run under checkpoints/"),
    seed: Optional[str] = typer.Option(None, "--seed", help="prime text the sample continues (lines: the start of every record); not a random seed: for reproducible samples use --rng-seed", show_default="a newline (lm), nothing (lines)"),
    length: Optional[int] = typer.Option(None, "--length", help=f"characters to generate (lm) \\[default: {DEFAULT_LENGTH}]", show_default=False),
    num_samples: int = typer.Option(1, "--num-samples", help="independent samples (lm) or records (lines), generated side by side"),
    class_name: Optional[str] = typer.Option(None, "--class", help="lines with classes: the class of every record; default: drawn by training frequency"),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="lines: longest record, in characters; default: the run's --max-length", show_default=False),
    novelty: bool = typer.Option(False, "--novelty", help="lines: mark each record new, in train or in val, and count them on stderr"),
    unique: bool = typer.Option(False, "--unique", help="lines: drop repeated records (and draw more)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per sample or record"),
    temperature: float = typer.Option(1.0, "--temperature", help="randomness; 0 is greedy"),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="sample from the k most likely characters; k above the vocabulary size keeps all"),
    top_p: float = typer.Option(1.0, "--top-p", help="sample from the smallest set of characters whose probability reaches p"),
    rng_seed: Optional[int] = typer.Option(None, "--rng-seed", help="random seed, for reproducible samples (--seed is the prime text)"),
    stop: Optional[str] = typer.Option(None, "--stop", help="lm: end the sample once this string is produced"),
    line_start: bool = typer.Option(True, "--line-start/--mid-line", help="lm: read the seed as the start of a line (the model first reads an unprinted newline) or from a cold state"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto"),
) -> None:
    """Generate from a trained model: stream text (lm), or records one per line (lines)."""
    with user_errors():
        if num_samples < 1:
            raise CharlmError(f"--num-samples must be at least 1, got {num_samples}")
        options = SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p)
        loaded = load_checkpoint(checkpoint, tasks=("lm", "lines"), command="charlm sample")
        target = resolve_device(device)
        loaded.model.to(target)
        generator = make_generator(rng_seed, target)
        # Once every input is checked, say which run was picked for the user.
        picked = (lambda: typer.echo(f"charlm: sampling from {loaded.path} (step {loaded.record.get('step')})",
                                     err=True)) if checkpoint is None else (lambda: None)
        if loaded.task == "lines":
            if length is not None or stop is not None:
                raise CharlmError(f"--{'length' if length is not None else 'stop'} applies to language-model runs; "
                                  "a records model ends each record itself (bound it with --max-length)")
            _sample_records(loaded, num_samples, options, generator, seed or "", class_name, max_length, novelty,
                            unique, as_json, picked)
            return
        for flag, given in (("--class", class_name is not None), ("--max-length", max_length is not None),
                            ("--novelty", novelty), ("--unique", unique)):
            if given:
                raise CharlmError(f"{flag} applies to records models (charlm train --task lines); "
                                  f"{loaded.run_dir} is a language model")
        length = DEFAULT_LENGTH if length is None else length
        if length < 0:
            raise CharlmError(f"--length must be 0 or more, got {length}")
        seed = default_prime(loaded.vocab) if seed is None else with_line_ending(loaded.vocab, seed)
        if num_samples == 1 and not as_json:
            chars = generate(loaded.model, loaded.vocab, seed, length, options, generator, stop=stop,
                             line_start=line_start)
            picked()
            _stream(seed, chars, line_ending(loaded.vocab))
            return
        samples = generate_many(loaded.model, loaded.vocab, seed, length, num_samples, options, generator,
                                stop=stop, line_start=line_start)
        picked()
        for index, text in enumerate(samples):
            if as_json:
                typer.echo(json.dumps({"text": seed + text}, ensure_ascii=False))
            else:
                typer.echo(("\n" if index else "") + seed + text)


def _stream(seed: str, chars, ending: str) -> None:
    stream = sys.stdout
    stream.write(seed)
    stream.flush()
    for char in chars:
        stream.write(char)
        stream.flush()
    stream.write(ending)  # a CRLF corpus's model writes CRLF around its sample
    stream.flush()


def _sample_records(loaded: Checkpoint, count: int, options: SamplingOptions, generator, prefix: str,
                    class_name: str | None, max_length: int | None, novelty: bool, unique: bool,
                    as_json: bool, picked) -> None:
    from charlm.tasks.lines.inference import sample_records

    if max_length is not None and max_length < 1:
        raise CharlmError(f"--max-length must be at least 1, got {max_length}")
    records = sample_records(loaded, count, options, generator, max_length=max_length, prefix=prefix,
                             class_name=class_name, unique=unique, novelty=novelty)
    picked()
    show_class = bool(loaded.classes) and class_name is None
    for record in records:
        if as_json:
            typer.echo(json.dumps(record.to_dict(), ensure_ascii=False))
            continue
        tags = [t for t in (record.label if show_class else None, record.seen) if t]
        typer.echo(record.text + (f"  [{', '.join(tags)}]" if tags else ""))
    if novelty:
        counts = {kind: sum(r.seen == kind for r in records) for kind in ("new", "train", "val")}
        typer.echo(f"{len(records)} records: {counts['new']} new, {counts['train']} in train, "
                   f"{counts['val']} in val", err=True)
    if unique and len(records) < count:
        typer.echo(f"charlm: only {len(records)} distinct records were found in {count * 20} draws", err=True)
