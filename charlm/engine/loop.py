"""The training loop. It yields progress events; it never prints.

    for event in train(corpus, config, run_dir):
        render(event)

Each step reads the next window of every stream (see data.py), carries the
hidden state from the window before (detached: truncated BPTT), clips the
global gradient norm, sets the learning rate from the schedule and takes an
AdamW step. Every `eval_every` steps the whole validation text is scored,
a sample is drawn, and the `last` checkpoint (and `best`, on improvement) is
written. A stop request (Ctrl-C, SIGTERM) is honoured between steps, after a
checkpoint, so no step is ever half-saved.

Under torchrun every process runs this same loop on its own block of the
batch streams (see distributed.py); rank 0 alone writes and reports.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from charlm.engine.checkpoint import append_jsonl, finite_or_none, save_checkpoint
from charlm.config import TrainConfig, parse_duration
from charlm.tasks.lm.data import check_trainable, epoch_offset, lay_out_streams
from charlm.engine.distributed import (COMMUNICATION_ERRORS, SINGLE, World, agree_max, gather_to_main, join, lost_peer,
                                sum_over_ranks, together)
from charlm.text.encoding import EncodedCorpus
from charlm.errors import CharlmError
from charlm.tasks.lm.evaluate import EvalStats, score_ids
from charlm.tasks.lm.model import CharRNN, ModelSpec, detach_hidden
from charlm.engine.resume import TrainState, check_run_dir, claim_run_dir, collect_rank_state, resume_state
from charlm.engine.runtime import make_generator, precision_name, resolve_device, resolve_precision, seed_everything
from charlm.decode.sampling import SamplingOptions
from charlm.tasks.lm.generate import default_prime, generate
from charlm.engine.schedule import lr_multiplier
from charlm.text.vocab import ByteVocab, Vocab

# Samples shown during training: a little below 1 keeps them readable early on.
PREVIEW_TEMPERATURE = 0.8


# -- events ------------------------------------------------------------------

@dataclass(frozen=True)
class RunStarted:
    run_dir: Path
    config: TrainConfig
    corpus: dict
    device: str
    precision: str  # fp32, bf16 or fp16: the autocast dtype actually used
    world_size: int  # processes; each reads config.batch_size streams
    vocab_size: int
    num_parameters: int
    train_chars: int
    val_chars: int
    resumed_from_step: int | None


@dataclass(frozen=True)
class StepProgress:
    step: int
    epoch: int
    progress: float  # 0..1 towards the nearest bound
    train_loss: float  # mean over the steps since the last report, nats/char
    lr: float
    chars_per_second: float  # of all processes together
    elapsed_seconds: float


@dataclass(frozen=True)
class Evaluated:
    step: int
    val_loss: float
    val_bits_per_char: float
    is_best: bool
    sample: str


@dataclass(frozen=True)
class RunFinished:
    step: int
    reason: str  # max_steps | epochs | time_budget | interrupted
    best_val_loss: float
    best_step: int
    elapsed_seconds: float
    run_dir: Path
    skipped_steps: int


class NonFiniteLossError(CharlmError):
    pass


def prepare_data(corpus: EncodedCorpus, config: TrainConfig, vocab: Vocab | ByteVocab | None = None,
                 world_size: int = 1):
    """Corpus -> (vocab, train ids, val ids), checked to hold at least one (global) batch."""
    if vocab is not None and vocab != corpus.vocab:
        raise CharlmError("the corpus's vocabulary differs from the run's; cannot resume on it")
    if corpus.vocab.tokenizer != config.tokenizer:
        raise CharlmError(f"the corpus was encoded with the {corpus.vocab.tokenizer} tokenizer "
                          f"but the config asks for {config.tokenizer}")
    parts = corpus.splits(config.val_frac)
    check_trainable(len(parts["train"]), len(parts["val"]), config.batch_size * world_size, config.seq_len)
    return corpus.vocab, parts["train"], parts["val"]


def train(corpus: EncodedCorpus, config: TrainConfig, run_dir: Path, resume: bool = False,
          stop_requested: Callable[[], bool] = lambda: False, world: World = SINGLE) -> Iterator[object]:
    """Train a model on the corpus into run_dir, yielding events as it goes.

    Nothing is written until every check has passed, so a run that cannot
    start leaves no trace.
    """
    device = join(world, resolve_device(config.device), parse_duration(config.dist_timeout))

    def prepare():
        point = check_run_dir(run_dir, resume, corpus, config, world)
        resolved = point.config if point else config
        amp_dtype = resolve_precision(resolved.precision, device, resolved.cell)
        data = prepare_data(corpus, resolved, point.vocab if point else None, world.size)
        return point, resolved, amp_dtype, data

    point, config, amp_dtype, (vocab, train_ids, val_ids) = together(world, prepare)
    together(world, lambda: claim_run_dir(run_dir, point), main_only=True)
    seed_everything(config.rng_seed)  # the same initial weights on every rank
    spec = ModelSpec(vocab_size=vocab.size, cell=config.cell, hidden_size=config.hidden_size,
                     num_layers=config.num_layers, embedding_size=config.embedding_size,
                     dropout=config.dropout)
    model = CharRNN(spec).to(device)
    optimizer = make_optimizer(model, config)
    # Loss scaling keeps fp16 gradients from underflowing; bf16 has fp32's range and needs none.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    state, hidden = TrainState(world_size=world.size), None
    if point:
        state, hidden = point.restore(model, optimizer, scaler, device, world)
    elif world.rank > 0:
        torch.manual_seed(config.rng_seed + 7919 * world.rank)  # each rank its own dropout masks
    yield RunStarted(run_dir=run_dir, config=config, corpus=corpus.describe(), device=str(device),
                     precision=precision_name(amp_dtype), world_size=world.size, vocab_size=vocab.size,
                     num_parameters=model.num_parameters(), train_chars=len(train_ids), val_chars=len(val_ids),
                     resumed_from_step=state.step if point else None)
    loop = _Loop(model, optimizer, scaler, amp_dtype, config, vocab, train_ids, val_ids, corpus, run_dir, device,
                 state, hidden, world, stop_requested)
    try:
        yield from loop.run()
    except COMMUNICATION_ERRORS as exc:
        if not world.distributed:
            raise
        raise lost_peer(exc) from None


def make_optimizer(model: CharRNN, config: TrainConfig) -> torch.optim.Optimizer:
    # Decay matrices only: decaying biases and gains just fights the data.
    decayed = [p for p in model.parameters() if p.dim() >= 2]
    plain = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decayed, "weight_decay": config.weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    # The fused kernel updates every tensor in one pass: about a third of the
    # foreach optimiser's time per step on a CPU (bench/train_throughput.py).
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=config.lr, fused=fused)


class _Loop:
    def __init__(self, model, optimizer, scaler, amp_dtype, config, vocab, train_ids, val_ids, corpus, run_dir,
                 device, state: TrainState, hidden, world: World, stop_requested: Callable[[], bool]):
        self.model, self.optimizer, self.scaler, self.amp_dtype = model, optimizer, scaler, amp_dtype
        self.config, self.vocab, self.train_ids, self.val_ids, self.corpus = config, vocab, train_ids, val_ids, corpus
        self.run_dir, self.device, self.state, self.hidden = run_dir, device, state, hidden
        self.world, self.stop_requested = world, stop_requested
        self.params = [p for p in model.parameters()]
        self.budget = config.time_budget_seconds
        # DDP averages gradients across ranks during backward; evaluation, sampling
        # and checkpoints use the plain module underneath.
        self.network = (DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
                        if world.distributed else model)
        self.clock = time.monotonic()
        self.interrupted = False

    # progress towards whichever bound is nearest, 0..1
    def progress(self, windows_per_epoch: int) -> float:
        c, s = self.config, self.state
        parts = [0.0]
        if c.max_steps:
            parts.append(s.step / c.max_steps)
        if c.epochs:
            parts.append((s.epoch + s.window / windows_per_epoch) / c.epochs)
        if self.budget:
            parts.append(s.elapsed_seconds / self.budget)
        return min(max(parts), 1.0)

    def stop_reason(self) -> str | None:
        c, s = self.config, self.state
        if c.max_steps and s.step >= c.max_steps:
            return "max_steps"
        if c.epochs and s.epoch >= c.epochs:
            return "epochs"
        if self.budget and s.elapsed_seconds >= self.budget:
            return "time_budget"
        if self.interrupted:
            return "interrupted"
        return None

    def current_lr(self, progress: float) -> float:
        c, s = self.config, self.state
        if s.step >= c.warmup_steps and s.decay_start_progress is None:
            s.decay_start_progress = progress
        start = s.decay_start_progress or 0.0
        decay = (progress - start) / (1.0 - start) if start < 1.0 else 1.0
        return c.lr * lr_multiplier(c.schedule, s.step, c.warmup_steps, decay, c.min_lr_ratio)

    def lay_out(self):
        """This epoch's stream layout: the global batch's streams, of which this rank reads its block."""
        c = self.config
        layout = lay_out_streams(self.train_ids, c.batch_size * self.world.size, c.seq_len,
                                 epoch_offset(self.state.epoch, c.seq_len, c.rng_seed))
        return layout.rows(self.world.share(c.batch_size))

    def run(self) -> Iterator[object]:
        c, s = self.config, self.state
        layout = self.lay_out()
        report_clock, report_chars = self.clock, s.chars_seen
        loss_sum = torch.zeros((), device=self.device)
        loss_count, evaluated_at = 0, s.step if s.step else -1
        self.model.train()
        while not (reason := self.stop_reason()):
            if s.window >= layout.num_windows:  # epoch boundary: new offset, fresh state
                s.epoch, s.window, self.hidden = s.epoch + 1, 0, None
                layout = self.lay_out()
                continue
            lr = self.current_lr(self.progress(layout.num_windows))
            loss = self.train_step(*layout.window(s.window, pin_memory=self.device.type == "cuda"), lr)
            s.window += 1
            if loss is not None:
                loss_sum += loss
                loss_count += 1
            if s.step % c.log_every == 0 and loss_count:
                now = time.monotonic()
                mean_loss = float(sum_over_ranks(self.world, loss_sum)) / (loss_count * self.world.size)
                yield StepProgress(step=s.step, epoch=s.epoch, progress=self.progress(layout.num_windows),
                                   train_loss=mean_loss, lr=lr,
                                   chars_per_second=(s.chars_seen - report_chars) / max(now - report_clock, 1e-9),
                                   elapsed_seconds=s.elapsed_seconds)
                self.log({"step": s.step, "epoch": s.epoch, "train_loss": mean_loss, "lr": lr,
                          "elapsed_seconds": round(s.elapsed_seconds, 3)})
                loss_sum.zero_()
                loss_count, report_clock, report_chars = 0, now, s.chars_seen
            if loss is not None and s.step % c.eval_every == 0 and s.step != evaluated_at:  # after a real step
                eval_started = time.monotonic()
                yield self.evaluate_and_save()
                evaluated_at = s.step
                report_clock += time.monotonic() - eval_started  # chars/s measures training alone
        if s.step != evaluated_at and s.step > 0:
            if reason == "interrupted":  # save now; a full validation pass can wait
                self.save_last(self.checkpoint_meta(None))
            else:
                yield self.evaluate_and_save()
        yield RunFinished(step=s.step, reason=reason, best_val_loss=s.best_val_loss or float("nan"),
                          best_step=s.best_step, elapsed_seconds=s.elapsed_seconds, run_dir=self.run_dir,
                          skipped_steps=s.skipped_steps)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor | None:
        """One optimiser step on window (x, y), both (T, B). Returns the loss, or None if skipped."""
        c, s = self.config, self.state
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits, hidden = self.network(x, self.hidden)  # (T, B, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradient (a no-op without fp16 loss scaling)
        # clip_grad_norm_ with an infinite bound measures without clipping.
        norm = torch.nn.utils.clip_grad_norm_(self.params, c.clip if c.clip > 0 else math.inf)
        self.hidden = detach_hidden(hidden, dtype=torch.float32)
        s.chars_seen += x.numel() * self.world.size
        if self.agree(not bool(torch.isfinite(loss) and torch.isfinite(norm))):
            # A non-finite step would poison every weight: skip it, keep count.
            s.skipped_steps += 1
            s.nonfinite_in_a_row += 1
            self.hidden = None
            if self.scaler.is_enabled():
                self.scaler.update()  # fp16 overflow: a smaller loss scale for the next step
            if s.nonfinite_in_a_row >= c.max_nonfinite_steps:
                saved = (f"the last good checkpoint is in {self.run_dir}" if (self.run_dir / "last.json").exists()
                         else "nothing was saved yet")
                raise NonFiniteLossError(
                    f"loss or gradient was NaN/inf for {s.nonfinite_in_a_row} steps in a row at step {s.step}; "
                    f"the learning rate ({c.lr:g}) is probably too high; lower --lr and train again; {saved}"
                )
            return None
        s.nonfinite_in_a_row = 0
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.step(self.optimizer)
        self.scaler.update()
        s.step += 1
        return loss.detach()

    def agree(self, bad_step: bool) -> bool:
        """Advance the clock, poll for a stop request, and make every rank see the same of both.

        Returns whether the step is to be skipped (bad on any rank). Under a
        time budget the clock sets the learning rate, so ranks must share it
        exactly, or their weights would drift apart.
        """
        now = time.monotonic()
        elapsed = self.state.elapsed_seconds + (now - self.clock)  # wall-clock, evaluation included
        self.clock = now
        bad, interrupted, elapsed = agree_max(self.world, self.device,
                                              [float(bad_step), float(self.stop_requested()), elapsed])
        self.state.elapsed_seconds, self.interrupted = elapsed, bool(interrupted)
        return bool(bad)

    def evaluate_and_save(self) -> Evaluated:
        c, s = self.config, self.state
        total = score_ids(self.model, self.val_ids, self.device, shard=(self.world.rank, self.world.size),
                          amp_dtype=self.amp_dtype)
        stats = EvalStats(characters=len(self.val_ids) - 1,
                          nats_per_char=float(sum_over_ranks(self.world, total)) / (len(self.val_ids) - 1))
        is_best = s.best_val_loss is None or stats.nats_per_char < s.best_val_loss
        if is_best:
            s.best_val_loss, s.best_step = stats.nats_per_char, s.step
        sample = ""
        if c.sample_length and self.world.is_main:
            generator = make_generator(c.rng_seed + s.step, self.device)
            sample = "".join(generate(self.model, self.vocab, default_prime(self.vocab), c.sample_length,
                                      SamplingOptions(temperature=PREVIEW_TEMPERATURE), generator))
            self.model.train()
        self.log({"step": s.step, "epoch": s.epoch, "val_loss": stats.nats_per_char,
                  "val_bits_per_char": stats.bits_per_char, "elapsed_seconds": round(s.elapsed_seconds, 3)})
        meta = self.checkpoint_meta(stats.nats_per_char)
        if is_best and self.world.is_main:
            save_checkpoint(self.run_dir, "best", self.model, meta)
        self.save_last(meta)
        return Evaluated(step=s.step, val_loss=stats.nats_per_char, val_bits_per_char=stats.bits_per_char,
                         is_best=is_best, sample=sample)

    def save_last(self, meta: dict) -> None:
        """The `last` checkpoint, with what every rank needs to resume (a collective: all ranks call it)."""
        ranks = gather_to_main(self.world, collect_rank_state(self.hidden))
        if self.world.is_main:
            trainer, tensors = resume_state(self.optimizer, self.scaler, self.state, ranks)
            save_checkpoint(self.run_dir, "last", self.model, dict(meta, trainer=trainer), resume_tensors=tensors)

    def log(self, record: dict) -> None:
        if self.world.is_main:
            append_jsonl(self.run_dir / "metrics.jsonl", record)

    def checkpoint_meta(self, val_loss: float | None) -> dict:
        s = self.state
        return {"model": self.model.spec.to_dict(), "vocab": self.vocab.to_json(), "config": self.config.to_dict(),
                "corpus": self.corpus.describe(),
                "split": {"train_chars": len(self.train_ids), "val_chars": len(self.val_ids)},
                "step": s.step, "epoch": s.epoch, "val_loss": finite_or_none(val_loss),
                "best_val_loss": finite_or_none(s.best_val_loss), "best_step": s.best_step}
