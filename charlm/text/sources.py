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
skipped with a warning, or refused with `strict`; compressed files, archives
and UTF-16 text are recognised by their first bytes and called what they are,
with the command that turns them into text. The order is that of the
arguments, and within each the sorted order: the same command always makes
the same corpus. How the files are joined is in encoding.py.
"""

from __future__ import annotations

import difflib
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


# Files people take for text, by their first bytes: (what it is, how to get text out of it).
_MAGIC = [
    (b"\x1f\x8b", "gzip-compressed", "decompress it first: gunzip -k {path}"),
    (b"PK\x03\x04", "a zip archive", "unpack it first: unzip {path}"),
    (b"BZh", "bzip2-compressed", "decompress it first: bunzip2 -k {path}"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it first: unxz -k {path}"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it first: unzstd {path}"),
    (b"\xff\xfe\x00\x00", "UTF-32 text", "convert it to UTF-8 first: iconv -f UTF-32 -t UTF-8 {path}"),
    (b"\x00\x00\xfe\xff", "UTF-32 text", "convert it to UTF-8 first: iconv -f UTF-32 -t UTF-8 {path}"),
    (b"\xff\xfe", "UTF-16 text", "convert it to UTF-8 first: iconv -f UTF-16 -t UTF-8 {path}"),
    (b"\xfe\xff", "UTF-16 text", "convert it to UTF-8 first: iconv -f UTF-16 -t UTF-8 {path}"),
]


def sniff_format(head: bytes, path: Path) -> tuple[str, str] | None:
    """(what the file is, the way to text) for a compressed file, an archive or UTF-16/32 text; else None.

    head: the file's first bytes. UTF-16 without a byte-order mark is told by
    its zero bytes: every other byte of ASCII text.
    """
    for magic, what, advice in _MAGIC:
        if head.startswith(magic) and (magic != b"BZh" or head[3:4].isdigit()):
            return what, advice.format(path=path)
    pairs = len(head) // 2
    if pairs >= 8:
        even_zeros, odd_zeros = head[0:2 * pairs:2].count(0), head[1:2 * pairs:2].count(0)
        if max(even_zeros, odd_zeros) > 0.9 * pairs and min(even_zeros, odd_zeros) < 0.1 * pairs:
            endian = "LE" if odd_zeros > even_zeros else "BE"
            return "UTF-16 text", f"convert it to UTF-8 first: iconv -f UTF-16{endian} -t UTF-8 {path}"
    return None


def _binary_problem(path: Path) -> str | None:
    """Why a file found by walking is not text ("is gzip-compressed (...)", "looks binary"), or None."""
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    known = sniff_format(head, path)
    if known:
        return f"is {known[0]} ({known[1]})"
    return "looks binary" if b"\0" in head else None


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
                problem = _binary_problem(path)
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
            raise CorpusError(f"corpus file {path} does not exist; {_did_you_mean(argument)}")
    if not selection.files:
        raise CorpusError("no files left to train on: " + "; ".join(selection.warnings)
                          + "; point at text files, or pick them with --include GLOB")
    return selection


def _did_you_mean(argument: str) -> str:
    """The way out of a path that does not exist: a named corpus it is close to, or checking the path."""
    from charlm.text.named import REGISTRY  # named corpora build on this module's neighbours

    if "/" not in argument and "." not in argument:
        close = difflib.get_close_matches(argument.lower(), REGISTRY, n=1, cutoff=0.75)
        if close:
            return f"did you mean the named corpus {close[0]}? (see: charlm corpus list)"
    return "check the path"
