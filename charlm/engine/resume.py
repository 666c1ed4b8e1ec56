"""Starting a run directory, saving what an exact resume needs, and picking a run up where it stopped.

A fresh run refuses a directory that holds a run or anything charlm did not
write, so nothing a user trained is overwritten by accident; it may take over
an unfinished start (rundir.py). Whichever it is, the directory is locked
for the run (lock.py). A resumed run restores weights,
optimizer moments, counters, the task's carry (the language model's hidden
state) and the RNG states from the `last` checkpoint, and trims
`metrics.jsonl` back to that step so lines written after it (by a run that
was killed) are not repeated.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from charlm.config import TrainConfig, build_config, stored_value
from charlm.engine.checkpoint import (join_optimizer_state, load_weights, read_record, read_tensors,
                                      split_optimizer_state)
from charlm.engine.distributed import SINGLE, World
from charlm.engine.rundir import Claim, check_fresh, claim, half_saved, half_saved_error, read_start, refuse_if_held
from charlm.engine.runtime import capture_rng_state, restore_rng_state
from charlm.engine.state import TrainState
from charlm.errors import CharlmError, CheckpointError, RunDirectoryError
from charlm.files import write_atomic

# Changing these would make the saved weights or the data position meaningless.
FIXED_ON_RESUME = ("task", "cell", "hidden_size", "num_layers", "embedding_size", "seq_len", "batch_size",
                   "val_frac", "normalize_newlines", "tokenizer", "rng_seed", "max_length", "condition",
                   "tie_weights", "engine", "dtype", "attention", "reverse", "max_source_length",
                   "max_target_length")
# The prefix of the carry's tensors in the state file ("hidden." since the first release).
CARRY_PREFIX = "hidden."


def resumed_config(run_dir: Path, overrides: dict[str, Any], preset: dict[str, Any] | None = None,
                   preset_path: Path | None = None) -> TrainConfig:
    """The stored config of the run in run_dir, with a preset (--config) and then the flags on top.

    A setting that cannot change is blamed on where it came from: the flag,
    or the preset file (the user may never have typed its flag).
    """
    record = recorded_run(run_dir)
    preset = preset or {}
    for key in FIXED_ON_RESUME:
        stored = stored_value(record["config"], key)
        if key in overrides and overrides[key] != stored:
            raise CharlmError(f"--{key.replace('_', '-')} cannot change when resuming (the run uses {stored!r})")
        if key not in overrides and key in preset and preset[key] != stored:
            raise CharlmError(f"{key} = {preset[key]!r} in {preset_path or 'the --config preset'} differs from "
                              f"the run's {stored!r}, and it cannot change when resuming; resume without "
                              "--config, or with a preset that matches the run")
    return build_config(record["config"], preset, overrides)


def recorded_run(run_dir: Path) -> dict:
    """The `last` record of the run in run_dir (what it trained on, its task and settings), or for an
    unfinished start (no checkpoint yet) its start record."""
    if not (run_dir / "last.json").is_file():
        started = read_start(run_dir)
        if started is not None:
            return started
    return read_record(_last_json(run_dir))


def _last_json(run_dir: Path) -> Path:
    path = run_dir / "last.json"
    if not path.is_file():
        if half_saved(run_dir):
            raise half_saved_error(run_dir)
        if run_dir.is_file():
            raise RunDirectoryError(f"--out {run_dir} is a file, not a run directory; "
                                    "pass the run's directory with --out")
        stopped = (" (its run stopped before the first one, and a new run without --resume takes the "
                   "directory over)" if run_dir.is_dir() and any(run_dir.iterdir()) else "")
        raise RunDirectoryError(f"nothing to resume: {run_dir} holds no checkpoint (last.json){stopped}; "
                                "start a new run without --resume")
    return path


def collect_rank_state(carry: dict[str, torch.Tensor]) -> dict:
    """What one rank must contribute to a resumable checkpoint: its RNG states and its carry's tensors."""
    return {"rng": capture_rng_state(), "carry": {k: v.detach().to("cpu") for k, v in carry.items()}}


