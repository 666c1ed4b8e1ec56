"""`charlm train`: settings from defaults < preset < flags, the task's data, the live view of the run."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

from charlm.cli.common import EXIT_SIGNALS, StopFlag, report_interrupt, user_errors
from charlm.cli.inputs import named_corpus_of, open_inputs, run_name
from charlm.cli.render import TrainRenderer
from charlm.config import (UNSET_WORDS, build_config, check_applicable, config_default_text, config_help,
                           load_config_file, parse_duration)
from charlm.engine.checkpoint import DEFAULT_ROOT
from charlm.engine.distributed import World, join, leave, main_first
from charlm.engine.loop import train as train_run
from charlm.engine.resume import recorded_run, resumed_config
from charlm.engine.runtime import resolve_device
from charlm.tasks.lm.task import LanguageModelTask
from charlm.text.encoding import EncodedCorpus, default_cache_dir, reopen_recorded
from charlm.text.named import CORPORA_DIR


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
            resolved = resumed_config(run_dir, flags, preset, config)
        else:
            named = named_corpus_of(arguments)
            if named and "tokenizer" not in {**preset, **flags}:
                flags["tokenizer"] = named.tokenizer  # enwik8 is read as bytes, as published figures are
            resolved = build_config(preset, flags)
            run_dir = out or DEFAULT_ROOT / run_name(arguments)
        join(world, resolve_device(resolved.device), parse_duration(resolved.dist_timeout))

        def open_corpus_once() -> EncodedCorpus:
            if resume and not arguments:
                return reopen_recorded(recorded_run(run_dir)["corpus"], resolved.tokenizer, resolved.normalize_newlines,
                                       default_cache_dir(), for_resume=True)
            return open_inputs(arguments, include, strict, resolved.tokenizer, resolved.normalize_newlines,
                               quiet=not world.is_main,
                               leave_out=[DEFAULT_ROOT, CORPORA_DIR, run_dir, default_cache_dir()])

        encoded = main_first(world, open_corpus_once)  # rank 0 fetches and caches; the others reuse it
        render = TrainRenderer() if world.is_main else (lambda event: None)
        stop = StopFlag()
        finished = None
        with stop.installed():
            for event in train_run(LanguageModelTask(encoded, resolved), run_dir, resume=resume,
                                  stop_requested=stop, world=world):
                render(event)
                finished = event
        if stop.signal is not None:
            saved = finished is not None and finished.step > 0
            again = (f"charlm train --resume --out {run_dir}" if world.size == 1 else
                     f"the same torchrun command ({world.size} processes) with --resume --out {run_dir}")
            report_interrupt(f"charlm: stopped; the last checkpoint is in {run_dir}. Continue with: {again}"
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
