"""Using a trained classifier: the top classes of texts, in batches; its scores on labelled texts.

Characters the model never saw are left out of a text (and named, so the
caller can warn), or with `strict` make that text an error; a text with no
character the model knows is an error for that text alone, never for the
batch. Scoring the run's own validation split rebuilds it from the recorded
data, checked by SHA-256.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from charlm.engine.runtime import resolve_precision
from charlm.errors import CharlmError, CorpusError, VocabularyError
from charlm.runs import Checkpoint
from charlm.tasks.classify.data import EncodedTexts, LabelledTexts, group_texts, scored_texts, split_by_class
from charlm.tasks.classify.evaluate import Scored, score_texts
from charlm.tasks.classify.metrics import ClassificationScores
from charlm.tasks.classify.task import labelled_texts
from charlm.text.records import read_records
from charlm.text.vocab import Vocab


@dataclass(frozen=True)
class Answer:
    """One text's classes, most likely first, or why it has none."""

    text: str
    top: list[tuple[str, float]]  # (class, probability); empty on error
    unknown: tuple[str, ...] = ()  # characters left out (or, with strict, the reason for the error)
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"text": self.text, "error": self.error}
        out = {"text": self.text, "class": self.top[0][0],
               "top": [{"class": name, "probability": round(p, 6)} for name, p in self.top]}
        if self.unknown:
            out["skipped_characters"] = list(self.unknown)
        return out


def encode_known(vocab: Vocab, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, ...]]]:
    """Texts -> (ids of their known characters, flat; known length per text (B,); unknown characters per text).

    One vectorised pass over the joined texts (no per-character Python for
    texts whose characters are all known).
    """
    ids, known = vocab.lookup("".join(texts))  # (N,), (N,)
    raw = torch.tensor([len(text) for text in texts])  # (B,)
    owner = torch.repeat_interleave(torch.arange(len(texts)), raw)  # (N,) which text each character is from
    lengths = torch.bincount(owner[known], minlength=len(texts))  # (B,)
    unknown: list[tuple[str, ...]] = [()] * len(texts)
    if not bool(known.all()):
        for index in torch.unique(owner[~known]).tolist():
            unknown[index] = tuple(vocab.unknown_chars(texts[index]))
    return ids[known].long(), lengths, unknown


class Classifier:
    """A checkpoint's classifier, for answering texts in batches."""

    def __init__(self, checkpoint: Checkpoint, device: torch.device | None = None):
        self.checkpoint, self.device = checkpoint, device or torch.device("cpu")
        self.model = checkpoint.model.to(self.device).eval()
        self.classes = checkpoint.classes

    @torch.inference_mode()
    def classify(self, texts: list[str], top_k: int = 3, strict: bool = False) -> list[Answer]:
        """Every text's top_k classes with their probabilities, in one forward pass over the texts that can be read."""
        if top_k < 1:
            raise CharlmError(f"--top-k must be at least 1, got {top_k}")
        if not texts:
            return []
        ids, lengths, unknown = encode_known(self.checkpoint.vocab, texts)
        errors: list[str | None] = [None] * len(texts)
        for index, text in enumerate(texts):
            if not text:
                errors[index] = "empty text; give at least one character"
            elif strict and unknown[index]:
                errors[index] = (f"character(s) the model never saw: {', '.join(map(repr, unknown[index]))} "
                                 "(without --strict they are skipped)")
            elif not lengths[index]:
                errors[index] = "no character of this text is one the model knows"
        readable = [i for i, error in enumerate(errors) if error is None]
        answers = [Answer(text, [], unknown[i], error) for i, (text, error) in enumerate(zip(texts, errors))]
        if not readable:
            return answers
        rows = torch.tensor(readable)
        x = _padded(ids, lengths, rows)  # (T, B)
        probs = torch.softmax(self.model(x.to(self.device), lengths[rows]).float(), dim=-1).cpu()  # (B, C)
        k = min(top_k, len(self.classes))
        values, indices = probs.topk(k, dim=-1)  # (B, k)
        for row, index in enumerate(readable):
            top = [(self.classes[c], float(p)) for c, p in zip(indices[row].tolist(), values[row].tolist())]
            answers[index] = Answer(texts[index], top, unknown[index])
        return answers


