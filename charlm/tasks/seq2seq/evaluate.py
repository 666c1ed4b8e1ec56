"""Scoring a seq2seq model: teacher-forced nats per target character, and metrics of decoded outputs.

- Teacher-forced: the summed cross-entropy of every target character and end
  symbol, each predicted from the source and the true target before it,
  divided by their number (fp64 sums, batches in a fixed order).
- Decoded: each distinct source is translated once (greedy, or beam search)
  and scored against every target it has in the data (multi-reference):
  exact match, chrF and BLEU, by sacrebleu (metrics.py).

Under torchrun both are shared out: each rank scores its block of the
teacher-forced batches (the sums are added) and decodes its block of the
sources (the outputs are gathered in rank order, so every rank computes the
same corpus-level scores, which do not add up by themselves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from charlm.nats import PerCharacter
from charlm.engine.distributed import SINGLE, World, sum_over_ranks
from charlm.tasks.seq2seq.data import PAD, EncodedPairs, PairVocabs, evaluation_batches, pair_batch
from charlm.tasks.seq2seq.decode import Decoding, Translation, evaluating, translate
from charlm.tasks.seq2seq.metrics import translation_scores


@dataclass(frozen=True)
class PairStats(PerCharacter):
    pairs: int
    sources: int  # distinct sources decoded
    characters: int  # target positions scored: characters plus one end symbol per pair
    nats_per_char: float
    exact_match: float  # fraction of sources whose output equals one of their targets
    chrf: float  # sacrebleu, 0-100
    bleu: float  # sacrebleu, 0-100
    decoding: str
    skipped: int = 0  # pairs left out for characters the model does not know


@torch.inference_mode()
def score_pairs(model, pairs: EncodedPairs, device: torch.device, shard: tuple[int, int] = (0, 1),
                amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Summed teacher-forced cross-entropy (nats, fp64) of the pairs, or of one shard's batches of them."""
    rank, world_size = shard
    total = torch.zeros((), dtype=torch.float64, device=device)
    batches = evaluation_batches(pairs)
    with evaluating(model), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        for index in np.array_split(np.arange(len(batches)), world_size)[rank]:
            src, src_lengths, tgt_in, tgt_out = pair_batch(pairs, batches[index])
            logits = model(src.to(device), src_lengths.to(device), tgt_in.to(device))  # (T, B, V)
            total += F.cross_entropy(logits.flatten(0, 1).float(), tgt_out.to(device).flatten(), ignore_index=PAD,
                                     reduction="sum")
    return total


def decode_references(model, vocabs: PairVocabs, references: list[tuple[str, list[str]]], decoding: Decoding,
                      world: World = SINGLE) -> tuple[dict[str, float], list[Translation]]:
    """(exact_match, chrf, bleu of the sources' outputs against their references; this rank's translations).

    references: (source, [every target it has]) per distinct source.
    """
    mine = np.array_split(np.arange(len(references)), world.size)[world.rank]
    translations = translate(model, vocabs, [references[i][0] for i in mine], decoding)
    outputs = [t.text for t in translations]
    if world.distributed:
        parts: list[list[str] | None] = [None] * world.size
        dist.all_gather_object(parts, outputs)
        outputs = [text for part in parts for text in part]
    return translation_scores(outputs, [targets for _, targets in references]), translations


def evaluate_pairs(model, vocabs: PairVocabs, pairs: EncodedPairs, references: list[tuple[str, list[str]]],
                   decoding: Decoding = Decoding(), device: torch.device | None = None,
                   amp_dtype: torch.dtype | None = None, skipped: int = 0) -> tuple[PairStats, list[Translation]]:
    """Every figure of `charlm eval` on one process, and the translations (in the order of references)."""
    device = device or next(model.parameters()).device
    nats = float(score_pairs(model, pairs, device, amp_dtype=amp_dtype)) / pairs.targets
    scores, translations = decode_references(model, vocabs, references, decoding)
    return PairStats(pairs=len(pairs), sources=len(references), characters=pairs.targets, nats_per_char=nats,
                     decoding=decoding.describe(), skipped=skipped, **scores), translations


def validation_figures(model, vocabs: PairVocabs, pairs: EncodedPairs, references: list[tuple[str, list[str]]],
                       device: torch.device, world: World, amp_dtype: torch.dtype | None) -> dict[str, float]:
    """The figures of a validation pass during training, the same on every rank."""
    total = score_pairs(model, pairs, device, shard=(world.rank, world.size), amp_dtype=amp_dtype)
    nats = float(sum_over_ranks(world, total)) / pairs.targets
    scores, _ = decode_references(model, vocabs, references, Decoding(), world)
    return {"val_loss": nats, "val_bits_per_char": nats / math.log(2), "val_chrf": scores["chrf"],
            "val_exact_match": scores["exact_match"], "val_bleu": scores["bleu"]}
