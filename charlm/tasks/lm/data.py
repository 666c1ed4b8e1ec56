"""Split encoded text and lay it out in parallel streams for truncated BPTT.

The training text of N ids is cut into `batch_size` contiguous streams, one
per column, and read top to bottom in windows of `seq_len` rows:

    text:  a b c d e f g h i j k l m n o p q r ...      (after `offset` ids)
                                 B = 3 streams
    layout (L rows x B cols):    a g m    <- window 0 (rows 0..T-1)
                                 b h n
                                 c i o    <- window 1 (rows T..2T-1)
                                 d j p
                                 ...

Row t of column b holds text[offset + b*L + t]. Targets are the same layout
shifted by one character along the text, so y[t, b] = x[t+1, b] within a
stream. Because window k+1 of column b continues exactly where window k
ended, the hidden state left by window k is the right starting state for
window k+1 (carried, detached from the graph: truncated BPTT). The layout is
a strided view of the ids (no copy; the corpus may be a memory-mapped file),
and each window is gathered into a small (T, B) int64 tensor as it is used. Each epoch starts at a different `offset` in [0, seq_len),
so the places where gradients are cut move from one epoch to the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from charlm.errors import CorpusError


def check_trainable(n_train: int, n_val: int, batch_size: int, seq_len: int) -> None:
    """Raise a CorpusError unless the split gives at least one full batch and some validation."""
    needed = batch_size * seq_len + 1
    if n_train < needed:
        raise CorpusError(
            f"corpus too short: the training split has {n_train} characters but one batch needs "
            f"{needed} (batch_size {batch_size} x seq_len {seq_len} + 1); "
            "use a longer text or a smaller --batch-size/--seq-len"
        )
    if n_val < 2:
        raise CorpusError(f"validation split has {n_val} character(s); raise --val-frac or use a longer text")


def as_array(ids) -> np.ndarray:
    """ids as a 1-D NumPy array without copying (a memmap stays a memmap)."""
    return ids.numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)


def to_long(block: np.ndarray) -> torch.Tensor:
    """A small block of ids (any integer dtype, any strides) as a contiguous int64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(block, dtype=np.int64))


@dataclass(frozen=True)
class StreamLayout:
    """One epoch's layout over ids[offset:]: B streams of L characters each.

    `streams` is a (B, L + 1) strided view of the ids (rows overlap by one id,
    the last target of a row), so laying out an epoch copies nothing and a
    corpus on disk stays on disk: a window reads B short runs of it.
    """

    streams: np.ndarray  # (B, L + 1) view
    offset: int
    seq_len: int

    @property
    def stream_len(self) -> int:
        return self.streams.shape[1] - 1

    @property
    def num_windows(self) -> int:
        return -(-self.stream_len // self.seq_len)

    def rows(self, streams: slice) -> "StreamLayout":
        """Some of the streams: under torchrun each process reads its own block of the global batch."""
        return StreamLayout(streams=self.streams[streams], offset=self.offset, seq_len=self.seq_len)

    def window(self, index: int, pin_memory: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Window `index`: x, y of shape (T, B) int64; the last one may be shorter.

        pin_memory: page-locked, so a copy to a GPU with non_blocking=True overlaps with its work.
        """
        start = index * self.seq_len
        stop = min(start + self.seq_len, self.stream_len)
        block = to_long(self.streams[:, start:stop + 1].T)  # (T + 1, B)
        if pin_memory:
            block = block.pin_memory()
        return block[:-1], block[1:]


def lay_out_streams(ids, batch_size: int, seq_len: int, offset: int = 0) -> StreamLayout:
    """Lay ids[offset:] out as batch_size streams (see the module docstring)."""
    usable = as_array(ids)[offset:]
    stream_len = (len(usable) - 1) // batch_size
    if stream_len < 1:
        raise CorpusError(f"text of {len(ids)} characters is too short for {batch_size} streams")
    step = usable.strides[0]
    streams = np.lib.stride_tricks.as_strided(usable, shape=(batch_size, stream_len + 1),
                                              strides=(stream_len * step, step), writeable=False)
    return StreamLayout(streams=streams, offset=offset, seq_len=seq_len)


def epoch_offset(epoch: int, seq_len: int, rng_seed: int) -> int:
    """Start offset of an epoch: 0 for the first, then a seeded draw in [0, seq_len).

    Derived from (seed, epoch) alone, so a resumed run lays out the same epoch
    the same way without storing anything.
    """
    if epoch == 0 or seq_len == 1:
        return 0
    generator = torch.Generator().manual_seed(rng_seed * 1_000_003 + epoch)
    return int(torch.randint(1, seq_len, (1,), generator=generator))


def iter_windows(ids, seq_len: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One stream over the whole text in order: (x, y) of shape (T, 1), y = x shifted by one.

    Used for evaluation, where the hidden state is carried across the entire text.
    """
    ids = as_array(ids)
    for start in range(0, len(ids) - 1, seq_len):
        stop = min(start + seq_len, len(ids) - 1)
        block = to_long(ids[start:stop + 1])
        yield block[:-1].unsqueeze(1), block[1:].unsqueeze(1)


@dataclass(frozen=True)
class EvalLayout:
    """The text cut into S equal streams for a batched evaluation pass.

    Column s predicts ids[s*span + 1 ...] from ids[s*span ...]; rows() gives
    inputs/targets (T, S) for a range of rows, with targets past the end of
    the text set to -1 (not scored). burn_in is (W, S-1): the W characters
    before the start of streams 1..S-1, run first (unscored) so each of those
    streams starts with a hidden state that has read real preceding text, not
    zeros. Stream 0 starts at the beginning of the text with a zero state,
    exactly as a single pass would. Rows are gathered as they are needed, so
    a long text on disk is never copied whole.
    """

    ids: np.ndarray
    span: int
    streams: int
    burn_in: torch.Tensor  # (W, S-1)

    def rows(self, start: int, stop: int, columns: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows [start, stop) of the streams in `columns` (default all): inputs and targets (T, S)."""
        stop = min(stop, self.span)
        n_targets = len(self.ids) - 1
        columns = np.arange(self.streams) if columns is None else columns
        where = np.arange(start, stop)[:, None] + columns[None, :] * self.span  # (T, S)
        scored = where < n_targets
        inputs = np.where(scored, self.ids[np.minimum(where, n_targets - 1)], 0)
        targets = np.where(scored, self.ids[np.minimum(where + 1, n_targets)].astype(np.int64), -1)
        return to_long(inputs), to_long(targets)


def lay_out_eval_streams(ids, streams: int, burn_in: int) -> EvalLayout:
    """Split ids into `streams` contiguous streams; needs span >= burn_in (checked)."""
    ids = as_array(ids)
    n_targets = len(ids) - 1
    span = -(-n_targets // streams)
    if streams > 1 and span < burn_in:
        raise ValueError(f"streams of {span} characters are shorter than the burn-in of {burn_in}")
    starts = np.arange(1, streams) * span  # (S-1,)
    burn = to_long(ids[starts[None, :] - burn_in + np.arange(burn_in)[:, None]])  # (W, S-1)
    return EvalLayout(ids=ids, span=span, streams=streams, burn_in=burn)
