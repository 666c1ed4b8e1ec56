"""`charlm train`: settings from defaults < preset < flags, the task's data, the live view of the run."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

from charlm.cli.common import EXIT_SIGNALS, StopFlag, report_interrupt, user_errors
from charlm.cli.inputs import named_corpus_of, open_task, run_name, sizes_to_corpus
from charlm.cli.render import TrainRenderer
from charlm.config import (UNSET_WORDS, build_config, check_applicable, config_default_text, config_help,
                           load_config_file, parse_duration)
from charlm.engine.checkpoint import DEFAULT_ROOT
from charlm.engine.distributed import World, join, leave, main_first
from charlm.engine.loop import train as train_run
from charlm.engine.resume import recorded_run, resumed_config
from charlm.engine.runtime import resolve_device


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
        None, help="lm: text files, directories, globs, or one named corpus (charlm corpus list; default: python); "
                   "lines: a file of records, one per line, a folder of class files or a .tsv of text<TAB>label; "
                   "classify: a folder of class files or a .tsv of text<TAB>label; "
                   "seq2seq: a .tsv of source<TAB>target"),
    include: Optional[list[str]] = typer.Option(
        None, "--include", help="in directories, only files whose name or path matches this glob (repeatable)"),
    strict: bool = typer.Option(False, "--strict", help="refuse binary, unreadable or non-UTF-8 files found in "
                                                        "directories or globs instead of skipping them"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML preset, e.g. configs/shakespeare.toml"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory; default checkpoints/<corpus name>"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in the run directory from its last checkpoint"),
    tensorboard: Optional[Path] = typer.Option(None, "--tensorboard", help="also log the scalars for TensorBoard "
                                               "under DIR/<run name> (pip install 'charlm-rnn[tensorboard]')"),
    task: Optional[str] = _opt("task"),
    cell: Optional[str] = _opt("cell"),
    hidden_size: Optional[int] = _opt("hidden_size"),
    num_layers: Optional[int] = _opt("num_layers"),
    embedding_size: Optional[int] = _opt("embedding_size"),
    dropout: Optional[float] = _opt("dropout"),
    weight_drop: Optional[float] = _opt("weight_drop"),
    locked_dropout: Optional[float] = _opt("locked_dropout"),
    embedding_dropout: Optional[float] = _opt("embedding_dropout"),
    tie_weights: Optional[bool] = typer.Option(None, "--tie-weights/--untied", help=config_help("tie_weights"),
                                               show_default=False),
    bidirectional: Optional[bool] = typer.Option(None, "--bidirectional/--unidirectional",
                                                 help=config_help("bidirectional"), show_default=False),
    seq_len: Optional[int] = _opt("seq_len"),
    batch_size: Optional[int] = _opt("batch_size"),
    val_frac: Optional[float] = _opt("val_frac"),
    normalize_newlines: Optional[bool] = typer.Option(None, "--normalize-newlines/--keep-newlines",
                                                      help=config_help("normalize_newlines"), show_default=False),
    tokenizer: Optional[str] = _opt("tokenizer"),
    max_length: Optional[int] = _opt("max_length"),
    skip_long: Optional[bool] = typer.Option(None, "--skip-long", help=config_help("skip_long"), show_default=False),
    condition: Optional[bool] = typer.Option(None, "--condition/--no-condition", help=config_help("condition"),
                                             show_default=False),
    class_weights: Optional[str] = _opt("class_weights"),
    attention: Optional[str] = _opt("attention"),
    max_source_length: Optional[int] = _opt("max_source_length"),
    max_target_length: Optional[int] = _opt("max_target_length"),
    reverse: Optional[bool] = typer.Option(None, "--reverse", help=config_help("reverse"), show_default=False),
    lr: Optional[float] = _opt("lr"),
    weight_decay: Optional[float] = _opt("weight_decay"),
    clip: Optional[float] = _opt("clip"),
    schedule: Optional[str] = _opt("schedule"),
    warmup_steps: Optional[int] = _opt("warmup_steps"),
    min_lr_ratio: Optional[float] = _opt("min_lr_ratio"),
    ema_decay: Optional[float] = _opt("ema_decay"),
    max_nonfinite_steps: Optional[int] = _opt("max_nonfinite_steps"),
    max_steps: Optional[str] = _opt("max_steps", metavar="<int|none>", callback=_count_or_unset),
    epochs: Optional[str] = _opt("epochs", metavar="<int|none>", callback=_count_or_unset),
    time_budget: Optional[str] = _opt("time_budget", metavar="<duration|none>"),
    patience: Optional[str] = _opt("patience", metavar="<int|none>", callback=_count_or_unset),
    select_by: Optional[str] = _opt("select_by"),
    eval_every: Optional[int] = _opt("eval_every"),
    log_every: Optional[int] = _opt("log_every"),
    sample_length: Optional[int] = _opt("sample_length"),
    device: Optional[str] = _opt("device"),
    precision: Optional[str] = _opt("precision"),
    engine: Optional[str] = _opt("engine"),
    dtype: Optional[str] = _opt("dtype"),
    dist_timeout: Optional[str] = _opt("dist_timeout"),
    rng_seed: Optional[int] = _opt("rng_seed"),
) -> None:
    """Train a model: the next character of running text (lm, the default), whole records (--task lines), or
    the class of each record (--task classify), or a target text for each source text (--task seq2seq)."""
    flags = {k: v for k, v in locals().items()
             if k not in ("corpus", "include", "strict", "config", "out", "resume", "tensorboard") and v is not None}
    arguments = list(corpus or [])
    with user_errors(), _process_group() as world:
        preset = load_config_file(config) if config else {}
        run_dir = out or DEFAULT_ROOT / run_name(arguments)
        if resume:
            resolved = resumed_config(run_dir, flags, preset, config)
        else:
            named = named_corpus_of(arguments)
            if named and "tokenizer" not in {**preset, **flags} and {**preset, **flags}.get("task", "lm") == "lm":
                flags["tokenizer"] = named.tokenizer  # enwik8 is read as bytes, as published figures are
            resolved = build_config(preset, flags)
        check_applicable(resolved, set(flags), preset, config)
        join(world, resolve_device(resolved.device), parse_duration(resolved.dist_timeout))
        recorded = recorded_run(run_dir) if resume and not arguments else None
        # rank 0 fetches and caches; the others reuse it
        size_model = sizes_to_corpus(resolved, {*preset, *flags}, resume, world.size)
        task_data = main_first(world, lambda: open_task(resolved, arguments, include, strict, run_dir, recorded,
                                                        quiet=not world.is_main, size_model=size_model))
        render = TrainRenderer() if world.is_main else (lambda event: None)
        if tensorboard is not None and world.is_main:
            from charlm.report.tensorboard import TensorBoardLogger

            render = _both(render, TensorBoardLogger(tensorboard))  # a missing tensorboard fails here, at once
        stop = StopFlag()
        finished = None
        with stop.installed():
            sizing = getattr(task_data, "sizing", None) if world.is_main else None
            for event in train_run(task_data, run_dir, resume=resume, stop_requested=stop, world=world):
                if sizing is not None:  # the run directory is claimed: the run is really starting
                    typer.echo(f"charlm: note: {sizing.message()}", err=True)
                    sizing = None
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


def _both(first, second):
    def render(event) -> None:
        first(event)
        second(event)
    return render


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
