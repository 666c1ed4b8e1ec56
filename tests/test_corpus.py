import pytest

from charlm.text.corpus import ensure_default_corpus, read_corpus, stdlib_sources
from charlm.errors import CorpusError


def test_bom_is_dropped_and_crlf_kept(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfline one\r\nline two\r\n")
    corpus = read_corpus(path)
    assert corpus.text() == "line one\r\nline two\r\n"
    assert read_corpus(path, normalize_newlines=True).text() == "line one\nline two\n"


def test_non_utf8_reports_the_byte_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait".encode("utf-8") + b" \xff tail")
    with pytest.raises(CorpusError, match="byte 0xff at offset 14"):
        read_corpus(path)


@pytest.mark.parametrize("content, words", [(b"", "is empty"), (b"  \n\t \n", "only whitespace")])
def test_empty_corpora(tmp_path, content, words):
    path = tmp_path / "e.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=words):
        read_corpus(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        read_corpus(tmp_path / "nope.txt")
    with pytest.raises(CorpusError, match="is a directory"):
        read_corpus(tmp_path)


def test_checksum_and_size_are_recorded(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("abc")
    info = read_corpus(path).describe()
    assert info["size_bytes"] == 3 and info["tokens"] == 3
    assert info["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_default_corpus_is_deterministic_python(tmp_path):
    first = ensure_default_corpus(tmp_path / "a")
    second = ensure_default_corpus(tmp_path / "b")
    text = first.read_text(encoding="utf-8")
    assert text == second.read_text(encoding="utf-8")
    assert 1_000_000 < len(text.encode()) <= 4_000_000 + 100_000
    assert "def " in text and "self." in text and "import " in text
    assert stdlib_sources() == sorted(stdlib_sources())
    # reused, not rebuilt, once present
    mtime = first.stat().st_mtime_ns
    assert ensure_default_corpus(tmp_path / "a") == first and first.stat().st_mtime_ns == mtime
