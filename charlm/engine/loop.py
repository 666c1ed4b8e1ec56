"""The training loop, one for every task. It yields progress events; it never prints.

    for event in train(task, run_dir):
        render(event)

Each step takes the task's next batch, hands the task's carry from the batch
before (the language model's hidden state), and runs one optimiser step
through the engine's strategy, chosen once per run (step.py; numpy_step.py
for --engine numpy). Every `eval_every` steps the task scores its validation
split and shows a preview, and the `last` checkpoint (and `best`, when the task's main
metric improved) is written. A stop request (Ctrl-C, SIGTERM) is honoured
between steps, after a checkpoint, so no step is ever half-saved. Training
ends at the nearest of the bounds (steps, epochs, time) or, with
`patience`, after that many evaluations without a new best. Under a time
budget no step starts that the last step's measured time says cannot finish
inside it, and a step that takes a sizeable part of the budget is said once.

The run directory is held (locked) by this process from before anything is
written until the run ends (rundir.py, lock.py); a new run that saves no
checkpoint takes what it wrote away again.

Under torchrun every process runs this same loop on its share of each batch
(see distributed.py); rank 0 alone writes and reports.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from charlm.engine.averaging import WeightAverage, start_average
from charlm.engine.checkpoint import finite_or_none, save_checkpoint
from charlm.engine.distributed import (COMMUNICATION_ERRORS, SINGLE, World, agree_max, gather_to_main, join,
                                       lost_peer, sum_over_ranks, together)
from charlm.engine.events import Evaluated, Notice, RunFinished, RunStarted, StepProgress
from charlm.engine.memory import batch_flags, check_fits, is_out_of_memory, out_of_memory
from charlm.engine.resume import check_run_dir, claim_run_dir, collect_rank_state, resume_state
from charlm.engine.runtime import resolve_device, resolve_precision, seed_everything
from charlm.engine.schedule import current_lr, run_progress
from charlm.engine.state import TrainState
from charlm.engine.step import OptimisationStrategy, optimisation_for
from charlm.engine.task import Task
from charlm.config import parse_duration
from charlm.errors import CharlmError
from charlm.files import append_jsonl


class NonFiniteLossError(CharlmError):
    pass


# A step that takes this share of the time budget or more is worth a word: at most ten fit.
SLOW_STEP_SHARE = 0.1


def train(task: Task, run_dir: Path, resume: bool = False, stop_requested: Callable[[], bool] = lambda: False,
          world: World = SINGLE) -> Iterator[object]:
    """Train the task's model into run_dir, yielding events as it goes.

    Nothing is written until every check has passed, so a run that cannot
    start leaves no trace.
    """
    config = task.config
    strategy = optimisation_for(config, world)  # the engine: torch, or numpy (step.py, numpy_step.py)
    device = join(world, resolve_device(config.device), parse_duration(config.dist_timeout))

    def prepare():
        point = check_run_dir(run_dir, resume, task, world)
        amp_dtype = resolve_precision(config.precision, device, config.cell)
        task.prepare(world, point.record if point else None)
        check_fits(task, device, amp_dtype, world)
        return point, amp_dtype

    point, amp_dtype = together(world, prepare)
    start = {"task": task.name, **task.record(), "config": config.to_dict(), "restart": resume and not point}
    held = together(world, lambda: claim_run_dir(run_dir, point, start), main_only=True)
    try:
        if held is not None and held.notice:
            yield Notice("took_over", held.notice)
        yield from _train_in(task, run_dir, point, amp_dtype, device, stop_requested, world, strategy)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise out_of_memory(exc, device, batch_flags(task)) from None
        if isinstance(exc, COMMUNICATION_ERRORS) and world.distributed:
            raise lost_peer(exc) from None
        raise
    finally:
        if held is not None:
            held.release()


def _train_in(task: Task, run_dir: Path, point, amp_dtype, device: torch.device,
              stop_requested: Callable[[], bool], world: World, strategy) -> Iterator[object]:
    """The run itself, once its directory is held."""
    config = task.config
    seed_everything(config.rng_seed)  # the same initial weights on every rank
    model = task.build_model().to(device)
    optimisation = strategy(model, config, device, amp_dtype, world)
    state, carry = TrainState(world_size=world.size), None
    if point:
        state = optimisation.restore(point, world)
        carry = optimisation.from_task_carry(task.restore_carry(point.carry_tensors(), world, device))
    elif world.rank > 0:
        torch.manual_seed(config.rng_seed + 7919 * world.rank)  # each rank its own dropout masks
    average = start_average(model, config.ema_decay, point)  # and the live weights back in the model
    yield RunStarted(run_dir=run_dir, task=task.name, config=config, data=task.data_facts(),
                     data_summary=task.data_summary(), model_summary=task.model_summary(), unit=task.unit,
                     device=str(device), precision=optimisation.precision, world_size=world.size,
                     num_parameters=sum(p.numel() for p in model.parameters()),
                     resumed_from_step=state.step if point else None)
    yield from _Loop(task, model, optimisation, average, run_dir, device, state, carry, world, stop_requested).run()


class _Loop:
    def __init__(self, task: Task, model, optimisation: OptimisationStrategy, average: WeightAverage | None,
                 run_dir: Path, device: torch.device, state: TrainState, carry: Any, world: World,
                 stop_requested: Callable[[], bool]):
        self.task, self.config, self.model, self.optimisation = task, task.config, model, optimisation
        self.average = average
        # What evaluation, previews and the weights files use: the average of the weights, or the weights.
        self.scored = average.module if average is not None else model
        self.run_dir, self.device, self.state, self.carry = run_dir, device, state, carry
        self.world, self.stop_requested = world, stop_requested
        self.clock = time.monotonic()
        self.interrupted = False
        self.best_metrics: dict = {}
        # The clock (agreed across ranks) at the same point of the step before, and the
        # last step's duration measured from it: what the time budget is checked against.
        self.step_mark: float | None = state.elapsed_seconds
        self.step_seconds: float | None = None
        self.said_slow = False

    def stop_reason(self) -> str | None:
        c, s = self.config, self.state
        if c.max_steps and s.step >= c.max_steps:
            return "max_steps"
        if c.epochs and s.epoch >= c.epochs:
            return "epochs"
        if c.time_budget_seconds and s.elapsed_seconds + (self.step_seconds or 0.0) > c.time_budget_seconds:
            return "time_budget"  # spent, or the next step could not finish inside it
        if c.patience and s.evaluations_since_best >= c.patience:
            return "patience"
        if self.interrupted:
            return "interrupted"
        return None

    def run(self) -> Iterator[object]:
        c, s = self.config, self.state
        plan = self.task.epoch(s.epoch, self.world)
        report_clock, report_units = self.clock, s.units_seen
        loss_sum = 0.0  # becomes a tensor (torch engine) or a float (numpy), in the loss's own precision
        loss_count, evaluated_at, grad_norm = 0, s.step if s.step else -1, None
        self.model.train()
        while not (reason := self.stop_reason()):
            if s.batch >= len(plan):  # epoch boundary: a new plan, a fresh carry
                s.epoch, s.batch, self.carry = s.epoch + 1, 0, None
                plan = self.task.epoch(s.epoch, self.world)
                continue
            lr = current_lr(c, s, run_progress(c, s, len(plan)))
            batch = plan.batch(s.batch)
            result = self.optimisation.step(self.task, batch, self.carry, lr, self.agree)
            s.batch += 1
            s.units_seen += batch.units
            self.carry = result.carry
            if (slow := self.slow_step_notice()) is not None:
                yield slow
            if result.loss is None:
                self.count_skipped()
            else:
                s.nonfinite_in_a_row = 0
                s.step += 1
                if self.average is not None:
                    self.average.update(self.model)
                loss_sum = loss_sum + result.loss
                loss_count += 1
                grad_norm = result.grad_norm
            if s.step % c.log_every == 0 and loss_count:
                now = time.monotonic()
                mean_loss = float(sum_over_ranks(self.world, loss_sum)) / loss_count
                norm = float(grad_norm) if grad_norm is not None else None
                rate = (s.units_seen - report_units) / max(now - report_clock, 1e-9)
                yield StepProgress(step=s.step, epoch=s.epoch, progress=run_progress(c, s, len(plan)),
                                   train_loss=mean_loss, lr=lr, tokens_per_second=rate,
                                   elapsed_seconds=s.elapsed_seconds, grad_norm=norm)
                self.log({"step": s.step, "epoch": s.epoch, "train_loss": mean_loss, "lr": lr,
                          "tokens_per_second": round(rate, 1), "grad_norm": finite_or_none(norm),
                          "elapsed_seconds": round(s.elapsed_seconds, 3)})
                loss_sum, loss_count, report_clock, report_units = 0.0, 0, now, s.units_seen
            if result.loss is not None and s.step % c.eval_every == 0 and s.step != evaluated_at:
                eval_started = time.monotonic()
                yield self.evaluate_and_save()
                evaluated_at = s.step
                report_clock += time.monotonic() - eval_started  # throughput measures training alone
                self.step_mark = None  # the next step's time would include the evaluation's
        if s.step != evaluated_at and s.step > 0:
            if reason == "interrupted":  # save now; a full validation pass can wait
                self.save_last(self.checkpoint_meta({}))
            else:
                yield self.evaluate_and_save()
        yield RunFinished(step=s.step, reason=reason, best_score=s.best_score, best_step=s.best_step,
                          main_metric=self.task.main_metric, elapsed_seconds=s.elapsed_seconds,
                          run_dir=self.run_dir, skipped_steps=s.skipped_steps, metrics=self.best_metrics)

    def slow_step_notice(self) -> Notice | None:
        """Once per run: a step took a sizeable part of the time budget (so few steps fit in it)."""
        budget = self.config.time_budget_seconds
        if self.said_slow or not budget or self.step_seconds is None or self.step_seconds < SLOW_STEP_SHARE * budget:
            return None
        self.said_slow = True
        share = "longer than the whole" if self.step_seconds > budget else "a sizeable part of the"
        return Notice("slow_step", f"one step takes {self.step_seconds:.1f} s, {share} {self.config.time_budget} "
                                   "time budget; no step starts that could not finish inside it; for more steps "
                                   "lower --batch-size or --seq-len, or raise --time-budget")

    def count_skipped(self) -> None:
        """A non-finite step was skipped (it would have poisoned every weight); too many in a row stop the run."""
        c, s = self.config, self.state
        s.skipped_steps += 1
        s.nonfinite_in_a_row += 1
        if s.nonfinite_in_a_row >= c.max_nonfinite_steps:
            saved = (f"the last good checkpoint is in {self.run_dir}" if (self.run_dir / "last.json").exists()
                     else "nothing was saved yet")
            raise NonFiniteLossError(
                f"loss or gradient was NaN/inf for {s.nonfinite_in_a_row} steps in a row at step {s.step}; "
                f"the learning rate ({c.lr:g}) is probably too high; lower --lr and train again; {saved}"
            )

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
        if self.step_mark is not None:  # agreed values: every rank measures the same step time
            self.step_seconds = elapsed - self.step_mark
        self.step_mark = elapsed
        return bool(bad)

    def evaluate_and_save(self) -> Evaluated:
        task, s = self.task, self.state
        self.optimisation.sync_model()
        metrics = task.evaluate(self.scored, self.device, self.world, self.optimisation.amp_dtype).metrics
        score = metrics[task.main_metric]
        # A NaN or infinite score is never a best: it would be the first one (and block every later one),
        # and it cannot be stored (JSON has no NaN).
        better = math.isfinite(score) and (s.best_score is None or (score > s.best_score if task.higher_is_better
                                                                     else score < s.best_score))
        if better:
            s.best_score, s.best_step, s.evaluations_since_best = score, s.step, 0
            self.best_metrics = metrics
        else:
            s.evaluations_since_best += 1
        preview = ""
        if self.world.is_main and self.config.sample_length:
            preview = task.preview(self.scored, self.device, self.config.rng_seed + s.step)
            self.model.train()  # a preview leaves its model in evaluation mode
        self.log({"step": s.step, "epoch": s.epoch, **metrics, "preview": preview,
                  "elapsed_seconds": round(s.elapsed_seconds, 3)})
        meta = self.checkpoint_meta(metrics)
        if better and self.world.is_main:
            save_checkpoint(self.run_dir, "best", self.scored.state_dict(), meta)
        self.save_last(meta)
        return Evaluated(step=s.step, metrics=metrics, main_metric=task.main_metric,
                         higher_is_better=task.higher_is_better, is_best=better, preview=preview,
                         elapsed_seconds=s.elapsed_seconds)

    def save_last(self, meta: dict) -> None:
        """The `last` checkpoint, with what every rank needs to resume (a collective: all ranks call it)."""
        self.optimisation.sync_model()
        carry = self.optimisation.to_task_carry(self.carry)
        ranks = gather_to_main(self.world, collect_rank_state(self.task.carry_tensors(carry)))
        if self.world.is_main:
            trainer, tensors = resume_state(self.optimisation.resume_parts(), self.state, ranks,
                                            self.task.join_carries)
            if self.average is not None:
                average_tensors, average_trainer = self.average.resume_parts(self.model)
                tensors.update(average_tensors)
                trainer.update(average_trainer)
            save_checkpoint(self.run_dir, "last", self.scored.state_dict(), dict(meta, trainer=trainer),
                            resume_tensors=tensors)

    def log(self, record: dict) -> None:
        if self.world.is_main:
            append_jsonl(self.run_dir / "metrics.jsonl", record)

    def checkpoint_meta(self, metrics: dict) -> dict:
        s, task = self.state, self.task
        return {"task": task.name, **task.record(), **self.optimisation.record(), "config": self.config.to_dict(),
                "step": s.step, "epoch": s.epoch, "metrics": {k: finite_or_none(v) for k, v in metrics.items()},
                "val_loss": finite_or_none(metrics.get("val_loss")), "main_metric": task.main_metric,
                "best_score": finite_or_none(s.best_score), "best_step": s.best_step}
