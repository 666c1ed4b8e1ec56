"""Characters <-> integer ids.

The vocabulary is the sorted set of Unicode characters of the training text.
It is stored with every checkpoint, so sampling and evaluation need nothing
but the checkpoint. Encoding is vectorised: the text becomes an array of code
points and `searchsorted` finds each one's id, with no per-character Python.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Vocab:
    chars: tuple[str, ...]

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
        table = self._sorted_code_points()
        ids = torch.searchsorted(table, points).clamp_(max=max(len(table) - 1, 0))
        known = table[ids] == points if len(table) else torch.zeros_like(points, dtype=torch.bool)
        unknown = int((~known).sum())
        if unknown and not skip_unknown:
            missing = sorted({chr(p) for p in points[~known].unique().tolist()})
            raise VocabularyError(
                f"{len(missing)} character(s) not in the model's vocabulary: {_describe(missing)}"
            )
        return ids[known].long(), unknown

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
    def from_json(cls, chars: list[str]) -> "Vocab":
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError("vocabulary must be a list of single characters")
        if list(chars) != sorted(set(chars)):
            raise ValueError("vocabulary must be sorted and free of duplicates")
        return cls(tuple(chars))
