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

from charlm.engine.checkpoint import DEFAULT_ROOT, load_checkpoint
from charlm.config import (UNSET_WORDS, build_config, config_default_text, config_help, load_config_file,
                           parse_duration)
from charlm.engine.distributed import World, join, leave, main_first
from charlm.text.encoding import EncodedCorpus, default_cache_dir, reopen_recorded
from charlm.cli.inputs import fetch_with_progress, named_corpus_of, open_inputs, run_name
from charlm.errors import INTERRUPTED, CharlmError
from charlm.tasks.lm.evaluate import evaluate_checkpoint
from charlm.text.named import CORPORA_DIR, REGISTRY, is_present, local_path
from charlm.cli.render import TrainRenderer
from charlm.engine.resume import recorded_corpus, resumed_config
from charlm.engine.runtime import make_generator, resolve_device
from charlm.decode.sampling import SamplingOptions
from charlm.tasks.lm.generate import default_prime, generate
from charlm.engine.loop import train as train_run

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, sample and evaluate character-level RNN/LSTM/GRU language models.")
corpus_app = typer.Typer(no_args_is_help=True, help="Named corpora: list them, fetch one.")
app.add_typer(corpus_app, name="corpus")

EXIT_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}
# Whether a command already said how it was interrupted; Typer turns a Ctrl-C
# outside the commands' own handling (while parsing, say) into a silent exit 130.
_interrupt_reported = False


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"charlm: error: {message}", err=True)
    raise typer.Exit(code)


