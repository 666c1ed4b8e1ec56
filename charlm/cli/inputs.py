"""The data arguments of `charlm train`: which corpus or records they name, the run's name, the task.

Part of the command line: warnings and download bars go to stderr here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

import typer

from charlm.config import TrainConfig
from charlm.engine.checkpoint import DEFAULT_ROOT
from charlm.errors import CorpusError
from charlm.text.cache import default_cache_dir, open_corpus, reopen_recorded
from charlm.text.encoding import EncodedCorpus
from charlm.text.named import CORPORA_DIR, REGISTRY, NamedCorpus, fetch, is_named
from charlm.text.records import read_records
from charlm.text.sources import SourceFile, select_files


def named_corpus_of(arguments: list[str]) -> NamedCorpus | None:
    """The named corpus the arguments ask for (none: python), or None for paths."""
    if not arguments:
        return REGISTRY["python"]
    if len(arguments) == 1 and is_named(arguments[0]) and not Path(arguments[0]).exists():
        return REGISTRY[arguments[0]]
    return None


def run_name(arguments: list[str]) -> str:
    """Default run directory name: the named corpus, the first file's stem, or the folder's name."""
    named = named_corpus_of(arguments)
    if named:
        return Path(named.filename).stem
    first = Path(arguments[0])
    while first.name and set("*?[") & set(first.name):
        first = first.parent
    # "." and ".." have no name of their own (and ".." would put the run beside checkpoints/);
    # a folder keeps its whole name, as given (not the target of a link)
    name = first.resolve().name if first.name in ("", ".", "..") else first.name if first.is_dir() else first.stem
    return name or "corpus"


def sizes_to_corpus(config: TrainConfig, given: Iterable[str], resume: bool, world_size: int) -> bool:
    """Whether a new lm run picks its model size from its corpus: unless a preset or flag sets a size.

    Under torchrun each process would probe its own speed (and could choose differently): sizes are given.
    """
    from charlm.tasks.lm.sizing import SIZE_KEYS

    return (not resume and config.task == "lm" and config.engine == "torch" and world_size == 1
            and not set(SIZE_KEYS) & set(given))


def open_task(config: TrainConfig, arguments: list[str], include: list[str] | None, strict: bool, run_dir: Path,
              recorded: dict | None, quiet: bool = False, size_model: bool = False):
    """The task the config asks for, over the data the arguments name (or, resuming, the run's own data).

    size_model: an lm run's hidden size, layers and regularisation are chosen from its corpus and bounds (sizing.py).
    """
    if config.task in ("lines", "classify"):
        if include:  # it would be ignored: a folder of records is read whole
            raise CorpusError(f"--include applies to --task lm; --task {config.task} reads every file of its "
                              "folder (one per class), so give a folder holding only the classes to train on")
        if recorded is not None:
            arguments = [recorded["data"]["source"]]
        if len(arguments) != 1:
            what = ("a folder with one file per class, or a .tsv of text<TAB>label" if config.task == "classify"
                    else "a file of records (one per line), a folder with one file per class, or a .tsv of "
                         "text<TAB>label")
            raise CorpusError(f"--task {config.task} reads one path: {what}"
                              + (f"; got {len(arguments)}" if arguments else ""))
        if config.task == "classify":
            from charlm.tasks.classify.task import ClassifyTask

            return ClassifyTask(read_records(Path(arguments[0])), config)
        from charlm.tasks.lines.task import RecordsTask

        return RecordsTask(read_records(Path(arguments[0])), config)
    if config.task == "seq2seq":
        if include:
            raise CorpusError("--include applies to --task lm; --task seq2seq reads one TSV file of pairs")
        return open_pairs_task(config, [recorded["data"]["source"]] if recorded is not None else arguments)
    from charlm.tasks.lm.task import LanguageModelTask

    if recorded is not None:
        corpus = reopen_recorded(recorded["corpus"], config.tokenizer, config.normalize_newlines,
                                 default_cache_dir(), for_resume=True)
    else:
        corpus = open_inputs(arguments, include, strict, config.tokenizer, config.normalize_newlines, quiet=quiet,
                             leave_out=[DEFAULT_ROOT, CORPORA_DIR, run_dir, default_cache_dir()])
    sizing = None
    if size_model:
        from charlm.tasks.lm.sizing import size_for_corpus

        train_chars = len(corpus.splits(config.val_frac)["train"])
        sizing = size_for_corpus(config, corpus.vocab.size, train_chars)
        config = config.replace(**sizing.settings())
    task = LanguageModelTask(corpus, config)
    task.sizing = sizing  # said once the run has started (a refused run directory says only that)
    return task


def open_pairs_task(config: TrainConfig, arguments: list[str]):
    from charlm.tasks.seq2seq.task import Seq2SeqTask
    from charlm.text.pairs import read_pairs

    if len(arguments) != 1:
        raise CorpusError("--task seq2seq reads one path: a .tsv of source<TAB>target lines"
                          + (f"; got {len(arguments)}" if arguments else ""))
    return Seq2SeqTask(read_pairs(Path(arguments[0]), reverse=config.reverse,
                                  max_source_length=config.max_source_length,
                                  max_target_length=config.max_target_length), config)


def open_inputs(arguments: list[str], include: list[str] | None, strict: bool, tokenizer: str,
                normalize_newlines: bool, quiet: bool = False, leave_out: Iterable[Path] = ()) -> EncodedCorpus:
    """Command-line corpus arguments -> an encoded (cached) corpus, warnings on stderr (unless quiet).

    Directory walks skip the folders in `leave_out`: charlm's own output.
    """
    echo = (lambda message: None) if quiet else (lambda message: typer.echo(message, err=True))
    named = named_corpus_of(arguments)
    if named:
        if named.standard_splits and tokenizer != named.tokenizer:
            raise CorpusError(f"{named.name}'s standard splits are counted in {named.unit}s; "
                              f"train it with --tokenizer {named.tokenizer}")
        path = fetch_with_progress(named.name)
        files = [SourceFile(path, named=True)]
        name, splits = named.name, named.standard_splits
    else:
        selection = select_files(arguments, include, strict, leave_out)
        for warning in selection.warnings:
            echo(f"charlm: warning: {warning}")
        files, name, splits = selection.files, run_name(arguments), None
    size = sum(f.path.stat().st_size for f in files)
    if size > 50_000_000:
        echo(f"charlm: preparing {size / 1e6:,.0f} MB of text (encoded once, then memory-mapped from "
             f"{default_cache_dir()})")
    encoded = open_corpus(files, tokenizer, normalize_newlines, default_cache_dir(), name=name, strict=strict,
                          standard_splits=splits)
    for warning in encoded.info.get("skipped", []):
        echo(f"charlm: warning: {warning}")
    return encoded


class _DownloadBars:
    """tqdm bars for downloads, on stderr."""

    def __init__(self) -> None:
        self.bars: list = []

    def __call__(self, total: int | None, name: str):
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {name}", file=sys.stderr,
                   disable=not sys.stderr.isatty())
        self.bars.append(bar)
        return bar.update

    def close(self) -> None:
        for bar in self.bars:
            bar.close()


def fetch_with_progress(name: str) -> Path:
    bars = _DownloadBars()
    try:
        return fetch(name, progress=bars)
    finally:
        bars.close()