def _padded(ids: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The texts `rows` of flat ids (lengths (B_all,)) as (T, B), zeros past each length."""
    starts = torch.cumsum(lengths, 0) - lengths  # (B_all,)
    chosen = lengths[rows]  # (B,)
    position = torch.arange(int(chosen.max()))[:, None]  # (T, 1)
    inside = position < chosen[None, :]  # (T, B)
    gather = torch.where(inside, starts[rows][None, :] + position, 0)  # (T, B)
    return torch.where(inside, ids[gather], 0)  # (T, B)


# -- scoring labelled texts ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassifierReport:
    """A classifier's figures on labelled texts."""

    source: str
    classes: list[str]
    texts: int  # distinct texts scored
    records: int  # lines read (repeats included)
    skipped: int  # texts left out: no character the model knows
    loss: float
    scores: ClassificationScores

    def to_dict(self) -> dict:
        s = self.scores
        return {"source": self.source, "texts": self.texts, "records": self.records, "skipped": self.skipped,
                "loss": self.loss, "accuracy": s.accuracy, "macro_f1": s.macro_f1, "classes": self.classes,
                "per_class": {name: {"precision": float(s.precision[i]), "recall": float(s.recall[i]),
                                     "f1": float(s.f1[i]), "support": int(s.support[i])}
                              for i, name in enumerate(self.classes)},
                "confusion": s.confusion.tolist()}


def recorded_validation(checkpoint: Checkpoint) -> tuple[LabelledTexts, list[int], int]:
    """The run's records read again from where it trained, grouped; its validation indices; records read."""
    data = checkpoint.record.get("data", {})
    source = data.get("source")
    if not source or not Path(source).exists():
        raise CorpusError(f"the run's records ({source or 'unrecorded'}) are not there any more; "
                          "put them back, or score a labelled file: charlm eval FILE")
    records = read_records(Path(source))
    if records.sha256 != data.get("sha256"):
        raise CorpusError(f"the records at {source} have changed since the run trained on them (their checksum "
                          "differs); score them as a file instead: charlm eval FILE")
    grouped, _ = labelled_texts(records, checkpoint.config)
    split = split_by_class(grouped, checkpoint.config.val_frac, checkpoint.config.rng_seed)
    return grouped, split.val, len(records.texts)


def _file_texts(checkpoint: Checkpoint, path: Path, skip_unknown: bool) -> tuple[LabelledTexts, list[int], int, int]:
    records = read_records(path)
    if not records.labelled:
        raise CorpusError(f"{path} has no labels; score a .tsv of text<TAB>label or a folder of class files")
    unknown = sorted(set(records.classes) - set(checkpoint.classes))
    if unknown:
        raise CorpusError(f"class(es) the model does not know: {', '.join(unknown)}; "
                          f"it knows {', '.join(checkpoint.classes)}")
    grouped = group_texts(records.texts, records.labels, tuple(checkpoint.classes))
    vocab = checkpoint.vocab
    if skip_unknown:
        indices = [i for i, text in enumerate(grouped.texts) if not vocab.unknown_chars(text)]
    else:
        missing = vocab.unknown_chars("".join(grouped.texts))
        if missing:
            raise VocabularyError(f"{path} has {len(missing)} character(s) the model never saw: "
                                  f"{', '.join(map(repr, missing[:10]))}{' and more' if len(missing) > 10 else ''}"
                                  "; pass --skip-unknown to leave out the texts that hold them")
        indices = list(range(len(grouped.texts)))
    if not indices:
        raise CorpusError(f"every text of {path} has characters the model never saw; nothing to score")
    return grouped, indices, len(records.texts), len(grouped.texts) - len(indices)


def evaluate_classifier(checkpoint: Checkpoint, path: Path | None = None, skip_unknown: bool = False,
                        device: torch.device | None = None, precision: str = "auto") -> ClassifierReport:
    """Accuracy, macro-F1, per-class figures and the confusion matrix on the run's validation split or a file."""
    device = device or torch.device("cpu")
    amp_dtype = resolve_precision(precision, device, checkpoint.config.cell)
    if path is None:
        grouped, indices, records = recorded_validation(checkpoint)
        skipped, source = 0, f"validation texts of {checkpoint.record['data']['source']}"
    else:
        grouped, indices, records, skipped = _file_texts(checkpoint, path, skip_unknown)
        source = str(path)
    texts: EncodedTexts = scored_texts(grouped, indices, checkpoint.vocab)
    scored: Scored = score_texts(checkpoint.model.to(device), texts, device, amp_dtype=amp_dtype)
    return ClassifierReport(source=source, classes=list(checkpoint.classes), texts=len(texts), records=records,
                            skipped=skipped, loss=scored.loss, scores=scored.scores())
