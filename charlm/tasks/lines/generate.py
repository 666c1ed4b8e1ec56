"""Generating records side by side: one batched step per character for all of them.

N records start together from their start states (their classes', for a
conditional model), read the end symbol and the shared prefix in one call,
then advance one character per step, every record in the same step; a
record that has produced the end symbol (or reached max_length) is done,
and the loop stops once every record is.
"""

from __future__ import annotations

import torch

from charlm.decode.sampling import SamplingOptions, pick_next
from charlm.errors import CharlmError, VocabularyError
from charlm.tasks.lines.model import RecordRNN
from charlm.text.vocab import RecordVocab


@torch.inference_mode()
def generate_records(model: RecordRNN, vocab: RecordVocab, count: int, options: SamplingOptions,
                     generator: torch.Generator, max_length: int, prefix: str = "",
                     classes: torch.Tensor | None = None) -> list[str]:
    """`count` records, each beginning with `prefix`; classes (count,) ids for a conditional model."""
    if count < 1:
        raise CharlmError(f"--num-samples must be at least 1, got {count}")
    unknown = vocab.unknown_chars(prefix)
    if unknown:
        raise VocabularyError(f"--seed has characters the model never saw: {', '.join(map(repr, unknown))}; "
                              "use only characters of its training records")
    if len(prefix) >= max_length:
        raise CharlmError(f"--seed is {len(prefix)} characters, not shorter than --max-length {max_length}")
    device = next(model.parameters()).device
    model.eval()
    prime, _ = vocab.encode(prefix)
    prime = torch.cat([torch.tensor([vocab.END]), prime]).to(device)  # (P+1,)
    logits, hidden = model(prime.unsqueeze(1).expand(-1, count), model.start_state(
        None if classes is None else classes.to(device), count))  # (P+1, N, V)
    last = logits[-1]  # (N, V)
    layers = model.split_hidden(hidden, count)
    step = model.stepper()
    steps = max_length - len(prefix)
    out = torch.full((count, steps), vocab.END, dtype=torch.long)  # (N, steps): END after a record's end
    rows = torch.arange(count)  # the record each row of the batch is writing
    for position in range(steps):
        next_id = pick_next(last, options, generator)  # (A,) for the A records still writing
        out[rows, position] = next_id.cpu()
        ended = next_id == vocab.END
        if bool(ended.any()):
            # A finished record leaves the batch: names end at different lengths, and stepping finished
            # rows until the longest ends cost 64 records about twice the steps of their characters.
            going = (~ended).nonzero().squeeze(1)  # (A',)
            if going.numel() == 0:
                break
            rows, next_id, layers = rows[going.cpu()], next_id[going], _select(layers, going)
        if position + 1 < steps:  # the last position's pick needs no step after it
            last, layers = step(next_id, layers)  # (A, V)
    return [prefix + vocab.decode(row) for row in out.tolist()]


def _select(layers: list, keep: torch.Tensor) -> list:
    """Per-layer states (h or (h, c), each (A, H)) of the rows in keep."""
    return [tuple(part.index_select(0, keep) for part in layer) if isinstance(layer, tuple)
            else layer.index_select(0, keep) for layer in layers]
