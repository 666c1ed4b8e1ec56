"""The `charlm` command: thin Typer wrappers over the library.

Each command parses its flags, calls one library function and renders what
comes back. Errors the user can fix arrive as CharlmError and leave as one
line on stderr with exit status 1; Typer's own usage errors exit with 2;
an interrupted run exits with 130 (Ctrl-C) or 143 (SIGTERM).
"""

from __future__ import annotations

import json
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

from charlm.checkpoint import DEFAULT_ROOT, load_checkpoint
from charlm.config import build_config, config_help, load_config_file
from charlm.corpus import ensure_default_corpus, read_corpus
from charlm.errors import CharlmError
from charlm.evaluate import evaluate_checkpoint
from charlm.render import TrainRenderer
from charlm.resume import recorded_corpus_path, resumed_config
from charlm.runtime import make_generator, resolve_device
from charlm.sampling import SamplingOptions, default_prime, generate
from charlm.train import train as train_run

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, sample and evaluate character-level RNN/LSTM/GRU language models.")

EXIT_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"charlm: error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn library errors into one line on stderr and an exit status."""
    try:
        yield
    except CharlmError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("\ncharlm: interrupted", err=True)
        raise typer.Exit(130)
    except BrokenPipeError:  # `charlm sample | head`: the reader left, which is fine
        sys.stderr.close()
        raise typer.Exit(0)


