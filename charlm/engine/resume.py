"""Starting a run directory, saving what an exact resume needs, and picking a run up where it stopped.

A fresh run refuses a directory that already holds anything, so nothing a
user trained is overwritten by accident. A resumed run restores weights,
optimizer moments, counters, the carried hidden state and the RNG states from
the `last` checkpoint, and trims `metrics.jsonl` back to that step so lines
written after it (by a run that was killed) are not repeated.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from charlm.engine.checkpoint import (join_optimizer_state, load_weights, read_record, read_tensors,
                               split_optimizer_state, write_atomic)
from charlm.config import TrainConfig, build_config
from charlm.text.encoding import EncodedCorpus
from charlm.errors import CharlmError, CheckpointError, RunDirectoryError
from charlm.engine.distributed import SINGLE, World
from charlm.tasks.lm.model import CharRNN, Hidden, hidden_from_tensors, hidden_to_tensors
from charlm.engine.runtime import capture_rng_state, restore_rng_state
from charlm.text.vocab import Vocab

# Changing these would make the saved weights or data position meaningless.
FIXED_ON_RESUME = ("cell", "hidden_size", "num_layers", "embedding_size", "seq_len", "batch_size",
                   "val_frac", "normalize_newlines", "tokenizer", "rng_seed")


def resumed_config(run_dir: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The stored config of the run in run_dir, with the given flags applied on top."""
    record = read_record(_last_json(run_dir))
    for key in FIXED_ON_RESUME:
        if key in overrides and overrides[key] != _recorded(record, key):
            raise CharlmError(f"--{key.replace('_', '-')} cannot change when resuming "
                              f"(the run uses {_recorded(record, key)!r})")
    return build_config(record["config"], overrides)


def _recorded(record: dict, key: str) -> Any:
    """A config value of a checkpoint; keys added since it was written read as their defaults."""
    return record["config"].get(key, getattr(TrainConfig, key, None))


def recorded_corpus(run_dir: Path) -> dict:
    """What the run in run_dir recorded about its corpus (files, checksum, splits)."""
    return read_record(_last_json(run_dir))["corpus"]


def _last_json(run_dir: Path) -> Path:
    path = run_dir / "last.json"
    if not path.is_file():
        raise RunDirectoryError(f"nothing to resume: {run_dir} holds no checkpoint (last.json); "
                                "start a new run without --resume")
    return path


@dataclass
class TrainState:
    """Counters that, with the weights, optimizer and RNG, pin down a run exactly."""

    step: int = 0
    epoch: int = 0
    window: int = 0  # next window of the current epoch
    elapsed_seconds: float = 0.0
    chars_seen: int = 0
    best_val_loss: float | None = None
    best_step: int = 0
    decay_start_progress: float | None = None  # progress when warmup ended
    skipped_steps: int = 0
    nonfinite_in_a_row: int = 0
    world_size: int = 1  # processes that trained it (each carries its own streams' hidden state)


def collect_rank_state(hidden: Hidden | None) -> dict:
    """What one rank must contribute to a resumable checkpoint: its RNG states and carried hidden state."""
    return {"rng": capture_rng_state(),
            "hidden": {k: v.detach().to("cpu") for k, v in hidden_to_tensors(hidden).items()}}


def resume_state(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, state: TrainState,
                 ranks: list[dict]) -> tuple[dict, dict[str, torch.Tensor]]:
    """The resume part of a `last` checkpoint: (JSON for the record, tensors for the state file).

    `ranks` holds collect_rank_state() of every rank in rank order. Rank 0's
    RNG states are saved as `rng.<name>`, rank r's as `rng.rank<r>.<name>`;
    the hidden states are joined along the stream axis, so the file holds the
    state of every stream of the global batch.
    """
    tensors, optimizer_info = split_optimizer_state(optimizer.state_dict())
    for rank, part in enumerate(ranks):
        prefix = "rng." if rank == 0 else f"rng.rank{rank}."
        tensors.update({prefix + name: value for name, value in part["rng"].items()})
    for name in ranks[0]["hidden"]:
        tensors[f"hidden.{name}"] = torch.cat([part["hidden"][name] for part in ranks], dim=1)  # (L, B_global, H)
    trainer = {"state": asdict(state), "optimizer": optimizer_info}
    if scaler.is_enabled():
        trainer["scaler"] = scaler.state_dict()
    return trainer, tensors


