"""A corpus as one flat array of token ids.

The files of a corpus are read as one stream of bytes: each file's bytes in
order, with FILE_SEPARATOR ("\\n\\n") between consecutive files. Its SHA-256
is the corpus checksum (for a single file, the file's own SHA-256). In
character mode each file must be UTF-8: a byte-order mark at its start is
dropped, and CRLF/CR become LF only if asked.

Encoding streams the files in chunks and is vectorised (NumPy over code
points, no per-character Python), in two passes: the first validates, hashes
and counts characters (the vocabulary); the second maps code points to ids
through a lookup table into the smallest unsigned integer type that holds
the vocabulary (in memory, or appended to a file by cache.py). Memory stays
at a few chunks whatever the corpus size.

Large corpora are encoded once and memory-mapped after: cache.py.
"""

from __future__ import annotations

import codecs
import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from charlm.errors import CorpusError, VocabularyError
from charlm.text.sources import SourceFile, sniff_format
from charlm.text.vocab import ByteVocab, Vocab, smallest_dtype_bits

FILE_SEPARATOR = b"\n\n"
# 4 MiB: the temporaries of a chunk (up to 16 MiB) then stay under glibc's
# mmap threshold and their memory is reused, not faulted in afresh each time.
CHUNK_BYTES = 4 << 20
TOKENIZERS = ("chars", "bytes")


@dataclass(frozen=True)
class EncodedCorpus:
    """A corpus ready to train on: ids (often a read-only memmap), its vocabulary and its facts."""

    ids: np.ndarray  # (N,) uint8 / uint16 / uint32
    vocab: Vocab | ByteVocab
    info: dict = field(default_factory=dict)  # recorded in every checkpoint of a run
    # Standard splits of a named corpus, as token offsets (train_end, val_end); None: use val_frac.
    standard_splits: tuple[int, int] | None = None

    @property
    def sha256(self) -> str:
        return self.info["sha256"]

    @property
    def name(self) -> str:
        return self.info["name"]

    def __len__(self) -> int:
        return len(self.ids)

    def describe(self) -> dict:
        return dict(self.info, tokens=len(self.ids), tokenizer=self.vocab.tokenizer,
                    standard_splits=list(self.standard_splits) if self.standard_splits else None)

    def text(self) -> str:
        """The whole corpus as text (small corpora; tests and tools)."""
        return self.vocab.decode(torch.from_numpy(self.ids.astype(np.int64)))

    def splits(self, val_frac: float) -> dict[str, np.ndarray]:
        """Contiguous train / validation (/ test) views of the ids."""
        if self.standard_splits:
            train_end, val_end = self.standard_splits
            return {"train": self.ids[:train_end], "val": self.ids[train_end:val_end], "test": self.ids[val_end:]}
        train, val = split_train_val(self.ids, val_frac)
        return {"train": train, "val": val}


