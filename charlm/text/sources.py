"""Which files a corpus is made of: files, directories and globs, in a fixed order.

`charlm train PATH...` takes any mix of

- files, used as given (a file named on the command line must be readable text);
- directories, walked recursively in sorted order of their relative paths,
  leaving out version-control and tool folders (.git, .hg, .svn, __pycache__,
  node_modules, .venv and any other hidden folder), hidden files, and the
  folders charlm itself writes (checkpoints/, corpora/, the encoding cache,
  and any run directory, wherever --out put it), so training on "." twice
  does not train on the first run's files; and
- glob patterns (`'src/**/*.py'`), expanded in sorted order.

`--include GLOB` (repeatable) keeps only the files found by walking whose name
or relative path matches one of the globs. Files found by walking or by a glob
that look binary (a NUL byte in their first 8 KiB) or cannot be read are
skipped with a warning, or refused with `strict`. The order is that of the
arguments, and within each the sorted order: the same command always makes
the same corpus. How the files are joined is in encoding.py.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from charlm.engine.checkpoint import is_run_directory
from charlm.errors import CorpusError

SKIPPED_DIRS = {".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", "__pycache__", "node_modules", ".venv",
                ".tox", ".mypy_cache", ".pytest_cache"}
_SNIFF_BYTES = 8192
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class SourceFile:
    path: Path
    named: bool  # given on the command line itself (errors are fatal), not found by walking


@dataclass
class Selection:
    files: list[SourceFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def looks_binary(path: Path) -> bool:
    with path.open("rb") as handle:
        return b"\0" in handle.read(_SNIFF_BYTES)


def _matches(relative: Path, include: list[str]) -> bool:
    if not include:
        return True
    text = relative.as_posix()
    return any(fnmatch.fnmatch(relative.name, g) or fnmatch.fnmatch(text, g) for g in include)


def _walk(root: Path, leave_out: frozenset[Path] = frozenset()) -> list[Path]:
    """Files under root, in sorted order, without the folders left out (see the module docstring)."""
    resolved_root = root.resolve()
    left_out = {folder for folder in leave_out if folder != resolved_root}
    found = []
    for folder, dir_names, file_names in os.walk(root):
        here = Path(folder)
        # Pruning dir_names in place keeps os.walk out of them altogether.
        dir_names[:] = [d for d in dir_names if d not in SKIPPED_DIRS and not d.startswith(".")
                        and (here / d).resolve() not in left_out]
        if here != root and is_run_directory(here, file_names):
            dir_names[:] = []
            continue
        found += [here / name for name in file_names if not name.startswith(".") and (here / name).is_file()]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def select_files(arguments: list[str], include: list[str] | None = None, strict: bool = False,
                 leave_out: Iterable[Path] = ()) -> Selection:
    """Resolve PATH arguments into an ordered list of files (see the module docstring).

    Walks skip the folders in `leave_out` (charlm's own folders) and any
    earlier run's directory.
    """
    include = include or []
    left_out = frozenset(folder.resolve() for folder in leave_out)
    selection, seen = Selection(), set()

    def add(path: Path, named: bool) -> None:
        key = path.resolve()
        if key in seen:
            return
        if not named:
            problem = None
            try:
                if looks_binary(path):
                    problem = "looks binary"
            except OSError as exc:
                problem = f"cannot be read ({exc.strerror})"
            if problem:
                if strict:
                    raise CorpusError(f"{path} {problem}; leave it out (or drop --strict to skip such files)")
                selection.warnings.append(f"skipped {path}: it {problem}")
                return
        seen.add(key)
        selection.files.append(SourceFile(path=path, named=named))

    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            walked = [p for p in _walk(path, left_out) if _matches(p.relative_to(path), include)]
            if not walked:
                raise CorpusError(f"directory {path} has no files to train on"
                                  + (f" matching --include {' '.join(include)}; check the globs" if include
                                     else "; check the path"))
            for found in walked:
                add(found, named=False)
        elif path.exists():
            add(path, named=True)
        elif _GLOB_CHARS & set(argument):
            matched = sorted(Path(p) for p in glob.glob(argument, recursive=True) if Path(p).is_file())
            if not matched:
                raise CorpusError(f"no files match {argument}; check the pattern and the folder you run from")
            for found in matched:
                add(found, named=False)
        else:
            raise CorpusError(f"corpus file {path} does not exist; check the path")
    if not selection.files:
        raise CorpusError("no files left to train on: " + "; ".join(selection.warnings)
                          + "; point at text files, or pick them with --include GLOB")
    return selection
