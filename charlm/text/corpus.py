"""The built-in default corpus, and reading one text file.

The default corpus is made from the running Python's own standard library, so
`charlm train` has real text on every machine without a network: a sorted,
size-capped selection of `.py` files, written once to `corpora/` and reused.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

from charlm.errors import CorpusError

DEFAULT_CORPUS_NAME = "python-stdlib"
# A few MB: enough for an LSTM to learn Python's look in minutes, small enough
# that building it is instant. The cap makes the selection deterministic for a
# given Python version.
DEFAULT_CORPUS_MAX_BYTES = 4_000_000
# Tests, demos and vendored code would teach the model other things than the
# library's own style, so they are left out.
_SKIPPED_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__",
                 "lib2to3", "turtledemo", "tkinter", "ensurepip", "venv", "encodings", "pydoc_data"}


def read_corpus(path: Path, normalize_newlines: bool = False, tokenizer: str = "chars",
                cache_dir: Path | None = None):
    """One text file as an EncodedCorpus (see encoding.py), with one-line errors."""
    from charlm.text.cache import open_corpus  # the cache needs this module's neighbours, not the reverse
    from charlm.text.sources import SourceFile

    if not path.exists():
        raise CorpusError(f"corpus file {path} does not exist; check the path")
    if path.is_dir():
        raise CorpusError(f"{path} is a directory; give the path of a text file")
    return open_corpus([SourceFile(path, named=True)], tokenizer, normalize_newlines, cache_dir)


def stdlib_sources(max_bytes: int = DEFAULT_CORPUS_MAX_BYTES) -> list[Path]:
    """The standard library's .py files in sorted order, up to max_bytes in total."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chosen, total = [], 0
    for path in sorted(root.rglob("*.py")):
        parts = set(path.relative_to(root).parts[:-1])
        if parts & _SKIPPED_DIRS or path.name.startswith("test_"):
            continue
        size = path.stat().st_size
        if total + size > max_bytes:
            continue
        chosen.append(path)
        total += size
    return chosen


def ensure_default_corpus(directory: Path = Path("corpora")) -> Path:
    """Build corpora/python-stdlib.txt on first use; return its path."""
    target = directory / f"{DEFAULT_CORPUS_NAME}.txt"
    if target.is_file() and target.stat().st_size > 0:
        return target
    pieces = []
    for source in stdlib_sources():
        try:
            text = source.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # a stray non-UTF-8 file is not worth failing over
        pieces.append(f"# ---- {source.name} ----\n{text.rstrip()}\n\n")
    if not pieces:
        raise CorpusError("could not find the Python standard library sources to build the default corpus; "
                          "pass a text file: charlm train FILE")
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".txt.partial")
    partial.write_text("".join(pieces), encoding="utf-8")
    os.replace(partial, target)
    return target