def _report_interrupt(message: str = INTERRUPTED.rstrip("\n"), show: bool = True) -> None:
    global _interrupt_reported
    _interrupt_reported = True
    if show:
        typer.echo(message, err=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn library errors into one line on stderr and an exit status."""
    try:
        yield
    except CharlmError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _report_interrupt()
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
    # The flag's own default is None ("not given"), so a preset can fill it; help shows the built-in one
    # (as text: a string show_default would be printed in parentheses).
    return typer.Option(None, help=f"{config_help(name)} \\[default: {config_default_text(name)}]", show_default=False,
                        **kwargs)


def _count_or_unset(value: str | None) -> int | str | None:
    """A bound flag's value: a whole number, or "none" (kept as text: build_config clears it)."""
    if value is None or value.strip().lower() in UNSET_WORDS:
        return value
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(f"must be a whole number or none, got {value!r}") from None


@app.command()
def train(
    corpus: Optional[list[str]] = typer.Argument(
        None, help="text files, directories, globs, or one named corpus (charlm corpus list); default: python"),
    include: Optional[list[str]] = typer.Option(
        None, "--include", help="in directories, only files whose name or path matches this glob (repeatable)"),
    strict: bool = typer.Option(False, "--strict", help="refuse binary, unreadable or non-UTF-8 files found in "
                                                        "directories or globs instead of skipping them"),
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
    tokenizer: Optional[str] = _opt("tokenizer"),
    lr: Optional[float] = _opt("lr"),
    weight_decay: Optional[float] = _opt("weight_decay"),
    clip: Optional[float] = _opt("clip"),
    schedule: Optional[str] = _opt("schedule"),
    warmup_steps: Optional[int] = _opt("warmup_steps"),
    min_lr_ratio: Optional[float] = _opt("min_lr_ratio"),
    max_nonfinite_steps: Optional[int] = _opt("max_nonfinite_steps"),
    max_steps: Optional[str] = _opt("max_steps", metavar="<int|none>", callback=_count_or_unset),
    epochs: Optional[str] = _opt("epochs", metavar="<int|none>", callback=_count_or_unset),
    time_budget: Optional[str] = _opt("time_budget", metavar="<duration|none>"),
    eval_every: Optional[int] = _opt("eval_every"),
    log_every: Optional[int] = _opt("log_every"),
    sample_length: Optional[int] = _opt("sample_length"),
    device: Optional[str] = _opt("device"),
    precision: Optional[str] = _opt("precision"),
    dist_timeout: Optional[str] = _opt("dist_timeout"),
    rng_seed: Optional[int] = _opt("rng_seed"),
) -> None:
    """Train a model on text files, directories or a named corpus (default: the Python standard library)."""
    flags = {k: v for k, v in locals().items()
             if k not in ("corpus", "include", "strict", "config", "out", "resume") and v is not None}
    arguments = list(corpus or [])
    with user_errors(), _process_group() as world:
        preset = load_config_file(config) if config else {}
        if resume:
            run_dir = out or DEFAULT_ROOT / run_name(arguments)
            resolved = resumed_config(run_dir, {**preset, **flags})
        else:
            named = named_corpus_of(arguments)
            if named and "tokenizer" not in {**preset, **flags}:
                flags["tokenizer"] = named.tokenizer  # enwik8 is read as bytes, as published figures are
            resolved = build_config(preset, flags)
            run_dir = out or DEFAULT_ROOT / run_name(arguments)
        join(world, resolve_device(resolved.device), parse_duration(resolved.dist_timeout))

        def open_corpus_once() -> EncodedCorpus:
            if resume and not arguments:
                return reopen_recorded(recorded_corpus(run_dir), resolved.tokenizer, resolved.normalize_newlines,
                                       default_cache_dir(), for_resume=True)
            return open_inputs(arguments, include, strict, resolved.tokenizer, resolved.normalize_newlines,
                               quiet=not world.is_main,
                               leave_out=[DEFAULT_ROOT, CORPORA_DIR, run_dir, default_cache_dir()])

        encoded = main_first(world, open_corpus_once)  # rank 0 fetches and caches; the others reuse it
        render = TrainRenderer() if world.is_main else (lambda event: None)
        stop = StopFlag()
        finished = None
        with stop.installed():
            for event in train_run(encoded, resolved, run_dir, resume=resume, stop_requested=stop, world=world):
                render(event)
                finished = event
        if stop.signal is not None:
            saved = finished is not None and finished.step > 0
            again = (f"charlm train --resume --out {run_dir}" if world.size == 1 else
                     f"the same torchrun command ({world.size} processes) with --resume --out {run_dir}")
            _report_interrupt(f"charlm: stopped; the last checkpoint is in {run_dir}. Continue with: {again}"
                              if saved else "charlm: stopped before the first step; nothing was saved",
                              show=world.is_main)
            raise typer.Exit(EXIT_SIGNALS[stop.signal])


@contextmanager
def _process_group() -> Iterator[World]:
    """This process's place in a torchrun launch (alone without one); leaves the group at the end."""
    world = World.from_environment()
    try:
        yield world
    except typer.Exit:  # stopped by a signal, after every rank saved its part
        leave()
        raise
    except BaseException:  # perhaps on this rank alone: waiting for the others could hang
        leave(finished=False)
        raise
    leave()


@corpus_app.command("list")
def corpus_list() -> None:
    """The named corpora, whether each is here yet, and what it is."""
    with user_errors():
        for corpus in REGISTRY.values():
            status = f"ready ({local_path(corpus)})" if is_present(corpus) else (
                "built on first use" if corpus.url is None else "fetched on first use")
            typer.echo(f"{corpus.name:16} {status}\n{'':16} {corpus.description}")


@corpus_app.command("get")
def corpus_get(name: str = typer.Argument(..., help="a name from `charlm corpus list`")) -> None:
    """Fetch (or build) a named corpus into corpora/ and verify it; print where it is."""
    with user_errors():
        path = fetch_with_progress(name)
        corpus = REGISTRY[name]
        splits = (f"; standard splits {corpus.standard_splits[0]:,} / "
                  f"{corpus.standard_splits[1] - corpus.standard_splits[0]:,} / rest, in {corpus.unit}s"
                  if corpus.standard_splits else "")
        typer.echo(f"{name}: {path} ({path.stat().st_size:,} bytes{splits})")


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
        seed = default_prime(loaded.vocab) if seed is None else seed
        chars = generate(loaded.model.to(target), loaded.vocab, seed, length, options, generator, stop=stop,
                         line_start=line_start)
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
    split: str = typer.Option("val", "--split", help="without FILE: the run's val split, or test (corpora with standard splits: enwik8, text8)"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto"),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 where training would use it; "
                                  "agrees with fp32 to ~1e-4 nats), fp32, bf16 or fp16 (GPU)"),
) -> None:
    """Cross-entropy, bits per character and perplexity of a model on a text."""
    with user_errors():
        loaded = load_checkpoint(checkpoint)
        if split not in ("val", "test"):
            raise CharlmError(f"--split must be val or test, got {split!r}")
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


def main() -> None:
    """Entry point. Usage errors are reported in one line too, with Typer's exit code 2."""
    global _interrupt_reported
    _interrupt_reported = False
    try:
        code = app(standalone_mode=False)
    except KeyboardInterrupt:  # Ctrl-C outside a command's own handling (while it starts, say)
        code = 130
    except Exception as exc:  # click's (or Typer's vendored click's) UsageError and kin
        if isinstance(exc.__cause__, KeyboardInterrupt):  # older click's form of a Ctrl-C it caught (Abort)
            code = 130
        elif hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            command = getattr(getattr(exc, "ctx", None), "command_path", "charlm")
            if exc.format_message():  # empty when the help was shown for a bare `charlm`
                typer.echo(f"charlm: error: {exc.format_message()} (see: {command} --help)", err=True)
            code = exc.exit_code
        else:
            raise
    if code == 130 and not _interrupt_reported:
        _report_interrupt()
    sys.exit(code if isinstance(code, int) else 0)


from charlm.cli import report as _report_commands  # noqa: E402  (registers after the commands above)

_report_commands.register(app)
