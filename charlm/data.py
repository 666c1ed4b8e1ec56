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
built once per epoch as a contiguous (L, B) tensor, so every window is a view
of it, not a copy. Each epoch starts at a different `offset` in [0, seq_len),
so the places where gradients are cut move from one epoch to the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from charlm.errors import CorpusError


def split_train_val(ids: torch.Tensor, val_frac: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous split: the last val_frac of the text is validation (nanoGPT's 90/10)."""
    n_val = int(round(len(ids) * val_frac))
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]


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


@dataclass(frozen=True)
class StreamLayout:
    """One epoch's layout: inputs and targets as (L, B) tensors, and the offset used."""

    inputs: torch.Tensor  # (L, B) int64
    targets: torch.Tensor  # (L, B) int64
    offset: int
    seq_len: int

    @property
    def num_windows(self) -> int:
        return -(-self.inputs.shape[0] // self.seq_len)

    def window(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window `index` as views: x, y of shape (T, B); the last one may be shorter."""
        start = index * self.seq_len
        stop = start + self.seq_len
        return self.inputs[start:stop], self.targets[start:stop]


def lay_out_streams(ids: torch.Tensor, batch_size: int, seq_len: int, offset: int = 0) -> StreamLayout:
    """Lay ids[offset:] out as batch_size streams (see the module docstring)."""
    usable = ids[offset:]
    stream_len = (len(usable) - 1) // batch_size
    if stream_len < 1:
        raise CorpusError(f"text of {len(ids)} characters is too short for {batch_size} streams")
    span = batch_size * stream_len
    inputs = usable[:span].view(batch_size, stream_len).t().contiguous()  # (L, B)
    targets = usable[1:span + 1].view(batch_size, stream_len).t().contiguous()  # (L, B)
    return StreamLayout(inputs=inputs, targets=targets, offset=offset, seq_len=seq_len)


def epoch_offset(epoch: int, seq_len: int, rng_seed: int) -> int:
    """Start offset of an epoch: 0 for the first, then a seeded draw in [0, seq_len).

    Derived from (seed, epoch) alone, so a resumed run lays out the same epoch
    the same way without storing anything.
    """
    if epoch == 0 or seq_len == 1:
        return 0
    generator = torch.Generator().manual_seed(rng_seed * 1_000_003 + epoch)
    return int(torch.randint(1, seq_len, (1,), generator=generator))


def iter_windows(ids: torch.Tensor, seq_len: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One stream over the whole text in order: (x, y) of shape (T, 1), y = x shifted by one.

    Used for evaluation, where the hidden state is carried across the entire text.
    """
    for start in range(0, len(ids) - 1, seq_len):
        stop = min(start + seq_len, len(ids) - 1)
        yield ids[start:stop].unsqueeze(1), ids[start + 1: stop + 1].unsqueeze(1)


@dataclass(frozen=True)
class EvalLayout:
    """The text cut into S equal streams for a batched evaluation pass.

    inputs/targets are (span, S): column s predicts ids[s*span + 1 ...] from
    ids[s*span ...]; targets past the end of the text are -1 (not scored).
    burn_in is (W, S-1): the W characters before the start of streams 1..S-1,
    run first (unscored) so each of those streams starts with a hidden state
    that has read real preceding text, not zeros. Stream 0 starts at the
    beginning of the text with a zero state, exactly as a single pass would.
    """

    inputs: torch.Tensor  # (span, S)
    targets: torch.Tensor  # (span, S), -1 where nothing is scored
    burn_in: torch.Tensor  # (W, S-1)


def lay_out_eval_streams(ids: torch.Tensor, streams: int, burn_in: int) -> EvalLayout:
    """Split ids into `streams` contiguous streams; needs span >= burn_in (checked)."""
    n_targets = len(ids) - 1
    span = -(-n_targets // streams)
    if streams > 1 and span < burn_in:
        raise ValueError(f"streams of {span} characters are shorter than the burn-in of {burn_in}")
    pad = streams * span - n_targets
    inputs = torch.cat([ids[:-1], ids.new_zeros(pad)]).view(streams, span).t().contiguous()
    targets = torch.cat([ids[1:], ids.new_full((pad,), -1)]).view(streams, span).t().contiguous()
    starts = torch.arange(1, streams) * span  # (S-1,)
    burn = ids[starts.unsqueeze(0) - burn_in + torch.arange(burn_in).unsqueeze(1)]  # (W, S-1)
    return EvalLayout(inputs=inputs, targets=targets, burn_in=burn)
