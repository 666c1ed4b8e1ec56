"""The task `seq2seq`: a target text for each source text (many-to-many), from a TSV of pairs.

Data: text/pairs.py reads source<TAB>target lines (extra columns counted,
--reverse, length limits) and splits them by distinct source. Vocabularies:
one per side, with padding, start and end symbols (data.py). Batches: pairs
bucketed by source length. Model: a bidirectional encoder, a bridge and an
attention decoder with input feeding (model.py), trained by teacher forcing.
Loss: nats per target character, end symbol included.

Validation: the teacher-forced loss on every validation pair, and the greedy
outputs of (up to DECODED_SOURCES of) the validation sources scored by chrF,
exact match and BLEU against all their targets. The best checkpoint is the
one with the highest validation chrF (with `--select-by loss`, the lowest
loss): what a user of the model gets is its decoded output, and the two
figures part ways once a model starts to overfit (on 10,000 eng-fra pairs
the loss bottomed out at step 1,000 while chrF still rose by 0.9 at step
1,120), as NMT toolkits found for BLEU and perplexity. No carry: every pair
starts afresh.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from charlm.config import SELECT_BY, TrainConfig, stored_value
from charlm.engine.distributed import World
from charlm.engine.task import Batch, Evaluation, NoCarry
from charlm.errors import CharlmError, CorpusError
from charlm.tasks.seq2seq.data import PAD, EncodedPairs, PairEpoch, PairVocabs
from charlm.tasks.seq2seq.decode import translate
from charlm.tasks.seq2seq.evaluate import validation_figures
from charlm.tasks.seq2seq.model import Seq2Seq, Seq2SeqSpec
from charlm.text.pairs import PairsFile, group_references, split_by_source
from charlm.text.vocab import Vocab

# Greedy decoding of this many validation sources (evenly spaced through them) at each evaluation;
# charlm eval decodes them all.
DECODED_SOURCES = 1000
PREVIEW_PAIRS = 4
# Values kept for backward per unit of hidden_size, per pair and position: by a recurrent layer over a
# (packed) sequence, and added per step by the input-feeding loop (its cell's saved values, the context,
# [c; h], h~ and their stack). Fitted to the peak resident memory of steps at hidden 128 (a test checks).
_SAVED_PER_UNIT = {"lstm": 16, "gru": 18, "rnn": 5}
_STEPPED_PER_UNIT = 10


def decoded_subset(references: list, limit: int = DECODED_SOURCES) -> list:
    """At most `limit` items evenly spread through the list, the middle one of each of `limit` equal stretches
    (a data file sorted by length stays represented, and a few examples are neither the shortest nor the longest)."""
    if len(references) <= limit:
        return list(references)
    return [references[int((i + 0.5) * len(references) / limit)] for i in range(limit)]


class Seq2SeqTask(NoCarry):
    name = "seq2seq"
    unit = "char"
    batch_flags = "--batch-size, --max-source-length or --max-target-length"

    def __init__(self, data: PairsFile, config: TrainConfig):
        self.data, self.config = data, config
        self.main_metric = SELECT_BY[config.select_by]  # val_chrf by default (config.SEQ2SEQ_DEFAULTS)
        self.higher_is_better = config.select_by != "loss"
        self.vocabs: PairVocabs | None = None
        self.train: EncodedPairs | None = None
        self.val: EncodedPairs | None = None
        self.references: list[tuple[str, list[str]]] = []  # each validation source with all its targets
        self.split_counts: dict[str, int] = {}

    # -- data ------------------------------------------------------------------

    def prepare(self, world: World, resumed: dict | None) -> None:
        data, config = self.data, self.config
        self.vocabs = PairVocabs.from_pairs(data.pairs)
        if resumed is not None:
            if resumed.get("data", {}).get("sha256") != data.sha256:
                raise CharlmError(f"the pairs in {data.path} are not the ones this run was trained on (their "
                                  "checksum differs); cannot resume")
            if (Vocab.from_json(resumed["source_vocab"]) != self.vocabs.source
                    or Vocab.from_json(resumed["target_vocab"]) != self.vocabs.target):
                raise CharlmError("the pairs' characters differ from the run's; cannot resume on them")
            if stored_value(resumed["config"], "select_by") != config.select_by:  # what "best" means
                raise CharlmError(f"select_by cannot change when resuming (the run uses "
                                  f"{stored_value(resumed['config'], 'select_by')!r})")
        train, val = split_by_source(data.pairs, config.val_frac, config.rng_seed)
        if not val:
            raise CorpusError("the validation split is empty; raise --val-frac or give more pairs")
        self.train, self.val = EncodedPairs.encode(train, self.vocabs), EncodedPairs.encode(val, self.vocabs)
        self.references = group_references(val)
        self.split_counts = {"train_pairs": len(train), "val_pairs": len(val),
                             "train_sources": len({p.source for p in train}), "val_sources": len(self.references)}
        needed = config.batch_size * world.size
        if len(train) < needed:
            raise CorpusError(f"the training split has {len(train)} pairs but one batch needs {needed} "
                              f"(--batch-size {config.batch_size}" + (f" x {world.size} processes" if
                                                                    world.size > 1 else "")
                              + "); lower --batch-size or give more pairs")

    def data_facts(self) -> dict:
        d = self.data
        # read again (eval, --resume) from wherever the command runs: absolute
        return {"source": str(Path(d.path).resolve()), "sha256": d.sha256, "pairs": len(d.pairs), "too_long": d.too_long,
                "extra_column_lines": d.extra_column_lines, "reverse": self.config.reverse,
                "source_chars": len(self.vocabs.source.chars), "target_chars": len(self.vocabs.target.chars),
                **self.split_counts}

    def data_summary(self) -> str:
        d, c = self.data, self.split_counts
        parts = [f"pairs {d.path}" + (" (reversed: second column -> first)" if self.config.reverse else "")
                 + f": {len(d.pairs):,}"
                 + (f" ({d.too_long:,} over --max-source-length {self.config.max_source_length} or "
                    f"--max-target-length {self.config.max_target_length} skipped)" if d.too_long else "")]
        if d.extra_column_lines:
            parts.append(f"{d.extra_column_lines:,} lines had more than two columns; the extra ones are ignored")
        parts.append(f"{len(self.vocabs.source.chars)} source and {len(self.vocabs.target.chars)} target characters")
        parts.append(f"split by source: {c['train_pairs']:,} train / {c['val_pairs']:,} validation pairs "
                     f"({c['val_sources']:,} validation sources"
                     + (f", {DECODED_SOURCES:,} of them decoded at each evaluation"
                        if c["val_sources"] > DECODED_SOURCES else "") + ")")
        return "; ".join(parts)

    # -- model -----------------------------------------------------------------

    def spec(self) -> Seq2SeqSpec:
        c = self.config
        return Seq2SeqSpec(source_vocab_size=self.vocabs.source.size, target_vocab_size=self.vocabs.target.size,
                           cell=c.cell, hidden_size=c.hidden_size, num_layers=c.num_layers,
                           embedding_size=c.embedding_size, attention=c.attention, dropout=c.dropout)

    def build_model(self) -> Seq2Seq:
        return Seq2Seq(self.spec())

    def model_summary(self) -> str:
        c = self.config
        attention = "no attention" if c.attention == "none" else f"{c.attention} attention"
        return (f"{c.cell} encoder {c.num_layers}x(2x{c.hidden_size // 2}) bidirectional, decoder "
                f"{c.num_layers}x{c.hidden_size} with {attention}")

    def estimate_activation_bytes(self, world: World, element_size: int) -> int:
        """What the longest batch keeps for backward (bucketing puts the longest pairs together).

        Additive attention dominates for long pairs: each decoder step keeps a (source, hidden) tensor per
        pair, before and after its tanh (a test measures a step against this count).
        """
        c = self.config
        source = int(self.train.source.lengths.max())
        target = int(self.train.target.lengths.max()) + 1  # and the end symbol
        hidden, saved = c.hidden_size, c.num_layers * c.hidden_size * _SAVED_PER_UNIT[c.cell]
        # additive: tanh(W_q q + W_k k) over every source position; dot, general: the scores and weights
        attention = {"additive": 2 * source * hidden, "none": 0}.get(c.attention, 2 * source)
        stepped = 0 if c.attention == "none" else _STEPPED_PER_UNIT * hidden + attention
        encoder = source * (c.embedding_size + saved)
        decoder = target * (c.embedding_size + saved + stepped)
        logits = target * 3 * self.vocabs.target.size * 4  # logits, log-softmax and gradient, fp32
        return c.batch_size * ((encoder + decoder) * element_size + logits)

    def record(self) -> dict:
        return {"model": self.spec().to_dict(), "source_vocab": self.vocabs.source.to_json(),
                "target_vocab": self.vocabs.target.to_json(), "data": self.data_facts(), "split": self.split_counts}

    # -- training --------------------------------------------------------------

    def epoch(self, epoch: int, world: World) -> PairEpoch:
        return PairEpoch(self.train, self.config.batch_size, world.rank, world.size, self.config.rng_seed, epoch)

    def loss(self, model, batch: Batch, carry, device: torch.device):
        src, src_lengths, tgt_in, tgt_out = batch.tensors  # (S, B), (B,), (T, B), (T, B)
        logits = model(src.to(device, non_blocking=True), src_lengths, tgt_in.to(device, non_blocking=True))  # (T, B, V)
        loss_sum = F.cross_entropy(logits.flatten(0, 1).float(), tgt_out.to(device).flatten(), ignore_index=PAD,
                                   reduction="sum")
        return loss_sum, None

    # -- evaluation --------------------------------------------------------------

    def evaluate(self, model, device, world: World, amp_dtype) -> Evaluation:
        return Evaluation(validation_figures(model, self.vocabs, self.val, decoded_subset(self.references), device,
                                             world, amp_dtype))

    def preview(self, model, device, seed: int) -> str:
        shown = decoded_subset(self.references, PREVIEW_PAIRS)
        translations = translate(model, self.vocabs, [source for source, _ in shown])
        return "\n".join(f"{source} -> {t.text}   (reference: {targets[0]}"
                         + (f", +{len(targets) - 1} more" if len(targets) > 1 else "") + ")"
                         for (source, targets), t in zip(shown, translations))
