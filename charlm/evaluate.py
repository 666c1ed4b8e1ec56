"""Deterministic evaluation: cross-entropy, bits per character and perplexity.

The text is read as one stream from its first character to its last, with the
hidden state carried across the whole of it, so every character is predicted
from everything before it, exactly as when sampling. The result does not
depend on a batch size or on where windows happen to start.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from charlm.checkpoint import Checkpoint
from charlm.corpus import read_corpus
from charlm.data import iter_windows, split_train_val
from charlm.errors import CorpusError, VocabularyError
from charlm.model import CharRNN

# Long chunks amortise per-call overhead; the hidden state crosses chunk
# boundaries, so the chunk length does not change the result.
EVAL_CHUNK_LEN = 4096


@dataclass(frozen=True)
class EvalStats:
    characters: int  # characters scored (every one but the first)
    nats_per_char: float
    skipped: int = 0  # characters dropped from the text as unknown

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_char)

    def to_dict(self) -> dict:
        return dict(asdict(self), bits_per_char=self.bits_per_char, perplexity=self.perplexity)


@torch.inference_mode()
def evaluate_ids(model: CharRNN, ids: torch.Tensor, device: torch.device | None = None,
                 chunk_len: int = EVAL_CHUNK_LEN, skipped: int = 0) -> EvalStats:
    """Mean cross-entropy (nats) of predicting ids[1:] from the ids before each."""
    if len(ids) < 2:
        raise ValueError("evaluation needs at least two characters")
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    hidden = None
    for x, y in iter_windows(ids, chunk_len):
        logits, hidden = model(x.to(device), hidden)  # (T, 1, V)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten(), reduction="sum")
    model.train(was_training)
    return EvalStats(characters=len(ids) - 1, nats_per_char=float(total) / (len(ids) - 1), skipped=skipped)


def validation_ids(checkpoint: Checkpoint) -> torch.Tensor:
    """Rebuild the run's validation split from its recorded corpus, checking it is unchanged."""
    corpus_info = checkpoint.record.get("corpus", {})
    path = Path(corpus_info.get("path", ""))
    if not path.is_file():
        raise CorpusError(f"the run's corpus {path} is gone; pass the text to score: charlm eval FILE")
    corpus = read_corpus(path, checkpoint.config.normalize_newlines)
    if corpus.sha256 != corpus_info.get("sha256"):
        raise CorpusError(f"the run's corpus {path} has changed since training, so its validation split "
                          "is not the same text; pass the text to score: charlm eval FILE")
    ids, _ = checkpoint.vocab.encode(corpus.text)
    return split_train_val(ids, checkpoint.config.val_frac)[1]


def evaluate_checkpoint(checkpoint: Checkpoint, text_path: Path | None = None, skip_unknown: bool = False,
                        device: torch.device | None = None) -> EvalStats:
    """Score a file's text, or without one the run's validation split."""
    device = device or torch.device("cpu")
    model = checkpoint.model.to(device)
    if text_path is None:
        return evaluate_ids(model, validation_ids(checkpoint), device)
    text = read_corpus(text_path).text
    try:
        ids, skipped = checkpoint.vocab.encode(text, skip_unknown=skip_unknown)
    except VocabularyError as exc:
        raise VocabularyError(f"{text_path}: {exc}; --skip-unknown scores the rest") from None
    if len(ids) < 2:
        raise CorpusError(f"{text_path} has fewer than two characters the model knows; nothing to score")
    return evaluate_ids(model, ids, device, skipped=skipped)
