"""Scores of decoded outputs against one or more references: exact match, chrF and BLEU.

chrF and BLEU come from sacrebleu, the reference implementation everyone
quotes (BLEU's tokenisation, smoothing and brevity penalty are easy to get
subtly wrong by hand). Scores are corpus-level, on sacrebleu's 0-100 scale;
exact match is a fraction in [0, 1].

Multi-reference: each hypothesis has a list of references (every translation
of its source). sacrebleu wants reference *streams* — stream j holds the j-th
reference of every hypothesis — so the lists are transposed, and a source
with fewer references than the most has its missing entries padded with None.
sacrebleu drops None entries per segment (`Metric._cache_references` filters
`x is not None`). Its README says '' works too, but an empty string stays in
as a real, empty reference: BLEU's closest-reference length can then pick 0
and waive the brevity penalty for a short output. So None, never ''.
"""

from __future__ import annotations

from sacrebleu.metrics import BLEU, CHRF


def exact_match(hypotheses: list[str], references: list[list[str]]) -> float:
    """The fraction of hypotheses equal to at least one of their references."""
    _check(hypotheses, references)
    return sum(hypothesis in refs for hypothesis, refs in zip(hypotheses, references)) / len(hypotheses)


def reference_streams(references: list[list[str]]) -> list[list[str | None]]:
    """Per-hypothesis reference lists -> sacrebleu's streams, padded with None."""
    width = max(len(refs) for refs in references)
    return [[refs[j] if j < len(refs) else None for refs in references] for j in range(width)]


def chrf(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus chrF (character 6-grams, beta 2: sacrebleu's defaults)."""
    _check(hypotheses, references)
    return CHRF().corpus_score(hypotheses, reference_streams(references)).score


def bleu(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU (sacrebleu's defaults: 13a tokenisation, exponential smoothing)."""
    _check(hypotheses, references)
    return BLEU().corpus_score(hypotheses, reference_streams(references)).score


def translation_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    return {"exact_match": exact_match(hypotheses, references), "chrf": chrf(hypotheses, references),
            "bleu": bleu(hypotheses, references)}


def _check(hypotheses: list[str], references: list[list[str]]) -> None:
    if not hypotheses:
        raise ValueError("no hypotheses to score")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if any(not refs for refs in references):
        raise ValueError("every hypothesis needs at least one reference")
