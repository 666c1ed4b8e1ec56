import hashlib

import numpy as np
import pytest

from charlm.text import cache as corpus_cache, encoding
from charlm.text.cache import open_corpus
from charlm.text.encoding import FILE_SEPARATOR, encode_files
from charlm.errors import CorpusError, VocabularyError
from charlm.text.sources import SourceFile
from charlm.text.vocab import ByteVocab, Vocab


def _files(tmp_path, contents, named=True):
    out = []
    for i, content in enumerate(contents):
        path = tmp_path / f"f{i}.txt"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        out.append(SourceFile(path, named=named))
    return out


def test_files_are_joined_by_the_separator_and_hashed_as_one_stream(tmp_path):
    files = _files(tmp_path, ["héllo", "wörld\n"])
    corpus = open_corpus(files)
    assert corpus.text() == "héllo" + FILE_SEPARATOR.decode() + "wörld\n"
    raw = b"".join([files[0].path.read_bytes(), FILE_SEPARATOR, files[1].path.read_bytes()])
    assert corpus.sha256 == hashlib.sha256(raw).hexdigest() and corpus.info["size_bytes"] == len(raw)
    assert corpus.vocab.chars == tuple(sorted(set(corpus.text())))
    assert corpus.ids.dtype == np.uint8 and [f["size_bytes"] for f in corpus.info["files"]] == [6, 7]


def test_chunk_boundaries_split_neither_characters_nor_crlf(tmp_path, monkeypatch):
    monkeypatch.setattr(encoding, "CHUNK_BYTES", 7)  # cuts through multi-byte characters and CRLF pairs
    text = "a€b\r\nc😀d\r\ré\r\n" * 5
    files = _files(tmp_path, ["\ufeff" + text])  # with a byte-order mark, which is dropped
    assert open_corpus(files).text() == text
    assert open_corpus(files, normalize_newlines=True).text() == text.replace("\r\n", "\n").replace("\r", "\n")


def test_a_bad_byte_is_reported_at_its_offset_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(encoding, "CHUNK_BYTES", 4)
    files = _files(tmp_path, ["ab€€".encode() + b"\xff"])
    with pytest.raises(CorpusError, match="byte 0xff at offset 8"):
        open_corpus(files)


def test_walked_non_utf8_files_are_skipped_with_a_warning_unless_strict(tmp_path):
    files = _files(tmp_path, ["good text\n", b"bad \xff\n", "more text\n"], named=False)
    corpus = open_corpus(files)
    assert corpus.text() == "good text\n" + FILE_SEPARATOR.decode() + "more text\n"
    assert len(corpus.info["skipped"]) == 1 and "f1.txt" in corpus.info["skipped"][0]
    assert corpus.sha256 == hashlib.sha256(b"good text\n" + FILE_SEPARATOR + b"more text\n").hexdigest()
    with pytest.raises(CorpusError, match="offset 4"):
        open_corpus(files, strict=True)


def test_byte_mode_takes_any_file(tmp_path):
    raw = "naïve\n".encode() + b"\xff\x00"
    corpus = open_corpus(_files(tmp_path, [raw]), tokenizer="bytes")
    assert isinstance(corpus.vocab, ByteVocab) and corpus.ids.tolist() == list(raw)


def test_vocabulary_sets_the_smallest_dtype(tmp_path):
    text = "".join(chr(0x4E00 + i) for i in range(300)) + "abc"
    corpus = open_corpus(_files(tmp_path, [text]))
    assert corpus.vocab.size == 303 and corpus.ids.dtype == np.uint16
    assert corpus.text() == text


@pytest.fixture
def cache_small(monkeypatch):
    monkeypatch.setattr(corpus_cache, "CACHE_MIN_BYTES", 0)


def test_small_corpora_are_not_cached(tmp_path):
    corpus = open_corpus(_files(tmp_path, ["tiny\n"]), cache_dir=tmp_path / "cache")
    assert not isinstance(corpus.ids, np.memmap) and not (tmp_path / "cache").exists()


