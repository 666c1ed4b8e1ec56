"""Reading source<TAB>target pairs, splitting them by distinct source, and grouping references.

- `read_pairs`: a UTF-8 TSV, one pair per line. Columns past the second
  (Tatoeba's attribution) are ignored and counted, so the caller can say so
  once; `reverse` swaps the direction; pairs longer than the length limits
  are skipped and counted. A line the reader cannot use (no tab, an empty
  source or target, bad UTF-8) is an error naming file:line, never a silent
  skip: a broken file should be fixed, not half-read. Empty lines are skipped.
- `split_by_source`: a seeded split of the *distinct sources*, so every
  translation of a source lands on the same side and validation never scores
  a source whose translation was trained on.
- `group_references`: each distinct source once, with all its targets, for
  multi-reference scoring.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from charlm.errors import CorpusError


@dataclass(frozen=True)
class Pair:
    source: str
    target: str


@dataclass
class PairsFile:
    pairs: list[Pair]
    extra_column_lines: int = 0  # lines with more than two columns (the extra ones were ignored)
    too_long: int = 0  # pairs skipped for the length limits
    empty_lines: int = 0
    path: str = ""  # the file read
    sha256: str = ""  # of its bytes: a run checks it is resumed or evaluated on the same data


def read_pairs(path: str | Path, reverse: bool = False, max_source_length: int | None = None,
               max_target_length: int | None = None) -> PairsFile:
    """Pairs of a TSV file (after `reverse`), without those over the length limits (in characters)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file; give a TSV file of source<TAB>target lines") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read it ({exc.strerror}); check the path and its permissions") from None
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark is not part of the first source
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CorpusError(f"{path}:{line}: not valid UTF-8; save the file as UTF-8") from None

    roles = ("target", "source") if reverse else ("source", "target")  # what each file column is
    result = PairsFile([], path=str(path), sha256=hashlib.sha256(raw).hexdigest())
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line:
            result.empty_lines += 1
            continue
        columns = line.split("\t")
        if len(columns) < 2:
            raise CorpusError(f"{path}:{number}: no tab between source and target; "
                              "each line must be source<TAB>target")
        for column, role in enumerate(roles):
            if not columns[column]:
                raise CorpusError(f"{path}:{number}: empty {role} ({'first' if column == 0 else 'second'} column); "
                                  "fix or remove the line")
        if len(columns) > 2:
            result.extra_column_lines += 1
        source, target = (columns[1], columns[0]) if reverse else (columns[0], columns[1])
        if ((max_source_length is not None and len(source) > max_source_length)
                or (max_target_length is not None and len(target) > max_target_length)):
            result.too_long += 1
            continue
        result.pairs.append(Pair(source, target))

    if not result.pairs:
        if result.too_long:
            raise CorpusError(f"{path}: all {result.too_long} pairs are longer than --max-source-length "
                              f"{max_source_length} or --max-target-length {max_target_length}; raise the limits")
        raise CorpusError(f"{path}: no pairs in the file; give a TSV file of source<TAB>target lines")
    return result


def split_by_source(pairs: list[Pair], valid_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, valid): a seeded `valid_fraction` of the distinct sources, with all their pairs, goes to valid.

    Both sides keep the file's order. With two or more distinct sources and a
    fraction above 0, each side gets at least one source.
    """
    if not 0 <= valid_fraction < 1:
        raise CorpusError(f"the validation fraction must be in [0, 1), got {valid_fraction}")
    sources = list(dict.fromkeys(pair.source for pair in pairs))  # distinct, in order of first appearance
    if valid_fraction == 0:
        return list(pairs), []
    if len(sources) < 2:
        raise CorpusError(f"only {len(sources)} distinct source(s): nothing to hold out for validation; "
                          "add pairs with other sources or give a separate validation file")
    random.Random(seed).shuffle(sources)
    count = min(max(round(valid_fraction * len(sources)), 1), len(sources) - 1)
    valid_sources = set(sources[:count])
    return ([pair for pair in pairs if pair.source not in valid_sources],
            [pair for pair in pairs if pair.source in valid_sources])


def group_references(pairs: list[Pair]) -> list[tuple[str, list[str]]]:
    """Each distinct source once (first-appearance order) with its distinct targets (file order)."""
    groups: dict[str, dict[str, None]] = {}
    for pair in pairs:
        groups.setdefault(pair.source, {})[pair.target] = None
    return [(source, list(targets)) for source, targets in groups.items()]
