"""Text <-> integer ids: the two tokenizers.

- chars (the default): the vocabulary is the sorted set of Unicode characters
  of the training text. Encoding is vectorised: the text becomes an array of
  code points and `searchsorted` finds each one's id, no per-character Python.
- bytes: the 256 byte values of the UTF-8 encoding. Any file trains without
  vocabulary surprises, and enwik8 is scored per byte, the standard way.
- records (RecordVocab) and pairs (PairVocab): characters after reserved
  symbols (end of record; padding, start and end of a sequence).

The vocabulary is stored with every checkpoint (a list of characters, or
{"tokenizer": "bytes"}), so sampling and evaluation need nothing but the
checkpoint. Generated ids become text through a StreamDecoder, which for
bytes holds back an incomplete UTF-8 sequence until it is complete (and
shows it as U+FFFD if the ids end first, on `flush`).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import torch

from charlm.errors import VocabularyError


def _code_points(text: str) -> torch.Tensor:
    """The text as an int32 tensor of Unicode code points, one per character."""
    raw = bytearray(text.encode("utf-32-le", errors="surrogatepass"))
    if not raw:
        return torch.empty(0, dtype=torch.int32)
    return torch.frombuffer(raw, dtype=torch.int32)


def _describe(chars: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(c) for c in chars[:limit])
    return shown + (f" and {len(chars) - limit} more" if len(chars) > limit else "")


class StreamDecoder:
    """Turns ids into text one at a time, as they are generated."""

    def __init__(self, chars: tuple[str, ...] | None):
        self.chars = chars
        # bytes: an incomplete sequence is held back until it completes;
        # an invalid one comes out as U+FFFD.
        self._utf8 = None if chars else codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        if self._utf8 is None:
            return self.chars[token]
        return self._utf8.decode(bytes((token,)))

    def flush(self) -> str:
        """What is still held back once the ids end: a cut-off UTF-8 sequence becomes U+FFFD."""
        if self._utf8 is None:
            return ""
        return self._utf8.decode(b"", final=True)


@dataclass(frozen=True)
class Vocab:
    chars: tuple[str, ...]
    tokenizer = "chars"
    unit = "char"

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self.chars)

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls(tuple(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def __len__(self) -> int:
        return len(self.chars)

    def _sorted_code_points(self) -> torch.Tensor:
        return torch.tensor([ord(c) for c in self.chars], dtype=torch.int32)

    def encode(self, text: str, skip_unknown: bool = False) -> tuple[torch.Tensor, int]:
        """Text -> (ids as int64 tensor, number of unknown characters skipped).

        Unknown characters raise VocabularyError unless skip_unknown is set,
        in which case they are dropped and counted.
        """
        points = _code_points(text)
        ids, known = self.lookup(text, points)
        unknown = int((~known).sum())
        if unknown and not skip_unknown:
            missing = sorted({chr(p) for p in points[~known].unique().tolist()})
            raise VocabularyError(
                f"{len(missing)} character(s) not in the model's vocabulary: {_describe(missing)}; "
                "use only characters of its training text"
            )
        return ids[known].long(), unknown

    def lookup(self, text: str, points: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every character's id and whether the vocabulary has it: (ids (N,), known (N,) bool); ids of unknown
        characters are meaningless."""
        points = _code_points(text) if points is None else points
        table = self._sorted_code_points()
        ids = torch.searchsorted(table, points).clamp_(max=max(len(table) - 1, 0))
        known = table[ids] == points if len(table) else torch.zeros_like(points, dtype=torch.bool)
        return ids, known

    def unknown_chars(self, text: str) -> list[str]:
        have = set(self.chars)
        return sorted({c for c in set(text) if c not in have})

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)

    def to_json(self) -> list[str]:
        return list(self.chars)

    @classmethod
    def from_json(cls, chars) -> "Vocab | ByteVocab | RecordVocab | PairVocab":
        """A checkpoint's vocabulary: a list of characters, {"tokenizer": "bytes"}, records' {"chars", "end"},
        or one side of pairs' {"chars", "reserved"}."""
        if chars == ByteVocab().to_json():
            return ByteVocab()
        if isinstance(chars, dict) and "reserved" in chars:
            return PairVocab.from_json(chars)
        if isinstance(chars, dict) and "end" in chars:
            return RecordVocab(Vocab.from_json(chars.get("chars")).chars)
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError("vocabulary must be a list of single characters or {\"tokenizer\": \"bytes\"}")
        if list(chars) != sorted(set(chars)):
            raise ValueError("vocabulary must be sorted and free of duplicates")
        return cls(tuple(chars))


