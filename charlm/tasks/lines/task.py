"""The task `lines`: whole records, one per line, optionally given their class (one-to-many).

Data: text/records.py (a file of lines, a folder of class files, a TSV),
split at random by distinct text. Batches: records bucketed by length
(data.py). Model: the language model started from its class's state
(model.py). Metric: mean nats per character including the end symbol
(evaluate.py). Preview: a few generated records, per class when conditional.
No carry: every record starts afresh.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from charlm.config import TrainConfig
from charlm.decode.sampling import SamplingOptions
from charlm.engine.distributed import World, sum_over_ranks
from charlm.engine.runtime import make_generator
from charlm.engine.task import Batch, Evaluation, NoCarry
from charlm.errors import CharlmError, CorpusError
from charlm.tasks.lines.data import IGNORE, EncodedRecords, RecordEpoch, encode_records
from charlm.tasks.lines.evaluate import score_records
from charlm.tasks.lines.generate import generate_records
from charlm.tasks.lines.model import RecordModelSpec, RecordRNN
from charlm.text.records import RecordSet, split_records
from charlm.text.vocab import RecordVocab, Vocab

PREVIEW_TEMPERATURE = 0.8
PREVIEW_CLASSES, PREVIEW_PER_CLASS, PREVIEW_UNCONDITIONAL = 4, 3, 10
# A "record" this long is most likely running text without line breaks.
RUNNING_TEXT_CHARS = 10_000


class RecordsTask(NoCarry):
    name = "lines"
    unit = "char"
    main_metric = "val_loss"
    higher_is_better = False

    def __init__(self, records: RecordSet, config: TrainConfig):
        self.records, self.config = records, config
        self.conditional = records.labelled and config.condition
        self.classes: tuple[str, ...] = records.classes if self.conditional else ()
        self.vocab: RecordVocab | None = None
        self.train: EncodedRecords | None = None
        self.val: EncodedRecords | None = None
        self.skipped_long = 0

    # -- data ------------------------------------------------------------------

    def prepare(self, world: World, resumed: dict | None) -> None:
        records, config = self.records, self.config
        keep = self._within_length()
        texts = [records.texts[i] for i in keep]
        self.vocab = RecordVocab.from_texts(texts)
        if resumed is not None:
            if resumed.get("data", {}).get("sha256") != records.sha256:
                raise CharlmError(f"the records in {', '.join(records.files)} are not the ones this run was "
                                  "trained on (their checksum differs); cannot resume")
            if Vocab.from_json(resumed["vocab"]) != self.vocab or list(resumed.get("classes", [])) != list(
                    self.classes):
                raise CharlmError("the records' characters or classes differ from the run's; cannot resume on them")
        split = split_records(records, config.val_frac, config.rng_seed)
        kept = set(keep)
        class_index = {name: i for i, name in enumerate(self.classes)}

        def encode(indices: list[int]) -> EncodedRecords:
            indices = [i for i in indices if i in kept]
            class_ids = [class_index[records.labels[i]] for i in indices] if self.conditional else None
            encoded, _ = encode_records([records.texts[i] for i in indices], self.vocab, class_ids)
            return encoded

        self.train, self.val = encode(split.train), encode(split.val)
        needed = config.batch_size * world.size
        if len(self.train) < needed:
            raise CorpusError(f"the training split has {len(self.train)} records but one batch needs {needed} "
                              f"(--batch-size {config.batch_size}" + (f" x {world.size} processes" if
                                                                    world.size > 1 else "")
                              + "); lower --batch-size or give more records")
        if not len(self.val):
            raise CorpusError("the validation split is empty; raise --val-frac or give more records")

    def _within_length(self) -> list[int]:
        """Indices of the records no longer than max_length; longer ones are an error unless skip_long."""
        limit, texts = self.config.max_length, self.records.texts
        too_long = [i for i, text in enumerate(texts) if len(text) > limit]
        if too_long and not self.config.skip_long:
            first = too_long[0]
            hint = (" (--task lines reads one record per line; for running text use --task lm)"
                    if len(texts[first]) > RUNNING_TEXT_CHARS else "")
            raise CorpusError(f"{len(too_long):,} record(s) are longer than --max-length {limit}, the first at "
                              f"{self.records.line_numbers[first]} ({len(texts[first]):,} characters){hint}; "
                              "raise --max-length, or pass --skip-long to leave them out")
        self.skipped_long = len(too_long)
        long = set(too_long)
        keep = [i for i in range(len(texts)) if i not in long]
        if not keep:
            raise CorpusError(f"every record is longer than --max-length {limit}; raise it")
        return keep

    def data_facts(self) -> dict:
        return dict(self.records.facts(), conditional=self.conditional, skipped_long=self.skipped_long,
                    train_records=len(self.train), val_records=len(self.val), vocab_size=self.vocab.size)

    def data_summary(self) -> str:
        facts = self.records.facts()
        where = facts["files"][0] if len(facts["files"]) == 1 else f"{len(facts['files'])} class files"
        parts = [f"records {where}: {facts['records']:,} ({facts['distinct']:,} distinct"
                 + (f", {facts['blank_lines']:,} blank lines skipped" if facts["blank_lines"] else "")
                 + (f", {self.skipped_long:,} over --max-length skipped" if self.skipped_long else "") + ")",
                 f"{len(self.vocab.chars)} characters + end"]
        if self.records.labelled:
            counts = facts["class_counts"]
            smallest = min(counts, key=counts.get)
            parts.append(f"{len(counts)} classes (smallest {smallest}: {counts[smallest]:,}; "
                         f"{facts['multi_label_texts']:,} texts under several)"
                         + ("" if self.conditional else ", ignored (--no-condition)"))
        parts.append(f"split {len(self.train):,} train / {len(self.val):,} validation records")
        return "; ".join(parts)

    # -- model -----------------------------------------------------------------

    def spec(self) -> RecordModelSpec:
        c = self.config
        return RecordModelSpec(vocab_size=self.vocab.size, num_classes=len(self.classes), cell=c.cell,
                               hidden_size=c.hidden_size, num_layers=c.num_layers,
                               embedding_size=c.embedding_size, dropout=c.dropout, weight_drop=c.weight_drop,
                               locked_dropout=c.locked_dropout, embedding_dropout=c.embedding_dropout,
                               tie_weights=c.tie_weights)

    def build_model(self) -> RecordRNN:
        return RecordRNN(self.spec())

    def model_summary(self) -> str:
        c = self.config
        return f"{c.cell} {c.num_layers}x{c.hidden_size}" + (
            f", started per class ({len(self.classes)})" if self.classes else "")

    def record(self) -> dict:
        counts = self.records.facts().get("class_counts", {})
        return {"model": self.spec().to_dict(), "vocab": self.vocab.to_json(), "classes": list(self.classes),
                "class_counts": {c: counts[c] for c in self.classes}, "data": self.data_facts(),
                "split": {"train_records": len(self.train), "val_records": len(self.val)}}

    # -- training --------------------------------------------------------------

    def epoch(self, epoch: int, world: World) -> RecordEpoch:
        return RecordEpoch(self.train, self.config.batch_size, world.rank, world.size, self.config.rng_seed, epoch)

    def loss(self, model, batch: Batch, carry, device: torch.device):
        inputs, targets, classes = batch.tensors  # (T, B), (T, B), (B,) or None
        logits, _ = model(inputs.to(device, non_blocking=True),
                          classes=None if classes is None else classes.to(device, non_blocking=True))  # (T, B, V)
        loss_sum = F.cross_entropy(logits.flatten(0, 1).float(), targets.to(device).flatten(),
                                   ignore_index=IGNORE, reduction="sum")
        return loss_sum, None

    # -- evaluation --------------------------------------------------------------

    def evaluate(self, model, device, world: World, amp_dtype) -> Evaluation:
        total = score_records(model, self.val, device, shard=(world.rank, world.size), amp_dtype=amp_dtype)
        nats = float(sum_over_ranks(world, total)) / self.val.targets
        return Evaluation({"val_loss": nats, "val_bits_per_char": nats / math.log(2)})

    def preview(self, model, device, seed: int) -> str:
        generator = make_generator(seed, device)
        options = SamplingOptions(temperature=PREVIEW_TEMPERATURE)
        limit = self.config.max_length
        if not self.classes:
            return ", ".join(generate_records(model, self.vocab, PREVIEW_UNCONDITIONAL, options, generator, limit))
        shown = self.classes[:PREVIEW_CLASSES]
        classes = torch.arange(len(shown)).repeat_interleave(PREVIEW_PER_CLASS)
        records = generate_records(model, self.vocab, len(classes), options, generator, limit, classes=classes)
        return "\n".join(f"{name}: " + ", ".join(records[i * PREVIEW_PER_CLASS:(i + 1) * PREVIEW_PER_CLASS])
                         for i, name in enumerate(shown))
