"""Id sequences -> the padded tensors the seq2seq model reads: sources, decoder inputs, targets.

A target y becomes the decoder input [start, y] and the expected output
[y, end]: the model reads the previous character and is scored on the next,
the end symbol included (it learns where to stop).
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence


def pad_batch(sequences: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D id tensors -> ids (T, B) padded with pad_id, lengths (B,)."""
    lengths = torch.tensor([len(s) for s in sequences])
    return pad_sequence(sequences, padding_value=pad_id), lengths  # (T, B)


def teacher_forcing_pair(targets: list[torch.Tensor], start_id: int, end_id: int,
                         pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Target id tensors -> decoder input (T+1, B) = start + target, expected output (T+1, B) = target + end."""
    start, end = torch.tensor([start_id]), torch.tensor([end_id])
    tgt_in, _ = pad_batch([torch.cat((start, t)) for t in targets], pad_id)
    tgt_out, _ = pad_batch([torch.cat((t, end)) for t in targets], pad_id)
    return tgt_in, tgt_out
