"""Reading padded id sequences into recurrent states without letting the padding in.

`SequenceEncoder` is Embedding -> nn.RNN | nn.LSTM | nn.GRU (optionally
bidirectional) run over `pack_padded_sequence`, so each sequence's recurrence
stops at its own length: the backward direction starts at the last real
character, not at the padding, and the final state of every sequence is the
state after its last real character. Shared by classification (final states)
and seq2seq (per-position outputs for attention, final states for the bridge).

Tensors are sequence-first, (T, B), like the rest of charlm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

RNN_CLASSES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass
class Encoded:
    """What the encoder read: per-position outputs, where they are real, and the final states."""

    outputs: torch.Tensor | None  # (T, B, D*H), zeros at padding; None when not asked for
    mask: torch.Tensor  # (T, B) bool, True at real positions
    final: Hidden  # (L*D, B, H) h, or (h, c) for an LSTM; layer l, direction d at index l*D + d


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """lengths (B,) -> (max_len, B) bool, True where position t < length."""
    positions = torch.arange(max_len, device=lengths.device)  # (T,)
    return positions[:, None] < lengths[None, :]  # (T, B)


class SequenceEncoder(nn.Module):
    def __init__(self, vocab_size: int, embedding_size: int, cell: str, hidden_size: int,
                 num_layers: int = 1, bidirectional: bool = True, dropout: float = 0.0):
        super().__init__()
        if cell not in RNN_CLASSES:
            raise ValueError(f"cell must be one of {sorted(RNN_CLASSES)}, got {cell!r}")
        self.cell, self.hidden_size, self.num_layers = cell, hidden_size, num_layers
        self.num_directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        # nn.RNN-family dropout acts between layers only, so one layer gets none there.
        self.rnn = RNN_CLASSES[cell](embedding_size, hidden_size, num_layers, bidirectional=bidirectional,
                                     dropout=dropout if num_layers > 1 else 0.0)

    @property
    def output_size(self) -> int:
        return self.num_directions * self.hidden_size

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, keep_outputs: bool = True) -> Encoded:
        """x: (T, B) ids, lengths: (B,) each >= 1 -> Encoded.

        What x holds beyond a sequence's length is never read. `keep_outputs=False`
        skips unpacking the per-position outputs (a classifier needs only the
        final states).
        """
        if lengths.min() < 1:
            raise ValueError("every sequence needs at least one element (pack_padded_sequence refuses length 0)")
        emb = self.embedding(x)  # (T, B, E)
        # enforce_sorted=False: PyTorch sorts by length and puts the final states
        # back in the caller's order, so batches need not be pre-sorted.
        packed = pack_padded_sequence(emb, lengths.cpu(), enforce_sorted=False)
        packed_out, final = self.rnn(packed)  # final: (L*D, B, H), after each sequence's last element
        mask = length_mask(lengths.to(x.device), x.shape[0])  # (T, B)
        outputs = None
        if keep_outputs:
            # total_length keeps T equal to the input's, so outputs line up with x and mask
            outputs, _ = pad_packed_sequence(packed_out, total_length=x.shape[0])  # (T, B, D*H)
        return Encoded(outputs, mask, final)

    def top_layer_final(self, final: Hidden) -> torch.Tensor:
        """The top layer's final h of each direction, concatenated: (B, D*H) (for an LSTM, h and not c)."""
        h = final[0] if isinstance(final, tuple) else final  # (L*D, B, H)
        top = h[-self.num_directions:]  # (D, B, H): forward, then backward
        return torch.cat(tuple(top), dim=-1)  # (B, D*H)
