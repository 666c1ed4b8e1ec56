"""Records: one item per line, optionally with a class, read from the three layouts people have.

- a text file: one record per line (names, titles, commands), no labels;
- a folder with one file per class: the class is the file's name without
  its extension, as in PyTorch's name-classification tutorials;
- a `.tsv` file: `text<TAB>label` per line (further columns are ignored and counted).

Blank lines are skipped and counted; CRLF line ends are accepted; a UTF-8
byte-order mark is dropped. Every problem is a one-line CorpusError that
names the file and line. The SHA-256 of the bytes read (files in order) lets
a run check it resumes or evaluates on the same data.

The split is random by distinct text, seeded: every occurrence of a text (under
any label) lands on the same side, so validation never scores a record the
model trained on.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charlm.errors import CorpusError

TSV_SUFFIXES = (".tsv",)


@dataclass(frozen=True)
class RecordSet:
    """Records as read: texts, their labels (None without classes), and what reading found."""

    texts: list[str]
    labels: list[str] | None
    classes: tuple[str, ...]  # sorted; () for unlabelled records
    layout: str  # lines | folder | tsv
    files: list[str]
    sha256: str
    blank_lines: int = 0
    extra_columns: int = 0  # TSV lines with more than two columns (the rest ignored)
    line_numbers: list[str] = field(default_factory=list)  # "file:line" of each record, for messages
    source: str = ""  # the path as given: a file or a folder

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def distinct_texts(self) -> int:
        return len(set(self.texts))

    def facts(self) -> dict:
        """What a run records about its data."""
        # The source is read again (eval, --novelty, --resume) from wherever the command runs: absolute.
        facts = {"source": str(Path(self.source).resolve()) if self.source else "", "layout": self.layout,
                 "files": self.files, "sha256": self.sha256, "records": len(self.texts),
                 "distinct": self.distinct_texts(), "blank_lines": self.blank_lines}
        if self.labelled:
            counts = Counter(self.labels)
            by_text: dict[str, set] = {}
            for text, label in zip(self.texts, self.labels):
                by_text.setdefault(text, set()).add(label)
            facts.update(classes=list(self.classes), class_counts={c: counts[c] for c in self.classes},
                         multi_label_texts=sum(len(labels) > 1 for labels in by_text.values()),
                         extra_columns=self.extra_columns)
        return facts


def read_records(path: Path, min_classes: int = 2) -> RecordSet:
    """A records file, a TSV of text<TAB>label, or a folder of class files.

    min_classes: labelled data must have this many classes. Training needs two
    (one class is no condition); scoring a model on one class's records needs one.
    """
    if not path.exists():
        raise CorpusError(f"{path} does not exist; check the path")
    if path.is_dir():
        return _read_folder(path, min_classes)
    if path.suffix.lower() in TSV_SUFFIXES:
        return _read_tsv(path, min_classes)
    return _read_lines(path)


def _read_lines(path: Path) -> RecordSet:
    hasher = hashlib.sha256()
    lines = _lines(path, hasher)
    texts, where, blank = [], [], 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            blank += 1
            continue
        texts.append(line)
        where.append(f"{path}:{number}")
    if not texts:
        raise CorpusError(f"{path} holds no records (it is empty or has only blank lines); "
                          "give a file with one record per line")
    return RecordSet(texts=texts, labels=None, classes=(), layout="lines", files=[str(path)],
                     sha256=hasher.hexdigest(), blank_lines=blank, line_numbers=where, source=str(path))


def _lines(path: Path, hasher) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"{path} cannot be read ({exc.strerror}); check its permissions") from None
    hasher.update(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the line break that ends the last line
    return [line.removesuffix("\r") for line in lines]


def _read_tsv(path: Path, min_classes: int = 2) -> RecordSet:
    hasher = hashlib.sha256()
    texts, labels, where, blank, extra = [], [], [], 0, 0
    for number, line in enumerate(_lines(path, hasher), 1):
        if not line.strip():
            blank += 1
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise CorpusError(f"{path}:{number} has no tab; each line of a .tsv is text<TAB>label")
        text, label = fields[0], fields[1].strip()
        if not text.strip() or not label:
            empty = "text" if not text.strip() else "label"
            raise CorpusError(f"{path}:{number} has an empty {empty}; each line of a .tsv is text<TAB>label")
        extra += len(fields) > 2
        texts.append(text)
        labels.append(label)
        where.append(f"{path}:{number}")
    if not texts:
        raise CorpusError(f"{path} holds no records (it is empty or has only blank lines); "
                          "give lines of text<TAB>label")
    classes = tuple(sorted(set(labels)))
    if len(classes) < min_classes:
        raise CorpusError(f"{path} has only one label ({classes[0]!r}); labelled data needs at least two classes")
    return RecordSet(texts=texts, labels=labels, classes=classes, layout="tsv", files=[str(path)],
                     sha256=hasher.hexdigest(), blank_lines=blank, extra_columns=extra, line_numbers=where,
                     source=str(path))


def _read_folder(folder: Path, min_classes: int = 2) -> RecordSet:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise CorpusError(f"{folder} holds no files; give a folder with one file of records per class")
    if len(files) < min_classes:
        raise CorpusError(f"{folder} holds one class file ({files[0].name}); a folder of classes needs at least "
                          f"two, or train on {files[0]} itself for unlabelled records")
    stems = Counter(p.stem for p in files)
    clashes = sorted(stem for stem, count in stems.items() if count > 1)
    if clashes:
        raise CorpusError(f"{folder} has several files for class {clashes[0]!r}; keep one file per class")
    hasher = hashlib.sha256()
    texts, labels, where, blank = [], [], [], 0
    for path in files:
        hasher.update(path.name.encode("utf-8") + b"\0")
        count = 0
        for number, line in enumerate(_lines(path, hasher), 1):
            if not line.strip():
                blank += 1
                continue
            texts.append(line)
            labels.append(path.stem)
            where.append(f"{path}:{number}")
            count += 1
        if not count:
            raise CorpusError(f"class file {path} is empty; add records to it or remove it")
    return RecordSet(texts=texts, labels=labels, classes=tuple(p.stem for p in files), layout="folder",
                     files=[str(p) for p in files], sha256=hasher.hexdigest(), blank_lines=blank,
                     line_numbers=where, source=str(folder))


@dataclass(frozen=True)
class RecordSplit:
    train: list[int]  # indices into the RecordSet, every occurrence of a training text
    val: list[int]


def split_records(records: RecordSet, val_frac: float, seed: int) -> RecordSplit:
    """A seeded random split by distinct text: each text's occurrences all go to one side.

    At least one distinct text goes to each side (a one-text set cannot be split).
    """
    distinct = sorted(set(records.texts))
    if len(distinct) < 2:
        raise CorpusError(f"only {len(distinct)} distinct record(s); a validation split needs at least two")
    order = np.random.default_rng(seed).permutation(len(distinct))
    n_val = min(max(1, round(len(distinct) * val_frac)), len(distinct) - 1)
    val_texts = {distinct[i] for i in order[:n_val]}
    train, val = [], []
    for index, text in enumerate(records.texts):
        (val if text in val_texts else train).append(index)
    return RecordSplit(train=train, val=val)
