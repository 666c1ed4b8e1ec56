"""Deterministic evaluation: cross-entropy, bits per character and perplexity.

Two passes give the same figure to within noise, and both are deterministic:

- exact (streams=1): the text is one stream from its first character to its
  last, the hidden state carried across all of it. Sequential, so slow: on a
  CPU a single stream cannot use more than a matrix-vector product per step.
- batched (the default for long texts): the text is cut into S contiguous
  streams scored side by side, and each stream (but the first, which starts
  at the text's start) first reads the BURN_IN characters before it, unscored,
  so every character is still predicted from at least that much real context.
  A char-RNN's memory fades long before 1,024 characters, so this matches the
  exact pass closely (tests/test_evaluate.py and bench/eval_throughput.py
  measure the difference) at several times the speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charlm.nats import PerCharacter
from charlm.runs import Checkpoint
from charlm.tasks.lm.data import iter_windows, lay_out_eval_streams
from charlm.text.cache import reopen_recorded
from charlm.text.encoding import encode_files
from charlm.errors import CorpusError
from charlm.tasks.lm.model import CharRNN
from charlm.engine.runtime import precision_name, resolve_precision
from charlm.text.sources import SourceFile

# Long chunks amortise per-call overhead; the hidden state crosses chunk
# boundaries, so the chunk length does not change the result.
EVAL_CHUNK_LEN = 4096
BATCHED_CHUNK_LEN = 512
MAX_STREAMS = 64
BURN_IN = 1024


def choose_streams(n_chars: int, max_streams: int = MAX_STREAMS, burn_in: int = BURN_IN) -> int:
    """As many streams as keep each one at least 4x the burn-in (so burn-in costs <= 25%)."""
    return max(1, min(max_streams, (n_chars - 1) // (4 * burn_in)))


@dataclass(frozen=True)
class EvalStats(PerCharacter):
    characters: int  # characters scored (every one but the first)
    nats_per_char: float
    skipped: int = 0  # characters dropped from the text as unknown
    streams: int = 1  # 1: the exact single pass; more: the batched pass with burn-in
    unit: str = "char"  # "byte" for a byte-level model: the figures are then per byte
    precision: str = "fp32"  # autocast of the pass; bf16 agrees with fp32 to about 1e-4 nats


def evaluate_ids(model: CharRNN, ids, device: torch.device | None = None, streams: int | None = None,
                 skipped: int = 0, unit: str = "char", amp_dtype: torch.dtype | None = None) -> EvalStats:
    """Mean cross-entropy (nats) of predicting ids[1:] from the ids before each.

    streams: 1 for the exact single pass; None picks a batched pass for long texts.
    amp_dtype: autocast dtype of the model's products (None: fp32); the loss is summed in fp32/fp64.
    """
    streams = choose_streams(len(ids)) if streams is None else streams
    total = score_ids(model, ids, device, streams, amp_dtype=amp_dtype)
    return EvalStats(characters=len(ids) - 1, nats_per_char=float(total) / (len(ids) - 1), skipped=skipped,
                     streams=streams, unit=unit, precision=precision_name(amp_dtype))


@torch.inference_mode()
def score_ids(model: CharRNN, ids, device: torch.device | None = None, streams: int | None = None,
              shard: tuple[int, int] = (0, 1), amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Summed cross-entropy (nats, fp64) of ids[1:], or of one shard's part of it.

    shard (rank, world size): the batched pass's streams are dealt out in
    contiguous blocks, so the shards' sums add up to the whole text's (the
    exact pass is not split: rank 0 does it all).
    """
    if len(ids) < 2:
        raise ValueError("evaluation needs at least two characters")
    device = device or next(model.parameters()).device
    streams = choose_streams(len(ids)) if streams is None else streams
    rank, world_size = shard
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return _score(model, ids, device, streams, rank, world_size)
    finally:
        model.train(was_training)


