"""Using a trained seq2seq run: its validation pairs rebuilt, a file of pairs scored, sources translated.

The run's own split is rebuilt from its recorded data, read again with its
settings (--reverse, length limits) and checked by SHA-256, so `charlm eval`
without a file needs the data where training read it. A file of pairs is
read in the run's direction and scored whole (the length limits bound
training batches, not what the model can read).
"""

from __future__ import annotations

from pathlib import Path

import torch

from charlm.engine.runtime import resolve_precision
from charlm.errors import CorpusError, VocabularyError
from charlm.runs import Checkpoint
from charlm.tasks.seq2seq.data import EncodedPairs
from charlm.tasks.seq2seq.decode import Decoding, Translation, split_unknown
from charlm.tasks.seq2seq.evaluate import PairStats, evaluate_pairs
from charlm.text.pairs import Pair, group_references, read_pairs, split_by_source


def recorded_validation(checkpoint: Checkpoint) -> list[Pair]:
    """The run's validation pairs, read again from where it trained."""
    data, config = checkpoint.record.get("data", {}), checkpoint.config
    source = data.get("source")
    if not source or not Path(source).exists():
        raise CorpusError(f"the run's pairs ({source or 'unrecorded'}) are not there any more; "
                          "put them back, or score a file: charlm eval FILE")
    pairs = read_pairs(source, reverse=config.reverse, max_source_length=config.max_source_length,
                       max_target_length=config.max_target_length)
    if pairs.sha256 != data.get("sha256"):
        raise CorpusError(f"the pairs at {source} have changed since the run trained on them (their checksum "
                          "differs); score them as a file instead: charlm eval FILE")
    return split_by_source(pairs.pairs, config.val_frac, config.rng_seed)[1]


def known_pairs(checkpoint: Checkpoint, pairs: list[Pair], skip_unknown: bool) -> tuple[list[Pair], int]:
    """The pairs whose characters the model knows on both sides, and how many were left out.

    Without skip_unknown a pair with an unknown character is a VocabularyError that names the characters.
    """
    vocabs = checkpoint.vocab
    source_chars, target_chars = set(vocabs.source.chars), set(vocabs.target.chars)
    kept = [p for p in pairs if set(p.source) <= source_chars and set(p.target) <= target_chars]
    if len(kept) < len(pairs) and not skip_unknown:
        unknown = sorted({c for p in pairs for c in p.source if c not in source_chars}
                         | {c for p in pairs for c in p.target if c not in target_chars})
        raise VocabularyError(f"{len(pairs) - len(kept):,} pair(s) have characters the model never saw: "
                              f"{', '.join(map(repr, unknown[:10]))}" + (" and more" if len(unknown) > 10 else "")
                              + "; leave them out with --skip-unknown")
    return kept, len(pairs) - len(kept)


def evaluate_seq2seq(checkpoint: Checkpoint, path: Path | None = None, decoding: Decoding = Decoding(),
                     skip_unknown: bool = False, device: torch.device | None = None,
                     precision: str = "auto") -> tuple[PairStats, list[Translation]]:
    """Teacher-forced nats/char and decoded metrics on the run's validation pairs or a file's.

    The translations come in the order of the distinct sources (first appearance).
    precision: 'auto' is fp32, as in training (the decoder's single steps are slower in bf16 on a CPU).
    """
    device = device or torch.device("cpu")
    amp_dtype = None if precision == "auto" else resolve_precision(precision, device, checkpoint.config.cell)
    if path is None:
        pairs, skipped = recorded_validation(checkpoint), 0
    else:
        pairs, skipped = known_pairs(checkpoint, read_pairs(path, reverse=checkpoint.config.reverse).pairs,
                                     skip_unknown)
        if not pairs:
            raise CorpusError(f"every pair of {path} has characters the model does not know; nothing to score")
    model = checkpoint.model.to(device)
    encoded = EncodedPairs.encode(pairs, checkpoint.vocab)
    return evaluate_pairs(model, checkpoint.vocab, encoded, group_references(pairs), decoding, device, amp_dtype,
                          skipped)


def readable_sources(checkpoint: Checkpoint, texts: list[str], strict: bool) -> tuple[list[str], list[str]]:
    """(the texts without characters the model never saw, those characters); with strict they are an error."""
    known, unknown = split_unknown(texts, checkpoint.vocab)
    if unknown and strict:
        raise VocabularyError(f"the input has characters the model never saw: {', '.join(map(repr, unknown))}; "
                              "remove them, or leave out --strict to skip them")
    return known, unknown