@dataclass(frozen=True)
class ByteVocab:
    """The 256 byte values of UTF-8 text: every file fits, nothing is unknown."""

    tokenizer = "bytes"
    unit = "byte"

    @property
    def size(self) -> int:
        return 256

    def __len__(self) -> int:
        return 256

    @property
    def chars(self) -> tuple[str, ...]:
        # What a "character" of this vocabulary is when shown to a person.
        return tuple(chr(b) for b in range(256))

    def encode(self, text: str, skip_unknown: bool = False) -> tuple[torch.Tensor, int]:
        raw = bytearray(text.encode("utf-8", errors="surrogatepass"))
        if not raw:
            return torch.empty(0, dtype=torch.long), 0
        return torch.frombuffer(raw, dtype=torch.uint8).long(), 0

    def unknown_chars(self, text: str) -> list[str]:
        return []

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(None)

    def to_json(self) -> dict:
        return {"tokenizer": "bytes"}


@dataclass(frozen=True)
class _ReservedVocab:
    """Characters after reserved symbols: character i of `chars` is id i + len(RESERVED), so every character
    a text can hold keeps its meaning. Subclasses name the symbols and END."""

    chars: tuple[str, ...]
    RESERVED = ()  # the subclass's reserved symbols (class constants, not fields)
    END = 0
    tokenizer = "chars"
    unit = "char"

    @classmethod
    def from_texts(cls, texts):
        return cls(tuple(sorted(set().union(*map(set, texts)))))

    @property
    def size(self) -> int:
        return len(self.chars) + len(self.RESERVED)

    def __len__(self) -> int:
        return self.size

    def encode(self, text: str, skip_unknown: bool = False) -> tuple[torch.Tensor, int]:
        """Characters -> ids (no reserved symbols), as Vocab.encode does."""
        ids, skipped = Vocab(self.chars).encode(text, skip_unknown)
        return ids + len(self.RESERVED), skipped

    def unknown_chars(self, text: str) -> list[str]:
        return Vocab(self.chars).unknown_chars(text)

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Ids -> text, up to the first end symbol; other reserved symbols are not text and are left out."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if i == self.END:
                break
            if i >= len(self.RESERVED):
                out.append(self.chars[i - len(self.RESERVED)])
        return "".join(out)


@dataclass(frozen=True)
class RecordVocab(_ReservedVocab):
    """Characters of records plus one reserved symbol that ends a record (and, as in makemore, starts one).

    Id 0 is the end symbol, never a character of the text, so every character
    a record can hold (a '.' included) keeps its meaning; character i of
    `chars` is id i + 1.
    """

    END_NAME = "<end>"
    RESERVED = (END_NAME,)

    def to_json(self) -> dict:
        return {"chars": list(self.chars), "end": self.END_NAME}


@dataclass(frozen=True)
class PairVocab(_ReservedVocab):
    """One side of source/target pairs: three reserved symbols, then the characters.

    Id 0 pads a batch (never scored, never attended to), 1 starts the target
    the decoder reads, 2 ends the target it writes; character i of `chars` is
    id i + 3, so any character a text holds keeps its meaning. Sources and
    targets each have their own PairVocab (their alphabets differ: English and
    French, graphemes and phonemes); a source never uses start and end, but the
    shared layout keeps padding at 0 on both sides.
    """

    PAD, START, END = 0, 1, 2
    RESERVED = ("<pad>", "<start>", "<end>")

    def to_json(self) -> dict:
        return {"chars": list(self.chars), "reserved": list(self.RESERVED)}

    @classmethod
    def from_json(cls, data: dict) -> "PairVocab":
        if data.get("reserved") != list(cls.RESERVED):
            raise ValueError(f"a pair vocabulary reserves {list(cls.RESERVED)}, got {data.get('reserved')!r}")
        return cls(Vocab.from_json(data.get("chars")).chars)


def smallest_dtype_bits(vocab_size: int) -> int:
    """Bits of the smallest unsigned integer that holds every id of a vocabulary."""
    return 8 if vocab_size <= 256 else 16 if vocab_size <= 65536 else 32
