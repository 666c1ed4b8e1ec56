import pytest
import torch

from charlm.errors import VocabularyError
from charlm.text.vocab import Vocab


def test_vocabulary_is_the_sorted_character_set():
    assert Vocab.from_text("banana\n").chars == ("\n", "a", "b", "n")


def test_encode_decode_round_trips_unicode():
    text = "héllo wörld — ☃ 日本語 \r\n\t😀"
    vocab = Vocab.from_text(text)
    ids, skipped = vocab.encode(text)
    assert ids.dtype == torch.int64 and skipped == 0
    assert vocab.decode(ids) == text
    assert ids.tolist() == [vocab.chars.index(c) for c in text]


def test_unknown_characters_error_or_are_skipped():
    vocab = Vocab.from_text("abc")
    with pytest.raises(VocabularyError, match="'x'"):
        vocab.encode("abxcz")
    ids, skipped = vocab.encode("abxcz", skip_unknown=True)
    assert vocab.decode(ids) == "abc" and skipped == 2


def test_json_round_trip_and_validation():
    vocab = Vocab.from_text("zyx\n")
    assert Vocab.from_json(vocab.to_json()) == vocab
    with pytest.raises(ValueError):
        Vocab.from_json(["b", "a"])
    with pytest.raises(ValueError):
        Vocab.from_json(["ab"])


def test_byte_vocabulary_round_trips_and_streams_utf8_safely():
    from charlm.text.vocab import ByteVocab

    vocab = ByteVocab()
    ids, skipped = vocab.encode("né😀")
    assert ids.tolist() == list("né😀".encode()) and skipped == 0 and vocab.decode(ids) == "né😀"
    assert Vocab.from_json(vocab.to_json()) == vocab
    decoder = vocab.stream_decoder()
    pieces = [decoder.feed(b) for b in "é😀".encode() + b"\xff" + "é".encode()[:1]]
    # incomplete sequences are held back (""), an invalid byte shows as U+FFFD, a cut-off tail never shows
    assert pieces == ["", "é", "", "", "", "😀", "\ufffd", ""]
