"""`charlm translate`: target texts from a seq2seq run, streamed at a terminal, batched from a pipe.

Texts given as arguments, or lines typed at a terminal after `-`, are each
decoded alone and their characters written as they are produced (greedy or
sampled). Lines piped in, `--json` and beam search decode `--batch-size`
inputs side by side and write each batch's outputs in input order. Source
characters the model never saw are left out with one warning naming them
(`--strict`: an error). A reader that leaves early (`| head`) is not an error.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Iterable, Iterator, Optional

import typer

from charlm.cli.common import user_errors
from charlm.decode.sampling import SamplingOptions
from charlm.decode.search import BeamOptions
from charlm.engine.runtime import make_generator, resolve_device
from charlm.errors import CharlmError


def translate(
    texts: Optional[list[str]] = typer.Argument(None, metavar="TEXT...",
                                                help="texts to translate; - reads them from stdin, one per line"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="run directory or checkpoint JSON; "
                                              "default: the newest run under checkpoints/"),
    beam_size: int = typer.Option(1, "--beam-size", help="beam search over this many hypotheses; 1 is greedy"),
    n_best: int = typer.Option(1, "--n-best", help="outputs per input, best first (at most --beam-size)"),
    length_penalty: float = typer.Option(BeamOptions.length_penalty, "--length-penalty",
                                         help="beam search: GNMT's alpha; 0 ranks by the summed log-probability, "
                                              "which favours short outputs"),
    temperature: float = typer.Option(0.0, "--temperature", help="sample with this temperature; 0 is greedy"),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="sampling: from the k most likely characters"),
    top_p: float = typer.Option(1.0, "--top-p", help="sampling: from the smallest set of characters whose "
                                "probability reaches p"),
    rng_seed: Optional[int] = typer.Option(None, "--rng-seed", help="seed for reproducible samples"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per input"),
    strict: bool = typer.Option(False, "--strict", help="refuse characters the model never saw instead of "
                                "leaving them out"),
    batch_size: int = typer.Option(64, "--batch-size", help="inputs decoded side by side (piped input, --json, "
                                   "beam search)"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto"),
) -> None:
    """Translate texts with a seq2seq run: greedy (streamed), sampled or beam search."""
    with user_errors():
        beam = BeamOptions(beam_size=beam_size, length_penalty=length_penalty, n_best=n_best)
        sampling = SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p)
        if temperature > 0 and beam_size > 1:
            raise CharlmError("--temperature samples and --beam-size searches; give one of them")
        if temperature == 0 and (top_k is not None or top_p < 1):
            raise CharlmError(f"--{'top-k' if top_k is not None else 'top-p'} applies to sampling; "
                              "give a --temperature above 0 too")
        if batch_size < 1:
            raise CharlmError(f"--batch-size must be at least 1, got {batch_size}")
        texts = list(texts or [])
        if not texts:
            raise CharlmError("give a text to translate, or - to read texts from stdin, one per line")
        if "-" in texts and len(texts) > 1:
            raise CharlmError("- reads every text from stdin; give it alone")
        from charlm.runs import load_checkpoint
        from charlm.tasks.seq2seq.decode import Decoding

        loaded = load_checkpoint(checkpoint, tasks=("seq2seq",), command="charlm translate")
        target = resolve_device(device)
        loaded.model.to(target)
        if checkpoint is None:  # picked for the user: say which
            typer.echo(f"charlm: translating with {loaded.path} (step {loaded.record.get('step')})", err=True)
        translator = _Translator(loaded, Decoding(sampling=sampling, beam=beam if beam_size > 1 else None),
                                 make_generator(rng_seed, target), strict, as_json)
        from_stdin = texts == ["-"]
        streamed = not as_json and beam_size == 1 and not (from_stdin and not sys.stdin.isatty())
        inputs = _stdin_lines() if from_stdin else iter(texts)
        if streamed:
            if not from_stdin:
                translator.warn_unknown(texts)  # every argument is known now: one warning for all
            for text in inputs:
                translator.stream(text)
        else:
            while batch := list(itertools.islice(inputs, batch_size)):
                translator.batch(batch)


def _stdin_lines() -> Iterator[str]:
    for line in sys.stdin:
        yield line.rstrip("\r\n")


class _Translator:
    """Decodes and writes; warns once about each character the model never saw."""

    def __init__(self, loaded, decoding, generator, strict: bool, as_json: bool):
        self.loaded, self.decoding, self.generator = loaded, decoding, generator
        self.strict, self.as_json = strict, as_json
        self.warned: set[str] = set()

    def warn_unknown(self, texts: Iterable[str]) -> list[str]:
        from charlm.tasks.seq2seq.inference import readable_sources

        known, unknown = readable_sources(self.loaded, list(texts), self.strict)
        new = [c for c in unknown if c not in self.warned]
        if new:
            self.warned.update(new)
            typer.echo(f"charlm: warning: characters the model never saw are left out: {', '.join(map(repr, new))} "
                       "(--strict makes this an error)", err=True)
        return known

    def stream(self, text: str) -> None:
        from charlm.tasks.seq2seq.decode import stream_translation

        [known] = self.warn_unknown([text])
        out = sys.stdout
        for char in stream_translation(self.loaded.model, self.loaded.vocab, known, self.decoding.sampling,
                                       self.generator, self.decoding.limit):
            out.write(char)
            out.flush()
        out.write("\n")
        out.flush()

    def batch(self, texts: list[str]) -> None:
        from charlm.tasks.seq2seq.decode import translate

        known = self.warn_unknown(texts)
        translations = translate(self.loaded.model, self.loaded.vocab, known, self.decoding, self.generator)
        n_best = self.decoding.beam is not None and self.decoding.beam.n_best > 1
        for text, translation in zip(texts, translations):
            if self.as_json:
                typer.echo(json.dumps(translation.to_dict(text, n_best), ensure_ascii=False))
            elif n_best:
                typer.echo(text)
                for rank, candidate in enumerate(translation.candidates, start=1):
                    typer.echo(f"  {rank}  {candidate.normalized_score:8.3f}  {candidate.text}")
            else:
                typer.echo(translation.text)