@dataclass
class ResumePoint:
    config: TrainConfig
    vocab: Vocab
    record: dict
    tensors: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor]
    weights_path: Path

    def restore(self, model: CharRNN, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                device: torch.device, world: World = SINGLE) -> tuple[TrainState, Hidden | None]:
        """Load everything into model, optimizer and scaler; return (TrainState, this rank's hidden)."""
        load_weights(model, self.weights, self.weights_path)
        trainer = self.record["trainer"]
        optimizer_tensors = {k: v for k, v in self.tensors.items() if k.startswith("optimizer.")}
        try:
            optimizer.load_state_dict(join_optimizer_state(optimizer_tensors, trainer["optimizer"]))
            state = TrainState(**trainer["state"])
            if scaler.is_enabled() and "scaler" in trainer:
                scaler.load_state_dict(trainer["scaler"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"resume state in {self.weights_path.parent} is damaged: {exc}; "
                                  "start a new run in another --out") from None
        prefix = "rng." if world.rank == 0 else f"rng.rank{world.rank}."
        restore_rng_state({k[len(prefix):]: v for k, v in self.tensors.items()
                           if k.startswith(prefix) and "." not in k[len(prefix):]})
        streams = world.share(self.config.batch_size)
        # Carried in fp32 whatever the precision that produced it (autocast casts it again on use).
        hidden = hidden_from_tensors({k[7:]: v[:, streams].float().to(device)
                                      for k, v in self.tensors.items() if k.startswith("hidden.")})
        return state, hidden


def check_run_dir(run_dir: Path, resume: bool, corpus: EncodedCorpus, config: TrainConfig,
                  world: World = SINGLE) -> ResumePoint | None:
    """Check that a run can start (a free directory) or resume (a matching checkpoint); write nothing."""
    if not resume:
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise RunDirectoryError(f"run directory {run_dir} already exists; continue it with --resume "
                                    "or choose another with --out")
        return None
    json_path = _last_json(run_dir)
    record = read_record(json_path)
    if record.get("corpus", {}).get("sha256") != corpus.sha256:
        raise CharlmError(f"the corpus {corpus.name} is not the one this run was trained on "
                          f"(its checksum differs from that of {record.get('corpus', {}).get('name')}); cannot resume")
    for key in FIXED_ON_RESUME:
        if _recorded(record, key) != getattr(config, key):
            raise CharlmError(f"{key} cannot change when resuming (the run uses {_recorded(record, key)!r})")
    if "state" not in record or "trainer" not in record:
        raise CheckpointError(f"{json_path} has no resume state; start a new run in another --out")
    trained_by = record["trainer"].get("state", {}).get("world_size", 1)
    if trained_by != world.size:
        raise CharlmError(f"this run was trained by {trained_by} process(es) and is resumed by {world.size}; "
                          f"resume it with the same number (e.g. torchrun --nproc-per-node {trained_by}), "
                          "as each carries its own streams' hidden state")
    try:
        vocab = Vocab.from_json(record["vocab"])
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {json_path} is damaged: {exc}") from None
    weights_path = run_dir / record["weights"]
    return ResumePoint(config=config, vocab=vocab, record=record, tensors=read_tensors(run_dir / record["state"]),
                       weights=read_tensors(weights_path), weights_path=weights_path)


def claim_run_dir(run_dir: Path, point: ResumePoint | None) -> None:
    """Create a fresh run directory, or trim a resumed run's metrics back to its checkpoint."""
    if point is not None:
        _trim_metrics(run_dir / "metrics.jsonl", point.record["step"])
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirectoryError(f"cannot create run directory {run_dir}: {exc.strerror}; "
                                "choose another with --out") from None


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
