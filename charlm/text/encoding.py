"""A corpus as one flat array of token ids, encoded once and memory-mapped after.

The files of a corpus are read as one stream of bytes: each file's bytes in
order, with FILE_SEPARATOR ("\\n\\n") between consecutive files. Its SHA-256
is the corpus checksum (for a single file, the file's own SHA-256). In
character mode each file must be UTF-8: a byte-order mark at its start is
dropped, and CRLF/CR become LF only if asked.

Encoding streams the files in chunks and is vectorised (NumPy over code
points, no per-character Python), in two passes: the first validates, hashes
and counts characters (the vocabulary); the second maps code points to ids
through a lookup table and appends them to a file of the smallest unsigned
integer type that holds the vocabulary. Memory stays at a few chunks whatever
the corpus size.

The cache (`corpora/cache/` by default, `CHARLM_CACHE_DIR` to move it) holds
one folder per (checksum, tokenizer, newline handling): `ids.bin` and
`meta.json` (corpora under CACHE_MIN_BYTES encode in a blink and are not
cached). A small index keyed by the files' paths, sizes and modification
times finds that folder without reading the files again, so a second run on
the same corpus opens a memory-map in milliseconds; a touched but unchanged
file is re-hashed, found by checksum, and not re-encoded. The index also
keeps its files' own facts (their paths, the files skipped), as files at
other paths with the same bytes share the folder; a `strict` run takes no
cached encoding that skipped a file. Deleting the cache is always safe.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import queue
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from charlm.files import write_atomic
from charlm.errors import CorpusError, VocabularyError
from charlm.text.sources import SourceFile, sniff_format
from charlm.text.vocab import ByteVocab, Vocab, smallest_dtype_bits

FILE_SEPARATOR = b"\n\n"
# 4 MiB: the temporaries of a chunk (up to 16 MiB) then stay under glibc's
# mmap threshold and their memory is reused, not faulted in afresh each time.
CHUNK_BYTES = 4 << 20
CACHE_FORMAT = 1
# Below this a corpus encodes in well under a second, so it is not cached (and
# a run that fails on a small file leaves nothing behind).
CACHE_MIN_BYTES = 8 << 20
DEFAULT_CACHE_DIR = Path("corpora") / "cache"
TOKENIZERS = ("chars", "bytes")


def default_cache_dir() -> Path:
    return Path(os.environ.get("CHARLM_CACHE_DIR", DEFAULT_CACHE_DIR))


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
class _Survey:
    files: list[SourceFile]
    sizes: list[int]
    sha256: str
    size_bytes: int
    counts: np.ndarray  # occurrences per code point (chars) or byte value (bytes)
    tokens: int
    warnings: list[str]


def _survey(files: list[SourceFile], tokenizer: str, normalize: bool, strict: bool) -> _Survey:
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
    return _Survey(files=kept, sizes=sizes, sha256=whole.hexdigest(), size_bytes=size_bytes, counts=counts,
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


def _encode_stream(files: list[SourceFile], vocab: Vocab | ByteVocab, normalize: bool,
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
    stored = table.to({np.uint8: torch.uint8, np.uint16: torch.int16, np.uint32: torch.int32}[_dtype(vocab).type])
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
    for ids, unknown in _encode_stream(files, vocab, normalize, skip_unknown, complete):
        pieces.append(ids.view(_dtype(vocab)) if ids.dtype.itemsize == _dtype(vocab).itemsize
                      else ids.astype(_dtype(vocab)))
        skipped += unknown
    return (np.concatenate(pieces) if pieces else np.empty(0, _dtype(vocab))), skipped


def _vocab_of(survey: _Survey, tokenizer: str) -> Vocab | ByteVocab:
    if tokenizer == "bytes":
        return ByteVocab()
    return Vocab(tuple(chr(p) for p in np.flatnonzero(survey.counts).tolist()))


def _dtype(vocab) -> np.dtype:
    return np.dtype({8: np.uint8, 16: np.uint16, 32: np.uint32}[smallest_dtype_bits(vocab.size)])


class _BackgroundWriter:
    """Writes (and syncs) arrays to a file on a second thread while the caller encodes.

    File writes and fsync release the GIL, so on two cores they overlap the
    decoding; syncing as it goes spreads the disk work instead of leaving it
    all to the final fsync. At most `depth` chunks wait, so memory stays flat.
    """

    SYNC_EVERY = 256 << 20

    def __init__(self, out, depth: int = 4):
        self.out, self.pending, self.unsynced = out, queue.Queue(maxsize=depth), 0
        self.error: OSError | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "_BackgroundWriter":
        self.thread.start()
        return self

    def put(self, array: np.ndarray) -> None:
        if self.error:
            raise self.error
        self.pending.put(array)

    def _run(self) -> None:
        while (array := self.pending.get()) is not None:
            if self.error:
                continue  # drain after a failure
            try:
                self.out.write(memoryview(array).cast("B"))
                self.unsynced += array.nbytes
                if self.unsynced >= self.SYNC_EVERY:
                    os.fdatasync(self.out.fileno())
                    self.unsynced = 0
            except OSError as exc:
                self.error = exc

    def __exit__(self, *exc_info) -> None:
        self.pending.put(None)
        self.thread.join()
        if self.error:
            raise self.error
        if exc_info[0] is None:
            os.fsync(self.out.fileno())


def _write_ids(files: list[SourceFile], vocab, normalize: bool, target: Path) -> int:
    dtype, written = _dtype(vocab), 0
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("wb", buffering=0) as out, _BackgroundWriter(out) as writer:
            for ids, _ in _encode_stream(files, vocab, normalize, complete=True):
                writer.put(ids.view(dtype) if ids.dtype.itemsize == dtype.itemsize else ids.astype(dtype))
                written += len(ids)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CorpusError(f"cannot write the encoded corpus to {target.parent}: {exc.strerror}; "
                          f"free some space or set CHARLM_CACHE_DIR") from None
    return written


# -- the cache -------------------------------------------------------------------

def _stat_key(files: list[SourceFile], tokenizer: str, normalize: bool) -> str:
    facts = [tokenizer, normalize, CACHE_FORMAT]
    for source in files:
        stat = source.path.stat()
        facts.append([str(source.path.resolve()), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:32]


def _entry_name(sha256: str, tokenizer: str, normalize: bool) -> str:
    return f"{sha256[:24]}-{tokenizer}" + ("-lf" if normalize else "")


def _load_entry(entry: Path) -> EncodedCorpus | None:
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT:
            return None
        ids = np.memmap(entry / "ids.bin", dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["tokens"],))
        return EncodedCorpus(ids=ids, vocab=Vocab.from_json(meta["vocab"]), info=meta["info"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, damaged or stale: encode again


def _info(survey: _Survey, name: str) -> dict:
    return {"name": name, "sha256": survey.sha256, "size_bytes": survey.size_bytes,
            "files": [{"path": str(s.path.resolve()), "size_bytes": size} for s, size in zip(survey.files, survey.sizes)],
            "skipped": survey.warnings}


def open_corpus(files: list[SourceFile], tokenizer: str = "chars", normalize_newlines: bool = False,
                cache_dir: Path | None = None, name: str | None = None, strict: bool = False,
                standard_splits: tuple[int, int] | None = None) -> EncodedCorpus:
    """Encode files (or find them in the cache) into an EncodedCorpus.

    cache_dir None encodes in memory and caches nothing (tests, small texts).
    """
    if tokenizer not in TOKENIZERS:
        raise CorpusError(f"tokenizer must be chars or bytes, got {tokenizer!r}")
    name = name or files[0].path.stem
    index_file = None
    if cache_dir is not None and sum(_size(f.path) for f in files) < CACHE_MIN_BYTES:
        cache_dir = None
    if cache_dir is not None:
        index_file = cache_dir / "index" / f"{_stat_key(files, tokenizer, normalize_newlines)}.json"
        try:
            indexed = json.loads(index_file.read_text(encoding="utf-8"))
            cached = _load_entry(cache_dir / indexed["entry"])
            # The index holds these files' own info: an entry is shared by every file set with the same bytes.
            info = indexed.get("info") or (cached.info if cached else None)
            # An entry made without strict may have skipped files that strict refuses: survey them again,
            # which raises the same error as an uncached strict run.
            if cached is not None and not (strict and info.get("skipped")):
                return _finish(cached, info, name, standard_splits)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    survey = _survey(files, tokenizer, normalize_newlines, strict)
    vocab = _vocab_of(survey, tokenizer)
    if not survey.tokens or not _has_non_space(survey.counts):
        what, text = (files[0].path, "a text file") if len(files) == 1 else (f"of {len(files)} files", "text files")
        problem = "is empty" if not survey.tokens else "holds only whitespace"
        raise CorpusError(f"corpus {what} {problem}; give {text} with some content")
    info = _info(survey, name)
    if cache_dir is None:
        ids, _ = encode_files(survey.files, vocab, normalize_newlines, complete=True)
        return EncodedCorpus(ids=ids, vocab=vocab, info=info, standard_splits=standard_splits)
    entry = cache_dir / _entry_name(survey.sha256, tokenizer, normalize_newlines)
    cached = _load_entry(entry)
    if cached is None:
        try:
            entry.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CorpusError(f"cannot create the corpus cache {entry}: {exc.strerror}; "
                              "set CHARLM_CACHE_DIR to a writable folder") from None
        tokens = _write_ids(survey.files, vocab, normalize_newlines, entry / "ids.bin")
        meta = {"format": CACHE_FORMAT, "dtype": _dtype(vocab).name, "tokens": tokens,
                "vocab": vocab.to_json(), "info": info}
        write_atomic(entry / "meta.json", json.dumps(meta).encode("utf-8"))
        cached = _load_entry(entry)
    index_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(index_file, json.dumps({"entry": entry.name, "info": info}).encode("utf-8"))
    return _finish(cached, info, name, standard_splits)


def _finish(cached: EncodedCorpus, info: dict, name: str, standard_splits) -> EncodedCorpus:
    return EncodedCorpus(ids=cached.ids, vocab=cached.vocab, info=dict(info, name=name),
                         standard_splits=standard_splits)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # reported when it is read


def _has_non_space(counts: np.ndarray) -> bool:
    return any(not chr(p).isspace() for p in np.flatnonzero(counts).tolist())


def reopen_recorded(info: dict, tokenizer: str, normalize_newlines: bool, cache_dir: Path | None,
                    for_resume: bool = False) -> EncodedCorpus:
    """The corpus a run recorded, from the same files, checked to be unchanged."""
    paths = [Path(f["path"]) for f in info.get("files", [])] or ([Path(info["path"])] if info.get("path") else [])
    gone = [p for p in paths if not p.is_file()]
    if not paths or gone:
        raise CorpusError(f"the run's corpus file {gone[0] if gone else '(none recorded)'} is gone; "
                          "pass the text to use: charlm eval FILE, or charlm train FILE --resume")
    splits = info.get("standard_splits")
    corpus = open_corpus([SourceFile(p, named=True) for p in paths], tokenizer, normalize_newlines, cache_dir,
                         name=info.get("name"), standard_splits=tuple(splits) if splits else None)
    if corpus.sha256 != info.get("sha256"):
        where = f"{info.get('name')} ({paths[0]}{' ...' if len(paths) > 1 else ''})"
        if for_resume:
            raise CorpusError(f"the corpus {where} is not the one this run was trained on (it has changed "
                              "since: its checksum differs); restore it to resume, or start a new run with --out")
        raise CorpusError(f"the run's corpus {where} has changed since training, so its validation split "
                          "is not the same text; pass the text to score: charlm eval FILE")
    return corpus
