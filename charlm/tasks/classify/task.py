"""The task `classify`: one label per text (many-to-one), from a folder of class files or a TSV.

Data: text/records.py, deduplicated and split by class (data.py). Model: the
packed (bi)directional encoder's final states -> dropout -> Linear
(model.py). Loss: cross-entropy, each example weighed by its class with
--class-weights balanced. Metrics: loss, accuracy, macro-F1 (evaluate.py);
--select-by picks the one that chooses the best checkpoint. Preview: a few
validation texts with their true and predicted class. No carry.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from charlm.config import SELECT_BY, TrainConfig, stored_value
from charlm.engine.distributed import World, sum_over_ranks
from charlm.engine.task import Batch, Evaluation, NoCarry
from charlm.errors import CharlmError, CorpusError
from charlm.tasks.classify.data import (ClassifyEpoch, EncodedTexts, LabelledTexts, group_texts, pad_texts,
                                        scored_texts, split_by_class, training_pairs)
from charlm.tasks.classify.evaluate import Scored, score_texts
from charlm.tasks.classify.metrics import balanced_class_weights
from charlm.tasks.classify.model import CharClassifier, ClassifierSpec
from charlm.text.records import RecordSet
from charlm.text.vocab import Vocab

PREVIEW_TEXTS = 6
# Settings a resumed run must keep, beyond the engine's own list: the model's shape and what "best" means.
FIXED_ON_RESUME = ("bidirectional", "class_weights", "select_by", "skip_long")


def labelled_texts(records: RecordSet, config: TrainConfig) -> tuple[LabelledTexts, int]:
    """The records within --max-length, grouped by distinct text; and how many were left out as too long.

    A longer record is an error naming its file:line, unless --skip-long.
    """
    if not records.labelled:
        raise CorpusError(f"--task classify needs labelled records: a folder with one file per class or a .tsv "
                          f"of text<TAB>label; {records.source} is a plain list of lines")
    limit = config.max_length
    too_long = [i for i, text in enumerate(records.texts) if len(text) > limit]
    if too_long and not config.skip_long:
        first = too_long[0]
        raise CorpusError(f"{len(too_long):,} record(s) are longer than --max-length {limit}, the first at "
                          f"{records.line_numbers[first]} ({len(records.texts[first]):,} characters); "
                          "raise --max-length, or pass --skip-long to leave them out")
    long = set(too_long)
    keep = [i for i in range(len(records.texts)) if i not in long]
    if not keep:
        raise CorpusError(f"every record is longer than --max-length {limit}; raise it")
    grouped = group_texts([records.texts[i] for i in keep], [records.labels[i] for i in keep], records.classes)
    return grouped, len(too_long)


class ClassifyTask(NoCarry):
    name = "classify"
    unit = "example"
    higher_is_better = True

    def __init__(self, records: RecordSet, config: TrainConfig):
        self.records, self.config = records, config
        self.main_metric = SELECT_BY[config.select_by]
        self.higher_is_better = config.select_by != "loss"
        self.classes: tuple[str, ...] = records.classes
        self.vocab: Vocab | None = None
        self.grouped: LabelledTexts | None = None
        self.train: EncodedTexts | None = None
        self.val: EncodedTexts | None = None
        self.weights: np.ndarray | None = None  # (C,) with --class-weights balanced
        self.warnings: list[str] = []
        self.skipped_long = 0
        self.last: Scored | None = None  # the latest evaluation, recorded with the checkpoint
        self.parameters: int | None = None

    # -- data ------------------------------------------------------------------

    def prepare(self, world: World, resumed: dict | None) -> None:
        config = self.config
        self.grouped, self.skipped_long = labelled_texts(self.records, config)
        self.vocab = Vocab.from_text("".join(self.grouped.texts))
        if resumed is not None:
            self._check_resumable(resumed)
        split = split_by_class(self.grouped, config.val_frac, config.rng_seed)
        self.warnings = split.warnings
        self.train = training_pairs(self.grouped, split.train, self.vocab)
        self.val = scored_texts(self.grouped, split.val, self.vocab)
        if config.class_weights == "balanced":
            self.weights = balanced_class_weights(self.train.labels, len(self.classes), list(self.classes))
        needed = config.batch_size * world.size
        if len(self.train) < needed:
            raise CorpusError(f"the training split has {len(self.train)} examples but one batch needs {needed} "
                              f"(--batch-size {config.batch_size}" + (f" x {world.size} processes" if
                                                                    world.size > 1 else "")
                              + "); lower --batch-size or give more records")
        if not len(self.val):
            raise CorpusError("the validation split is empty; raise --val-frac or give more records")

    def _check_resumable(self, resumed: dict) -> None:
        if resumed.get("data", {}).get("sha256") != self.records.sha256:
            raise CharlmError(f"the records in {self.records.source} are not the ones this run was trained on "
                              "(their checksum differs); cannot resume")
        if Vocab.from_json(resumed["vocab"]) != self.vocab or list(resumed.get("classes", [])) != list(self.classes):
            raise CharlmError("the records' characters or classes differ from the run's; cannot resume on them")
        for key in FIXED_ON_RESUME:
            if stored_value(resumed["config"], key) != getattr(self.config, key):
                raise CharlmError(f"{key} cannot change when resuming "
                                  f"(the run uses {stored_value(resumed['config'], key)!r})")

    def data_facts(self) -> dict:
        return dict(self.records.facts(), distinct_pairs=sum(map(len, self.grouped.labels)),
                    skipped_long=self.skipped_long, train_examples=len(self.train), val_texts=len(self.val),
                    vocab_size=self.vocab.size, warnings=list(self.warnings))

    def data_summary(self) -> str:
        facts = self.records.facts()
        counts = facts["class_counts"]
        smallest = min(counts, key=counts.get)
        where = facts["files"][0] if len(facts["files"]) == 1 else f"{len(facts['files'])} class files"
        train_texts = len(set(self.train.texts))
        return "; ".join([
            f"records {where}: {facts['records']:,} ({facts['distinct']:,} distinct texts"
            + (f", {facts['blank_lines']:,} blank lines skipped" if facts["blank_lines"] else "")
            + (f", {self.skipped_long:,} over --max-length skipped" if self.skipped_long else "") + ")",
            f"{len(counts)} classes (smallest {smallest}: {counts[smallest]:,}; "
            f"{facts['multi_label_texts']:,} texts under several)",
            f"{len(self.vocab.chars)} characters",
            f"split {train_texts:,} train texts ({len(self.train):,} text-label pairs) / "
            f"{len(self.val):,} validation texts, stratified by class"
            + (f"; balanced class weights {self.weights.min():.2f} to {self.weights.max():.2f}"
               if self.weights is not None else "")])

    # -- model -----------------------------------------------------------------

    def spec(self) -> ClassifierSpec:
        c = self.config
        return ClassifierSpec(vocab_size=self.vocab.size, num_classes=len(self.classes), cell=c.cell,
                              hidden_size=c.hidden_size, num_layers=c.num_layers, embedding_size=c.embedding_size,
                              bidirectional=c.bidirectional, dropout=c.dropout)

    def build_model(self) -> CharClassifier:
        model = CharClassifier(self.spec())
        self.parameters = model.num_parameters()  # recorded: the report shows it without torch
        return model

    def model_summary(self) -> str:
        c = self.config
        return (f"{'bidirectional ' if c.bidirectional else ''}{c.cell} {c.num_layers}x{c.hidden_size} "
                f"-> {len(self.classes)} classes")

    def record(self) -> dict:
        counts = self.records.facts()["class_counts"]
        record = {"model": self.spec().to_dict(), "num_parameters": self.parameters, "vocab": self.vocab.to_json(),
                  "classes": list(self.classes),
                  "class_counts": {c: counts[c] for c in self.classes}, "data": self.data_facts(),
                  "split": {"train_examples": len(self.train), "val_texts": len(self.val)}}
        if self.weights is not None:
            record["class_weights"] = [round(float(w), 6) for w in self.weights]
        if self.last is not None:  # this evaluation's figures, which the report shows without loading the model
            record["validation"] = dict(self.last.scores().to_dict(), loss=self.last.loss, texts=len(self.val))
        return record

    # -- training --------------------------------------------------------------

    def epoch(self, epoch: int, world: World) -> ClassifyEpoch:
        return ClassifyEpoch(self.train, self.weights, self.config.batch_size, world.rank, world.size,
                             self.config.rng_seed, epoch)

    def loss(self, model, batch: Batch, carry, device: torch.device):
        ids, lengths, labels, weights = batch.tensors  # (T, B), (B,), (B,), (B,) or None
        logits = model(ids.to(device, non_blocking=True), lengths)  # (B, C)
        losses = F.cross_entropy(logits.float(), labels.to(device), reduction="none")  # (B,)
        if weights is not None:
            losses = losses * weights.to(device)
        return losses.sum(), None

    # -- evaluation --------------------------------------------------------------

    def evaluate(self, model, device, world: World, amp_dtype) -> Evaluation:
        mine = score_texts(model, self.val, device, shard=(world.rank, world.size), amp_dtype=amp_dtype)
        total = sum_over_ranks(world, mine.to_vector().to(_collective(device)))
        self.last = Scored.from_vector(total, len(self.classes))
        return Evaluation(self.last.metrics())

    @torch.inference_mode()
    def preview(self, model, device, seed: int) -> str:
        """A few validation texts of different classes, drawn by the seed: text, true and predicted class."""
        generator = np.random.default_rng(seed)
        present = np.unique(self.val.labels)  # primary labels
        shown = np.sort(generator.choice(present, min(PREVIEW_TEXTS, len(present)), replace=False))
        rows = np.array([generator.choice(np.flatnonzero(self.val.labels == label)) for label in shown])
        was_training = model.training
        model.eval()
        try:
            ids, lengths = pad_texts(self.val, rows)
            probs = torch.softmax(model(ids.to(device), lengths).float(), dim=-1).cpu()  # (B, C)
        finally:
            model.train(was_training)
        lines = []
        for row, p in zip(rows, probs):
            predicted = int(p.argmax())
            labels = np.flatnonzero(self.val.members[row])
            true = "/".join(self.classes[c] for c in labels)
            mark = "ok" if predicted in labels else "wrong"
            lines.append(f"{self.val.texts[row]}: {true} -> {self.classes[predicted]} "
                         f"({float(p[predicted]):.0%}) {mark}")
        return "\n".join(lines)


def _collective(device: torch.device) -> torch.device:
    # NCCL sums GPU tensors, Gloo CPU ones.
    return device if device.type == "cuda" else torch.device("cpu")