def test_the_cache_is_memory_mapped_and_reused(tmp_path, monkeypatch, cache_small):
    files = _files(tmp_path, ["some text to cache\n" * 100])
    cache = tmp_path / "cache"
    first = open_corpus(files, cache_dir=cache)
    assert isinstance(first.ids, np.memmap)
    entries = [p for p in cache.iterdir() if p.name != "index"]
    assert len(entries) == 1 and (entries[0] / "ids.bin").stat().st_size == len(first.ids)

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again")
    monkeypatch.setattr(corpus_cache, "_write_ids", no_encoding)
    monkeypatch.setattr(corpus_cache, "survey_files", no_encoding)
    again = open_corpus(files, cache_dir=cache)  # found by the files' stats: not even read
    assert isinstance(again.ids, np.memmap) and np.array_equal(again.ids, first.ids)
    assert again.sha256 == first.sha256 and again.vocab == first.vocab
    monkeypatch.undo()
    monkeypatch.setattr(corpus_cache, "CACHE_MIN_BYTES", 0)

    files[0].path.touch()  # same content, new mtime: hashed again, found by checksum, not re-encoded
    monkeypatch.setattr(corpus_cache, "_write_ids", no_encoding)
    assert open_corpus(files, cache_dir=cache).sha256 == first.sha256
    monkeypatch.undo()
    monkeypatch.setattr(corpus_cache, "CACHE_MIN_BYTES", 0)

    files[0].path.write_text("different text now\n" * 100)  # new content: a new entry
    changed = open_corpus(files, cache_dir=cache)
    assert changed.sha256 != first.sha256 and changed.text().startswith("different")


def test_a_damaged_cache_entry_is_rebuilt(tmp_path, cache_small):
    files = _files(tmp_path, ["cache me\n" * 50])
    cache = tmp_path / "cache"
    first = open_corpus(files, cache_dir=cache)
    entry = next(p for p in cache.iterdir() if p.name != "index")
    (entry / "meta.json").write_text("{not json")
    assert open_corpus(files, cache_dir=cache).text() == first.text()


def test_strict_refuses_a_cached_encoding_that_skipped_a_file(tmp_path, cache_small):
    files = _files(tmp_path, ["good text\n" * 50, b"bad \xff\n", "more text\n" * 50], named=False)
    cache = tmp_path / "cache"
    lenient = open_corpus(files, cache_dir=cache)
    assert isinstance(lenient.ids, np.memmap) and len(lenient.info["skipped"]) == 1  # cached, one file skipped
    with pytest.raises(CorpusError, match="f1.txt is not UTF-8 text: byte 0xff at offset 4"):
        open_corpus(files, cache_dir=cache, strict=True)
    assert open_corpus(files, cache_dir=cache).info["skipped"] == lenient.info["skipped"]  # still served


def test_files_sharing_a_cached_encoding_keep_their_own_paths(tmp_path, cache_small):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    for path in (first, second):
        path.write_text("the same bytes\n" * 50)
    cache = tmp_path / "cache"
    for _ in range(2):  # encoded, then found through the index
        for path in (first, second):
            corpus = open_corpus([SourceFile(path, named=True)], cache_dir=cache)
            assert [f["path"] for f in corpus.info["files"]] == [str(path.resolve())]
    assert len([p for p in cache.iterdir() if p.name != "index"]) == 1  # one encoding, shared


def test_encoding_with_a_given_vocabulary_counts_or_refuses_unknowns(tmp_path):
    files = _files(tmp_path, ["abcxyz"])
    vocab = Vocab.from_text("abc")
    with pytest.raises(VocabularyError, match="3 character"):
        encode_files(files, vocab)
    ids, skipped = encode_files(files, vocab, skip_unknown=True)
    assert ids.tolist() == [0, 1, 2] and skipped == 3


def test_standard_splits_override_val_frac(tmp_path):
    corpus = open_corpus(_files(tmp_path, ["x" * 100]), standard_splits=(90, 95))
    parts = corpus.splits(val_frac=0.5)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [90, 5, 5]


def test_characters_beyond_the_basic_plane_are_counted_once(tmp_path):
    files = _files(tmp_path, ["ab😀c€"])
    ids, skipped = encode_files(files, Vocab.from_text("abc€"), skip_unknown=True)
    assert ids.tolist() == [0, 1, 2, 3] and skipped == 1
    with pytest.raises(VocabularyError, match="'😀'"):
        encode_files(files, Vocab.from_text("abc€"))
