"""`charlm sample`: text streamed from a trained model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from charlm.cli.common import user_errors
from charlm.decode.sampling import SamplingOptions
from charlm.engine.runtime import make_generator, resolve_device
from charlm.errors import CharlmError
from charlm.runs import load_checkpoint
from charlm.tasks.lm.generate import default_prime, generate, line_ending, with_line_ending


def sample(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="run directory or checkpoint JSON; default: the newest run under checkpoints/"),
    seed: Optional[str] = typer.Option(None, "--seed", help="prime text the sample continues (not a random "
                                       "seed: for reproducible samples use --rng-seed)", show_default="a newline"),
    length: int = typer.Option(500, "--length", help="characters to generate"),
    temperature: float = typer.Option(1.0, "--temperature", help="randomness; 0 is greedy"),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="sample from the k most likely characters; k above the vocabulary size keeps all"),
    top_p: float = typer.Option(1.0, "--top-p", help="sample from the smallest set of characters whose probability reaches p"),
    rng_seed: Optional[int] = typer.Option(None, "--rng-seed", help="random seed, for reproducible samples "
                                           "(--seed is the prime text)"),
    stop: Optional[str] = typer.Option(None, "--stop", help="end the sample once this string is produced"),
    line_start: bool = typer.Option(True, "--line-start/--mid-line", help="read the seed as the start of a line (the model first reads an unprinted newline) or from a cold state"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto"),
) -> None:
    """Stream generated text from a trained model, one character at a time."""
    with user_errors():
        if length < 0:
            raise CharlmError(f"--length must be 0 or more, got {length}")
        options = SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p)
        loaded = load_checkpoint(checkpoint)
        target = resolve_device(device)
        generator = make_generator(rng_seed, target)
        seed = default_prime(loaded.vocab) if seed is None else with_line_ending(loaded.vocab, seed)
        chars = generate(loaded.model.to(target), loaded.vocab, seed, length, options, generator, stop=stop,
                         line_start=line_start)
        if checkpoint is None:  # picked for the user (and every input checked): say which
            typer.echo(f"charlm: sampling from {loaded.path} (step {loaded.record.get('step')})", err=True)
        stream = sys.stdout
        stream.write(seed)
        stream.flush()
        for char in chars:
            stream.write(char)
            stream.flush()
        stream.write(line_ending(loaded.vocab))  # a CRLF corpus's model writes CRLF around its sample
        stream.flush()