def split_train_val(ids: torch.Tensor, val_frac: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous split: the last val_frac of the text is validation (nanoGPT's 90/10)."""
    n_val = int(round(len(ids) * val_frac))
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]



# -- reading the byte stream ---------------------------------------------------

def _raw_chunks(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk
    except OSError as exc:
        raise CorpusError(f"{path} cannot be read ({exc.strerror}); check its permissions") from None


class _NoHash:
    def update(self, data) -> None:  # the second pass has hashed nothing new
        pass


_NO_HASH = _NoHash()


class _FileReader:
    """One file as chunks of text (chars) or bytes, hashed as it is read."""

    def __init__(self, path: Path, tokenizer: str, normalize_newlines: bool, hasher):
        self.path, self.tokenizer, self.normalize = path, tokenizer, normalize_newlines
        self.hasher = hasher
        self.size = 0

    def __iter__(self) -> Iterator[str | bytes]:
        if self.tokenizer == "bytes":
            yield from self._byte_chunks()
        else:
            yield from self._text_chunks()

    def _byte_chunks(self) -> Iterator[bytes]:
        held = b""
        for raw in _raw_chunks(self.path):
            self.hasher.update(raw)
            self.size += len(raw)
            if self.normalize:
                raw = held + raw
                held = b"\r" if raw.endswith(b"\r") else b""  # may be the first half of a CRLF
                raw = raw[: len(raw) - len(held)].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            yield raw
        if held:
            yield b"\n"

    def _text_chunks(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")()
        held, first = "", True
        for raw in _raw_chunks(self.path):
            self.hasher.update(raw)
            start_offset = self.size
            self.size += len(raw)
            if first and raw.startswith(codecs.BOM_UTF8):
                raw, start_offset = raw[3:], start_offset + 3
            elif first and (known := sniff_format(raw[:8192], self.path)):  # compressed, UTF-16, ...
                raise CorpusError(f"{self.path} is {known[0]}, not UTF-8 text; {known[1]}")
            first = False
            text = self._decode(decoder, raw, start_offset)
            if self.normalize:
                text = held + text
                held = "\r" if text.endswith("\r") else ""
                text = text[: len(text) - len(held)].replace("\r\n", "\n").replace("\r", "\n")
            yield text
        self._decode(decoder, b"", self.size, final=True)
        if held:
            yield "\n"

    def _decode(self, decoder, raw: bytes, start_offset: int, final: bool = False) -> str:
        try:
            return decoder.decode(raw, final)
        except UnicodeDecodeError as exc:
            # exc.object is the decoder's held-back bytes followed by raw
            offset = start_offset - (len(exc.object) - len(raw)) + exc.start
            bad = exc.object[exc.start:exc.start + 1].hex()
            raise CorpusError(f"{self.path} is not UTF-8 text: byte 0x{bad} at offset {offset} ({exc.reason}); "
                              "convert it to UTF-8 first (or train on its bytes: --tokenizer bytes)") from None


def _code_points(text: str, astral: bool = True) -> torch.Tensor:
    """The text's Unicode code points as an int32 tensor (uint8 for ASCII text).

    Without astral characters (none above U+FFFF), UTF-16 code units are the
    code points, and encoding to UTF-16 is about three times faster than to
    UTF-32; a strictly decoded text has no lone surrogates to confuse them.
    """
    if text.isascii():  # O(1) in CPython; the common case costs one copy
        return _view(text.encode("ascii"), torch.uint8)
    if astral:
        return _view(text.encode("utf-32-le", errors="surrogatepass"), torch.int32)
    return _view(text.encode("utf-16-le"), torch.uint16).to(torch.int32)


def _view(data: bytes, dtype: torch.dtype) -> torch.Tensor:
    """bytes as a tensor without a copy; it is only ever read, so its read-only memory is fine."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that the buffer is not writable
        return torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)


def _bincount(points: torch.Tensor) -> np.ndarray:
    return torch.bincount(points).numpy()  # several times faster than numpy's for large inputs


# -- pass 1: validate, hash, count ----------------------------------------------

@dataclass
class Survey:
    """What the first pass over the files found: their checksum, sizes, token counts and skipped files."""

    files: list[SourceFile]
    sizes: list[int]
    sha256: str
    size_bytes: int
    counts: np.ndarray  # occurrences per code point (chars) or byte value (bytes)
    tokens: int
    warnings: list[str]


def survey_files(files: list[SourceFile], tokenizer: str, normalize: bool, strict: bool) -> Survey:
    whole = hashlib.sha256()
    counts = np.zeros(256, dtype=np.int64)
    kept, sizes, warnings, tokens = [], [], [], 0
    separator = _separator_points(tokenizer)
    for source in files:
        before = whole.copy()
        file_counts, file_tokens = np.zeros_like(counts), 0
        if kept:
            whole.update(FILE_SEPARATOR)
        reader = _FileReader(source.path, tokenizer, normalize, whole)
        try:
            for chunk in reader:
                points = _view(chunk, torch.uint8) if tokenizer == "bytes" else _code_points(chunk, astral=False)
                if not len(points):
                    continue
                binned = _bincount(points)
                if tokenizer == "chars" and binned[0xD800:0xE000].any():  # UTF-16 surrogates: astral characters
                    points = _code_points(chunk, astral=True)
                    binned = _bincount(points)
                if len(binned) > len(file_counts):
                    file_counts = np.concatenate([file_counts, np.zeros(len(binned) - len(file_counts), np.int64)])
                file_counts[: len(binned)] += binned
                file_tokens += len(points)
        except CorpusError as exc:
            if source.named or strict:
                raise
            reason = str(exc).removeprefix(f"{source.path} ").split(";")[0]  # "is not UTF-8 text: byte ..."
            warnings.append(f"skipped {source.path}: it {reason}")
            whole = before
            continue
        if kept:
            for point in separator:
                file_counts[point] += 1
            file_tokens += len(separator)
        if len(file_counts) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(file_counts) - len(counts), np.int64)])
        counts[: len(file_counts)] += file_counts
        tokens += file_tokens
        kept.append(source)
        sizes.append(reader.size)
    if not kept:
        raise CorpusError("no files left to train on: " + "; ".join(warnings)
                          + "; convert them to UTF-8, or train on their bytes: --tokenizer bytes")
    size_bytes = sum(sizes) + len(FILE_SEPARATOR) * (len(kept) - 1)
    return Survey(files=kept, sizes=sizes, sha256=whole.hexdigest(), size_bytes=size_bytes, counts=counts,
                   tokens=tokens, warnings=warnings)


def _separator_points(tokenizer: str) -> list[int]:
    return list(FILE_SEPARATOR) if tokenizer == "bytes" else [ord(c) for c in FILE_SEPARATOR.decode()]


# -- pass 2: ids ------------------------------------------------------------------

def _lookup_table(vocab: Vocab | ByteVocab, max_point: int) -> torch.Tensor:
    """Code point -> id, with -1 for code points outside the vocabulary."""
    if isinstance(vocab, ByteVocab):
        return torch.arange(256, dtype=torch.int32)
    points = torch.tensor([ord(c) for c in vocab.chars], dtype=torch.int64)
    table = torch.full((max(max_point, int(points.max()) if len(points) else 0) + 1,), -1, dtype=torch.int32)
    table[points] = torch.arange(len(points), dtype=torch.int32)
    return table


def encode_stream(files: list[SourceFile], vocab: Vocab | ByteVocab, normalize: bool,
                   skip_unknown: bool = False, complete: bool = False) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (ids chunk as an array, unknown characters dropped from it).

    complete: the vocabulary was surveyed from these very files, so nothing is
    unknown; ids then come straight out in the storage dtype, unchecked.
    """
    if isinstance(vocab, ByteVocab):
        for index, source in enumerate(files):  # bytes are their own ids
            if index:
                yield np.frombuffer(FILE_SEPARATOR, dtype=np.uint8), 0
            for chunk in _FileReader(source.path, "bytes", normalize, _NO_HASH):
                yield np.frombuffer(chunk, dtype=np.uint8), 0
        return
    table = _lookup_table(vocab, 0x10FFFF)
    # The same table in the storage dtype (uint16 ids kept as int16: the same bits).
    stored = table.to({np.uint8: torch.uint8, np.uint16: torch.int16, np.uint32: torch.int32}[ids_dtype(vocab).type])
    astral = any(ord(c) > 0xFFFF for c in vocab.chars)  # else UTF-16 units are code points (faster)
    for index, source in enumerate(files):
        if index:
            yield table[torch.tensor(_separator_points(vocab.tokenizer))].numpy(), 0
        for chunk in _FileReader(source.path, vocab.tokenizer, normalize, _NO_HASH):
            points = _code_points(chunk, astral)
            if points.dtype != torch.int32:
                points = points.to(torch.int32)
            if complete:
                yield stored.index_select(0, points).numpy(), 0
                continue
            ids = table.index_select(0, points)
            unknown = ids < 0
            ids = ids.numpy()
            if bool(unknown.any()) and not astral and bool(((points >= 0xD800) & (points < 0xE000)).any()):
                points = _code_points(chunk, astral=True)  # characters above U+FFFF, which the vocabulary lacks
                ids = table.index_select(0, points)
                unknown = ids < 0
                ids = ids.numpy()
            if bool(unknown.any()):
                points, unknown = points.numpy(), unknown.numpy()
                if not skip_unknown:
                    missing = sorted({chr(p) for p in np.unique(points[unknown]).tolist()})
                    shown = ", ".join(repr(c) for c in missing[:10]) + (
                        f" and {len(missing) - 10} more" if len(missing) > 10 else "")
                    raise VocabularyError(f"{source.path}: {len(missing)} character(s) not in the model's "
                                          f"vocabulary: {shown}; pass --skip-unknown to score the rest")
                yield ids[~unknown], int(unknown.sum())
            else:
                yield ids, 0


def encode_files(files: list[SourceFile], vocab: Vocab | ByteVocab, normalize: bool = False,
                 skip_unknown: bool = False, complete: bool = False) -> tuple[np.ndarray, int]:
    """Encode files with a given vocabulary, in memory: (ids, unknown characters skipped)."""
    pieces, skipped = [], 0
    for ids, unknown in encode_stream(files, vocab, normalize, skip_unknown, complete):
        pieces.append(ids.view(ids_dtype(vocab)) if ids.dtype.itemsize == ids_dtype(vocab).itemsize
                      else ids.astype(ids_dtype(vocab)))
        skipped += unknown
    return (np.concatenate(pieces) if pieces else np.empty(0, ids_dtype(vocab))), skipped


def vocab_of_survey(survey: Survey, tokenizer: str) -> Vocab | ByteVocab:
    if tokenizer == "bytes":
        return ByteVocab()
    return Vocab(tuple(chr(p) for p in np.flatnonzero(survey.counts).tolist()))


def ids_dtype(vocab) -> np.dtype:
    return np.dtype({8: np.uint8, 16: np.uint16, 32: np.uint32}[smallest_dtype_bits(vocab.size)])


def has_non_space(counts: np.ndarray) -> bool:
    return any(not chr(p).isspace() for p in np.flatnonzero(counts).tolist())
