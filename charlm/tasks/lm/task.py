"""The task `lm`: the next character of one continuous text, learned with truncated BPTT.

The training text is laid out as parallel streams read in windows (data.py);
the hidden state left by one window is the carry into the next (detached:
truncated backpropagation through time) and starts afresh each epoch.
Validation scores the held-out end of the text with the state carried
across it (evaluate.py); the preview is a short sample.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from charlm.config import TrainConfig
from charlm.decode.sampling import SamplingOptions
from charlm.engine.distributed import World, sum_over_ranks
from charlm.engine.runtime import make_generator
from charlm.engine.task import Batch, Evaluation
from charlm.errors import CharlmError
from charlm.tasks.lm.data import StreamLayout, check_trainable, epoch_offset, lay_out_streams
from charlm.tasks.lm.evaluate import score_ids
from charlm.tasks.lm.generate import default_prime, generate
from charlm.tasks.lm.model import CharRNN, ModelSpec, detach_hidden, hidden_from_tensors, hidden_to_tensors
from charlm.text.encoding import EncodedCorpus
from charlm.text.vocab import Vocab

# Samples shown during training: a little below 1 keeps them readable early on.
PREVIEW_TEMPERATURE = 0.8
# Values a recurrent layer keeps for backward, per unit of hidden_size and per character of the
# batch (its input and output, gates, cell states and the kernel's workspace), measured on the
# CPU kernels at hidden 256 and 512: within about 10% of the peak resident memory of a step.
_SAVED_PER_UNIT = {"lstm": 12, "gru": 9, "rnn": 4}


class LanguageModelTask:
    name = "lm"
    main_metric = "val_loss"
    higher_is_better = False

    def __init__(self, corpus: EncodedCorpus, config: TrainConfig):
        self.corpus, self.config, self.vocab = corpus, config, corpus.vocab
        self.sizing = None  # how the model's size was chosen, when charlm chose it (sizing.py)
        self.unit = corpus.vocab.unit
        self.train_ids: np.ndarray | None = None
        self.val_ids: np.ndarray | None = None

    # -- data ------------------------------------------------------------------

    def prepare(self, world: World, resumed: dict | None) -> None:
        corpus, config = self.corpus, self.config
        if resumed is not None:
            if resumed.get("corpus", {}).get("sha256") != corpus.sha256:
                raise CharlmError(f"the corpus {corpus.name} is not the one this run was trained on "
                                  f"(its checksum differs from that of {resumed.get('corpus', {}).get('name')}); "
                                  "cannot resume")
            if Vocab.from_json(resumed["vocab"]) != corpus.vocab:
                raise CharlmError("the corpus's vocabulary differs from the run's; cannot resume on it")
        if corpus.vocab.tokenizer != config.tokenizer:
            raise CharlmError(f"the corpus was encoded with the {corpus.vocab.tokenizer} tokenizer "
                              f"but the config asks for {config.tokenizer}")
        parts = corpus.splits(config.val_frac)
        check_trainable(len(parts["train"]), len(parts["val"]), config.batch_size * world.size, config.seq_len)
        self.train_ids, self.val_ids = parts["train"], parts["val"]

    def data_facts(self) -> dict:
        return {"corpus": self.corpus.describe(), "vocab_size": self.vocab.size,
                "train_chars": len(self.train_ids), "val_chars": len(self.val_ids)}

    def data_summary(self) -> str:
        corpus = self.corpus.describe()
        files = corpus["files"]
        where = files[0]["path"] if len(files) == 1 else f"{corpus['name']} ({len(files)} files)"
        split = "standard split" if corpus.get("standard_splits") else "split"
        return (f"corpus {where}: {corpus['tokens']:,} {self.unit}s, sha256 {corpus['sha256'][:12]}…, "
                f"vocabulary {self.vocab.size}; {split} {len(self.train_ids):,} train / "
                f"{len(self.val_ids):,} validation")

    # -- model -----------------------------------------------------------------

    def spec(self) -> ModelSpec:
        c = self.config
        return ModelSpec(vocab_size=self.vocab.size, cell=c.cell, hidden_size=c.hidden_size,
                         num_layers=c.num_layers, embedding_size=c.embedding_size, dropout=c.dropout,
                         weight_drop=c.weight_drop, locked_dropout=c.locked_dropout,
                         embedding_dropout=c.embedding_dropout, tie_weights=c.tie_weights)

    def build_model(self) -> CharRNN:
        return CharRNN(self.spec())

    def model_summary(self) -> str:
        return f"{self.config.cell} {self.config.num_layers}x{self.config.hidden_size}"

    def estimate_activation_bytes(self, world: World, element_size: int) -> int:
        """What one batch of this rank keeps for backward: embeddings, every layer's saved values,
        and the logits with their log-softmax and gradient (fp32 whatever the autocast)."""
        c = self.config
        characters = c.seq_len * c.batch_size
        recurrent = c.embedding_size + c.num_layers * c.hidden_size * _SAVED_PER_UNIT[c.cell]
        return characters * (recurrent * element_size + 3 * self.vocab.size * 4)

    def record(self) -> dict:
        return {"model": self.spec().to_dict(), "vocab": self.vocab.to_json(), "corpus": self.corpus.describe(),
                "split": {"train_chars": len(self.train_ids), "val_chars": len(self.val_ids)}}

    # -- training --------------------------------------------------------------

    def epoch(self, epoch: int, world: World) -> "_StreamEpoch":
        """This epoch's stream layout over the global batch's streams, of which this rank reads its block."""
        c = self.config
        layout = lay_out_streams(self.train_ids, c.batch_size * world.size, c.seq_len,
                                 epoch_offset(epoch, c.seq_len, c.rng_seed))
        return _StreamEpoch(layout.rows(world.share(c.batch_size)), world.size)

    def loss(self, model, batch: Batch, carry, device: torch.device):
        # From pinned memory the copy to a GPU overlaps the work already queued.
        x, y = ((t.pin_memory() if device.type == "cuda" else t).to(device, non_blocking=True)
                for t in batch.tensors)  # (T, B) each
        logits, hidden = model(x, carry)  # (T, B, V)
        # fp32 whatever the autocast (a float64 model, as tests run one, stays float64); so is the carry.
        precision = torch.promote_types(logits.dtype, torch.float32)
        loss_sum = F.cross_entropy(logits.flatten(0, 1).to(precision), y.flatten(), reduction="sum")
        return loss_sum, detach_hidden(hidden, dtype=precision)

    def carry_tensors(self, carry) -> dict[str, torch.Tensor]:
        return hidden_to_tensors(carry)

    def join_carries(self, ranks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {name: torch.cat([part[name] for part in ranks], dim=1) for name in ranks[0]}  # (L, B_global, H)

    def restore_carry(self, tensors: dict[str, torch.Tensor], world: World, device: torch.device):
        streams = world.share(self.config.batch_size)
        # fp32 as saved; float64 as the numpy engine's float64 runs save it
        return hidden_from_tensors({k: v[:, streams].to(device, torch.promote_types(v.dtype, torch.float32))
                                    for k, v in tensors.items()})

    # -- evaluation --------------------------------------------------------------

    def evaluate(self, model, device, world: World, amp_dtype) -> Evaluation:
        total = score_ids(model, self.val_ids, device, shard=(world.rank, world.size), amp_dtype=amp_dtype)
        nats = float(sum_over_ranks(world, total)) / (len(self.val_ids) - 1)
        return Evaluation({"val_loss": nats, "val_bits_per_char": nats / math.log(2)})

    def preview(self, model, device, seed: int) -> str:
        generator = make_generator(seed, device)
        return "".join(generate(model, self.vocab, default_prime(self.vocab), self.config.sample_length,
                                SamplingOptions(temperature=PREVIEW_TEMPERATURE), generator))


class _StreamEpoch:
    """One epoch of windows over this rank's streams."""

    def __init__(self, layout: StreamLayout, world_size: int):
        self.layout, self.world_size = layout, world_size

    def __len__(self) -> int:
        return self.layout.num_windows

    def batch(self, index: int) -> Batch:
        x, y = self.layout.window(index)  # (T, B) each
        units = x.numel() * self.world_size  # every rank reads a window of the same shape
        return Batch(tensors=(x, y), units=units, normaliser=units)