class StopFlag:
    """Set by SIGINT/SIGTERM; the training loop checks it between steps and saves.

    A second Ctrl-C while saving falls back to an immediate KeyboardInterrupt.
    """

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def handle(self, signum: int, frame: object) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    @contextmanager
    def installed(self) -> Iterator["StopFlag"]:
        previous = {s: signal.signal(s, self.handle) for s in EXIT_SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _opt(name: str, **kwargs):
    return typer.Option(None, help=config_help(name), show_default=False, **kwargs)


@app.command()
def train(
    corpus: Optional[Path] = typer.Argument(None, help="UTF-8 text file to train on; default: the Python standard library"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML preset, e.g. configs/shakespeare.toml"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory; default checkpoints/<corpus name>"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in the run directory from its last checkpoint"),
    cell: Optional[str] = _opt("cell"),
    hidden_size: Optional[int] = _opt("hidden_size"),
    num_layers: Optional[int] = _opt("num_layers"),
    embedding_size: Optional[int] = _opt("embedding_size"),
    dropout: Optional[float] = _opt("dropout"),
    seq_len: Optional[int] = _opt("seq_len"),
    batch_size: Optional[int] = _opt("batch_size"),
    val_frac: Optional[float] = _opt("val_frac"),
    normalize_newlines: Optional[bool] = typer.Option(None, "--normalize-newlines/--keep-newlines",
                                                      help=config_help("normalize_newlines"), show_default=False),
    lr: Optional[float] = _opt("lr"),
    weight_decay: Optional[float] = _opt("weight_decay"),
    clip: Optional[float] = _opt("clip"),
    schedule: Optional[str] = _opt("schedule"),
    warmup_steps: Optional[int] = _opt("warmup_steps"),
    min_lr_ratio: Optional[float] = _opt("min_lr_ratio"),
    max_steps: Optional[int] = _opt("max_steps"),
    epochs: Optional[int] = _opt("epochs"),
    time_budget: Optional[str] = _opt("time_budget"),
    eval_every: Optional[int] = _opt("eval_every"),
    log_every: Optional[int] = _opt("log_every"),
    sample_length: Optional[int] = _opt("sample_length"),
    device: Optional[str] = _opt("device"),
    rng_seed: Optional[int] = _opt("rng_seed"),
) -> None:
    """Train a model on a text file (or on the built-in default corpus)."""
    flags = {k: v for k, v in locals().items()
             if k not in ("corpus", "config", "out", "resume") and v is not None}
    with user_errors():
        preset = load_config_file(config) if config else {}
        if resume:
            run_dir = out or _default_run_dir(corpus)
            resolved = resumed_config(run_dir, {**preset, **flags})
            corpus_path = corpus or recorded_corpus_path(run_dir)
        else:
            resolved = build_config(preset, flags)
            corpus_path = corpus or ensure_default_corpus()
            run_dir = out or DEFAULT_ROOT / corpus_path.stem
        text = read_corpus(corpus_path, resolved.normalize_newlines)
        render = TrainRenderer()
        stop = StopFlag()
        with stop.installed():
            for event in train_run(text, resolved, run_dir, resume=resume, stop_requested=stop):
                render(event)
        if stop.signal is not None:
            typer.echo(f"charlm: stopped; the last checkpoint is in {run_dir}. Continue with: "
                       f"charlm train --resume --out {run_dir}", err=True)
            raise typer.Exit(EXIT_SIGNALS[stop.signal])


def _default_run_dir(corpus: Path | None) -> Path:
    if corpus is None:
        return DEFAULT_ROOT / ensure_default_corpus().stem
    return DEFAULT_ROOT / corpus.stem


@app.command()
def sample(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="run directory or checkpoint JSON; default: the newest run under checkpoints/"),
    seed: Optional[str] = typer.Option(None, "--seed", help="prime text the sample continues", show_default="a newline"),
    length: int = typer.Option(500, "--length", help="characters to generate"),
    temperature: float = typer.Option(1.0, "--temperature", help="randomness; 0 is greedy"),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="sample from the k most likely characters; k above the vocabulary size keeps all"),
    top_p: float = typer.Option(1.0, "--top-p", help="sample from the smallest set of characters whose probability reaches p"),
    rng_seed: Optional[int] = typer.Option(None, "--rng-seed", help="seed for reproducible samples"),
    stop: Optional[str] = typer.Option(None, "--stop", help="end the sample once this string is produced"),
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
        seed = default_prime(loaded.vocab) if seed is None else seed
        chars = generate(loaded.model.to(target), loaded.vocab, seed, length, options, generator, stop=stop)
        stream = sys.stdout
        stream.write(seed)
        stream.flush()
        for char in chars:
            stream.write(char)
            stream.flush()
        stream.write("\n")
        stream.flush()


@app.command(name="eval")
def evaluate(
    text: Optional[Path] = typer.Argument(None, help="text file to score; default: the run's validation split"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="run directory or checkpoint JSON; default: the newest run under checkpoints/"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    skip_unknown: bool = typer.Option(False, "--skip-unknown", help="score around characters the model does not know, and count them"),
    exact: bool = typer.Option(False, "--exact", help="one sequential pass over the whole text (slower; the default batched pass agrees to about 1e-3)"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto"),
) -> None:
    """Cross-entropy, bits per character and perplexity of a model on a text."""
    with user_errors():
        loaded = load_checkpoint(checkpoint)
        stats = evaluate_checkpoint(loaded, text, skip_unknown=skip_unknown, device=resolve_device(device),
                                    exact=exact)
        if as_json:
            typer.echo(json.dumps(dict(stats.to_dict(), checkpoint=str(loaded.path),
                                       text=str(text) if text else "validation split")))
            return
        source = text or f"validation split of {loaded.record['corpus']['path']}"
        typer.echo(f"{loaded.path}: {source}")
        typer.echo(f"  characters scored  {stats.characters:,}" +
                   (f" ({stats.skipped:,} unknown skipped)" if stats.skipped else ""))
        typer.echo(f"  cross-entropy      {stats.nats_per_char:.4f} nats/char")
        typer.echo(f"  bits per character {stats.bits_per_char:.4f}")
        typer.echo(f"  perplexity         {stats.perplexity:.3f}")
        typer.echo("  pass               " + ("exact, one stream" if stats.streams == 1 else
                                             f"batched, {stats.streams} streams with 1,024 characters of burn-in"))


def main() -> None:
    """Entry point. Usage errors are reported in one line too, with Typer's exit code 2."""
    try:
        code = app(standalone_mode=False)
    except Exception as exc:  # click's (or Typer's vendored click's) UsageError and kin
        if not hasattr(exc, "format_message") or not hasattr(exc, "exit_code"):
            raise
        command = getattr(getattr(exc, "ctx", None), "command_path", "charlm")
        if exc.format_message():  # empty when the help was shown for a bare `charlm`
            typer.echo(f"charlm: error: {exc.format_message()} (see: {command} --help)", err=True)
        code = exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)
