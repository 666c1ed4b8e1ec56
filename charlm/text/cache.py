"""The encoded-corpus cache: a corpus encoded once (encoding.py), memory-mapped after.

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

import hashlib
import json
import os
import queue
import threading
from pathlib import Path

import numpy as np

from charlm.errors import CorpusError
from charlm.files import write_atomic
from charlm.text.encoding import (TOKENIZERS, EncodedCorpus, Survey, encode_files, encode_stream, has_non_space,
                                  ids_dtype, survey_files, vocab_of_survey)
from charlm.text.sources import SourceFile
from charlm.text.vocab import Vocab

CACHE_FORMAT = 1
# Below this a corpus encodes in well under a second, so it is not cached (and
# a run that fails on a small file leaves nothing behind).
CACHE_MIN_BYTES = 8 << 20
DEFAULT_CACHE_DIR = Path("corpora") / "cache"


def default_cache_dir() -> Path:
    return Path(os.environ.get("CHARLM_CACHE_DIR", DEFAULT_CACHE_DIR))


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
    dtype, written = ids_dtype(vocab), 0
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("wb", buffering=0) as out, _BackgroundWriter(out) as writer:
            for ids, _ in encode_stream(files, vocab, normalize, complete=True):
                writer.put(ids.view(dtype) if ids.dtype.itemsize == dtype.itemsize else ids.astype(dtype))
                written += len(ids)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CorpusError(f"cannot write the encoded corpus to {target.parent}: {exc.strerror}; "
                          f"free some space or set CHARLM_CACHE_DIR") from None
    return written


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


def _info(survey: Survey, name: str) -> dict:
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
    survey = survey_files(files, tokenizer, normalize_newlines, strict)
    vocab = vocab_of_survey(survey, tokenizer)
    if not survey.tokens or not has_non_space(survey.counts):
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
        meta = {"format": CACHE_FORMAT, "dtype": ids_dtype(vocab).name, "tokens": tokens,
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