def optimizer_parts(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> tuple[dict, dict]:
    """A torch optimizer's and loss scaler's resume state: (tensors, JSON for the record's trainer)."""
    tensors, optimizer_info = split_optimizer_state(optimizer.state_dict())
    trainer = {"optimizer": optimizer_info}
    if scaler.is_enabled():
        trainer["scaler"] = scaler.state_dict()
    return tensors, trainer


def resume_state(optimisation_parts: tuple[dict, dict], state: TrainState, ranks: list[dict],
                 join_carries: Callable[[list[dict]], dict]) -> tuple[dict, dict]:
    """The resume part of a `last` checkpoint: (JSON for the record, tensors for the state file).

    optimisation_parts: the optimisation's own (tensors, trainer JSON), e.g. optimizer_parts().
    `ranks` holds collect_rank_state() of every rank in rank order. Rank 0's
    RNG states are saved as `rng.<name>`, rank r's as `rng.rank<r>.<name>`;
    the carries are joined by the task (the language model's along the
    stream axis), so the file holds the state of the whole global batch.
    """
    tensors, trainer = dict(optimisation_parts[0]), dict(optimisation_parts[1])
    for rank, part in enumerate(ranks):
        prefix = "rng." if rank == 0 else f"rng.rank{rank}."
        tensors.update({prefix + name: value for name, value in part["rng"].items()})
    if ranks[0]["carry"]:
        tensors.update({CARRY_PREFIX + name: value
                        for name, value in join_carries([part["carry"] for part in ranks]).items()})
    trainer["state"] = state.to_dict()
    return trainer, tensors


@dataclass
class ResumePoint:
    record: dict
    tensors: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor]
    weights_path: Path

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                world: World = SINGLE) -> TrainState:
        """Load weights, optimizer, scaler and this rank's RNG states; return the counters."""
        load_weights(model, self.weights, self.weights_path)
        trainer = self.record["trainer"]
        with self.damaged_if_malformed():
            optimizer.load_state_dict(join_optimizer_state(self.tensors_under("optimizer."), trainer["optimizer"]))
            if scaler.is_enabled() and "scaler" in trainer:
                scaler.load_state_dict(trainer["scaler"])
        return self.restore_counters(world)

    def restore_counters(self, world: World = SINGLE) -> TrainState:
        """This rank's RNG states restored; the counters returned (what every engine's resume shares)."""
        with self.damaged_if_malformed():
            state = TrainState.from_dict(self.record["trainer"]["state"])
        prefix = "rng." if world.rank == 0 else f"rng.rank{world.rank}."
        restore_rng_state({k[len(prefix):]: v for k, v in self.tensors.items()
                           if k.startswith(prefix) and "." not in k[len(prefix):]})
        return state

    def tensors_under(self, prefix: str) -> dict[str, torch.Tensor]:
        """The state file's tensors whose names start with prefix, names kept."""
        return {k: v for k, v in self.tensors.items() if k.startswith(prefix)}

    @contextmanager
    def damaged_if_malformed(self) -> Iterator[None]:
        try:
            yield
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"resume state in {self.weights_path.parent} is damaged: {exc}; "
                                  "start a new run in another --out") from None

    def carry_tensors(self) -> dict[str, torch.Tensor]:
        """The saved carry of the whole global batch, by name (the task takes its rank's part)."""
        return {k[len(CARRY_PREFIX):]: v for k, v in self.tensors.items() if k.startswith(CARRY_PREFIX)}


def check_run_dir(run_dir: Path, resume: bool, task, world: World = SINGLE) -> ResumePoint | None:
    """Check that a run can start (a free directory) or resume (a matching checkpoint); write nothing."""
    if not resume:
        check_fresh(run_dir)
        return None
    refuse_if_held(run_dir)
    started = read_start(run_dir)
    if started is not None:  # stopped before its first checkpoint: it starts again from scratch
        _check_same_run(run_dir, started, task)
        return None
    json_path = _last_json(run_dir)
    record = read_record(json_path)
    _check_same_run(run_dir, record, task)
    if "state" not in record or "trainer" not in record:
        raise CheckpointError(f"{json_path} has no resume state; start a new run in another --out")
    trained_by = record["trainer"].get("state", {}).get("world_size", 1)
    if trained_by != world.size:
        raise CharlmError(f"this run was trained by {trained_by} process(es) and is resumed by {world.size}; "
                          f"resume it with the same number (e.g. torchrun --nproc-per-node {trained_by}), "
                          "as each carries its own share of the batch")
    weights_path = run_dir / record["weights"]
    return ResumePoint(record=record, tensors=read_tensors(run_dir / record["state"]),
                       weights=read_tensors(weights_path), weights_path=weights_path)


def _check_same_run(run_dir: Path, record: dict, task) -> None:
    """The task and the settings that fix the weights' shape and the data's layout must be the run's."""
    recorded_task = record.get("task", "lm")
    if recorded_task != task.name:
        raise CharlmError(f"the run in {run_dir} trains the task {recorded_task}, not {task.name}; "
                          f"resume it with --task {recorded_task}, or start a new run in another --out")
    for key in FIXED_ON_RESUME:
        if stored_value(record["config"], key) != getattr(task.config, key):
            raise CharlmError(f"{key} cannot change when resuming "
                              f"(the run uses {stored_value(record['config'], key)!r})")
    averaged = stored_value(record["config"], "ema_decay")
    if (averaged > 0) != (task.config.ema_decay > 0):
        # Its best score so far would be compared with scores of the other kind of weights.
        ran = f"averages its weights (--ema-decay {averaged:g})" if averaged > 0 else "does not average its weights"
        raise CharlmError(f"the run in {run_dir} {ran}, and averaging cannot be turned on or off when resuming; "
                          f"resume with --ema-decay {averaged:g}, or start a new run in another --out")


def claim_run_dir(run_dir: Path, point: ResumePoint | None, start_record: dict) -> Claim:
    """Lock the run directory for this process (creating it for a new run), clear an unfinished
    start, record how the run starts; for a resumed run, trim its metrics back to its checkpoint."""
    held = claim(run_dir, point.record["step"] if point else None, start_record)
    if point is not None:
        try:
            _trim_metrics(run_dir / "metrics.jsonl", point.record["step"])
        except BaseException:
            held.release()
            raise
    return held


def _trim_metrics(path: Path, last_step: int) -> None:
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                kept.append(line)
        except ValueError:
            continue  # a line cut off by a kill mid-write
    write_atomic(path, "".join(f"{line}\n" for line in kept).encode("utf-8"))