def _score(model: CharRNN, ids, device: torch.device, streams: int, rank: int, world_size: int) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64, device=device)
    if streams == 1:
        if rank > 0:
            return total
        hidden = None
        for x, y in iter_windows(ids, EVAL_CHUNK_LEN):
            logits, hidden = model(x.to(device), hidden)  # (T, 1, V)
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten(), reduction="sum")
        return total
    layout = lay_out_eval_streams(ids, streams, BURN_IN)
    columns = np.array_split(np.arange(streams), world_size)[rank]  # this shard's streams
    if len(columns) == 0:
        return total
    warm_columns = columns[columns > 0]  # stream 0 starts the text: no burn-in, zero state
    hidden = None
    if len(warm_columns):
        _, hidden = model(layout.burn_in[:, warm_columns - 1].to(device))  # states of those streams
        if columns[0] == 0:
            hidden = _prepend_zero_stream(hidden)
    for start in range(0, layout.span, BATCHED_CHUNK_LEN):
        x, y = layout.rows(start, start + BATCHED_CHUNK_LEN, columns)  # (T, S) each
        logits, hidden = model(x.to(device), hidden)  # (T, S, V)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten(), ignore_index=-1,
                                 reduction="sum")
    return total


def _prepend_zero_stream(hidden):
    """Add stream 0, which starts at the text's start, with the zero state: (L, S-1, H) -> (L, S, H)."""
    if isinstance(hidden, tuple):
        return tuple(_prepend_zero_stream(h) for h in hidden)
    return torch.cat([torch.zeros_like(hidden[:, :1]), hidden], dim=1)


def split_ids(checkpoint: Checkpoint, split: str = "val", cache_dir: Path | None = None):
    """Rebuild the run's validation (or test) split from its recorded corpus, checking it is unchanged."""
    config = checkpoint.config
    corpus = reopen_recorded(checkpoint.record.get("corpus", {}), config.tokenizer, config.normalize_newlines,
                             cache_dir)
    parts = corpus.splits(config.val_frac)
    if split not in parts:
        raise CorpusError(f"the run's corpus {corpus.name} has no {split} split (only enwik8 and text8 have one); "
                          "use --split val, or score a file: charlm eval FILE")
    return parts[split]


def evaluate_checkpoint(checkpoint: Checkpoint, text_path: Path | None = None, skip_unknown: bool = False,
                        device: torch.device | None = None, exact: bool = False, split: str = "val",
                        cache_dir: Path | None = None, precision: str = "auto") -> EvalStats:
    """Score a file's text, or without one the run's validation (or test) split.

    precision: as for training ('auto': bf16 where it is native and fast, see runtime.resolve_precision).
    """
    device = device or torch.device("cpu")
    amp_dtype = resolve_precision(precision, device, checkpoint.model.spec.cell)
    model = checkpoint.model.to(device)
    ids, skipped = checkpoint_text_ids(checkpoint, text_path, skip_unknown, split, cache_dir)
    return evaluate_ids(model, ids, device, streams=1 if exact else None, skipped=skipped,
                        unit=checkpoint.vocab.unit, amp_dtype=amp_dtype)


def checkpoint_text_ids(checkpoint: Checkpoint, text_path: Path | None = None, skip_unknown: bool = False,
                        split: str = "val", cache_dir: Path | None = None):
    """(ids, unknown characters skipped) of a file's text, or of the run's validation (or test) split."""
    if text_path is None:
        return split_ids(checkpoint, split, cache_dir), 0
    if not text_path.exists():
        raise CorpusError(f"text file {text_path} does not exist; check the path")
    if text_path.is_dir():
        raise CorpusError(f"{text_path} is a directory; give the path of a text file")
    ids, skipped = encode_files([SourceFile(text_path, named=True)], checkpoint.vocab,
                                checkpoint.config.normalize_newlines, skip_unknown)
    if len(ids) < 2:
        raise CorpusError(f"{text_path} has fewer than two characters the model knows; give a longer text")
    return ids, skipped
