"""Using a trained records model: sample records (per class), mark them new or seen, score a file of records.

The run's own split is rebuilt from its recorded data, checked by SHA-256,
so `charlm eval` and `--novelty` need the data where training read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from charlm.decode.sampling import SamplingOptions
from charlm.engine.runtime import resolve_precision
from charlm.errors import CharlmError, CorpusError, VocabularyError
from charlm.runs import Checkpoint
from charlm.tasks.lines.data import EncodedRecords, encode_records
from charlm.tasks.lines.evaluate import RecordStats, evaluate_records
from charlm.tasks.lines.generate import generate_records
from charlm.text.records import RecordSet, read_records, split_records

UNIQUE_ROUNDS = 20  # with --unique, at most this many batches are drawn to find enough distinct records


@dataclass(frozen=True)
class SampledRecord:
    text: str
    label: str | None  # its class, for a conditional model
    seen: str | None = None  # with novelty: "new", "train" or "val"

    def to_dict(self) -> dict:
        return {key: value for key, value in (("text", self.text), ("class", self.label), ("seen", self.seen))
                if value is not None}


def recorded_records(checkpoint: Checkpoint) -> tuple[RecordSet, list[int], list[int]]:
    """The run's records, read again from where it trained, and its (train, val) indices."""
    data = checkpoint.record.get("data", {})
    source = data.get("source")
    if not source or not Path(source).exists():
        raise CorpusError(f"the run's records ({source or 'unrecorded'}) are not there any more; "
                          "put them back, or score a file: charlm eval FILE")
    records = read_records(Path(source))
    if records.sha256 != data.get("sha256"):
        raise CorpusError(f"the records at {source} have changed since the run trained on them (their checksum "
                          "differs); score them as a file instead: charlm eval FILE")
    split = split_records(records, checkpoint.config.val_frac, checkpoint.config.rng_seed)
    return records, split.train, split.val


def _encode(checkpoint: Checkpoint, records: RecordSet, indices: list[int] | None = None,
            skip_unknown: bool = False) -> tuple[EncodedRecords, int]:
    indices = list(range(len(records.texts))) if indices is None else indices
    texts = [records.texts[i] for i in indices]
    class_ids = None
    if checkpoint.classes:
        if not records.labelled:
            raise CorpusError("this model generates records per class; score labelled records (a .tsv of "
                              "text<TAB>label or a folder of class files)")
        known = {name: i for i, name in enumerate(checkpoint.classes)}
        unknown = sorted({records.labels[i] for i in indices} - set(known))
        if unknown:
            raise CorpusError(f"class(es) the model does not know: {', '.join(unknown)}; "
                              f"it knows {', '.join(checkpoint.classes)}")
        class_ids = [known[records.labels[i]] for i in indices]
    unknown = checkpoint.vocab.unknown_chars("".join(texts))
    if unknown and not skip_unknown:
        missing = set(unknown)
        first = next(i for i, text in zip(indices, texts) if missing & set(text))
        shown = ", ".join(map(repr, unknown[:10])) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise VocabularyError(f"{records.line_numbers[first]}: {len(unknown)} character(s) not in the model's "
                              f"vocabulary ({shown}); pass --skip-unknown to leave the records that hold them out")
    # Records of any length are scored: max_length bounds training batches, not what the model can read.
    return encode_records(texts, checkpoint.vocab, class_ids, skip_unknown=skip_unknown)


def evaluate_lines(checkpoint: Checkpoint, path: Path | None = None, skip_unknown: bool = False,
                   device: torch.device | None = None, precision: str = "auto") -> RecordStats:
    """Mean nats per character (end symbol included) on the run's validation records or on a file's."""
    device = device or torch.device("cpu")
    amp_dtype = resolve_precision(precision, device, checkpoint.config.cell)
    model = checkpoint.model.to(device)
    if path is None:
        records, _, val = recorded_records(checkpoint)
        if checkpoint.config.skip_long:  # as in training: the records over --max-length were left out
            val = [i for i in val if len(records.texts[i]) <= checkpoint.config.max_length]
        encoded, dropped = _encode(checkpoint, records, val)
    else:
        # One class's records are fine to score (e.g. only Italian names); training needs two classes.
        encoded, dropped = _encode(checkpoint, read_records(path, min_classes=1), skip_unknown=skip_unknown)
        if not len(encoded):
            raise CorpusError(f"every record of {path} has characters the model does not know; nothing to score")
    return evaluate_records(model, encoded, device, amp_dtype=amp_dtype, skipped=dropped)


def sample_records(checkpoint: Checkpoint, count: int, options: SamplingOptions, generator: torch.Generator,
                   max_length: int | None = None, prefix: str = "", class_name: str | None = None,
                   unique: bool = False, novelty: bool = False) -> list[SampledRecord]:
    """`count` records generated side by side; per class when the model is conditional.

    Without class_name a conditional model's classes are drawn by their
    training frequency. unique: repeats are dropped and more are drawn.
    novelty: each record is marked new, or seen in the run's train or val split.
    """
    if count < 1:
        raise CharlmError(f"--num-samples must be at least 1, got {count}")
    classes = checkpoint.classes
    if class_name is not None and not classes:
        raise CharlmError("--class applies to a model trained on labelled records; this one has no classes")
    if class_name is not None and class_name not in classes:
        raise CharlmError(f"unknown class {class_name!r}; the model knows {', '.join(classes)}")
    max_length = max_length or checkpoint.config.max_length
    results: list[SampledRecord] = []
    seen_texts: set[str] = set()
    for _ in range(UNIQUE_ROUNDS if unique else 1):
        wanted = count - len(results)
        class_ids = _draw_classes(checkpoint, wanted, class_name, generator)
        texts = generate_records(checkpoint.model, checkpoint.vocab, wanted, options, generator, max_length,
                                 prefix=prefix, classes=class_ids)
        for i, text in enumerate(texts):
            if unique and text in seen_texts:
                continue
            seen_texts.add(text)
            label = classes[int(class_ids[i])] if class_ids is not None else None
            results.append(SampledRecord(text=text, label=label))
        if len(results) >= count:
            break
    if novelty:
        records, train, val = recorded_records(checkpoint)
        in_train = {records.texts[i] for i in train}
        in_val = {records.texts[i] for i in val}
        results = [SampledRecord(r.text, r.label, "train" if r.text in in_train else "val" if r.text in in_val
                                 else "new") for r in results]
    return results[:count]


def _draw_classes(checkpoint: Checkpoint, count: int, class_name: str | None,
                  generator: torch.Generator) -> torch.Tensor | None:
    classes = checkpoint.classes
    if not classes:
        return None
    if class_name is not None:
        return torch.full((count,), classes.index(class_name), dtype=torch.long)
    counts = checkpoint.record.get("class_counts", {})
    weights = torch.tensor([float(counts.get(name, 1)) for name in classes])
    return torch.multinomial(weights, count, replacement=True,
                             generator=generator if generator.device.type == "cpu" else None)
