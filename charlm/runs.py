"""Trained runs for inference: find one, load its checkpoint, rebuild its model through its task.

Every checkpoint names the task that wrote it (runs from before tasks
existed are language models); the task rebuilds its model from the
record's spec and checks every tensor against it. Nothing is unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from charlm.config import TrainConfig, build_config
from charlm.engine.checkpoint import (DAMAGED, DEFAULT_ROOT, load_weights, read_record, read_tensors,
                                      resolve_checkpoint)
from charlm.errors import CharlmError, CheckpointError

# What each command serves, for messages that point a user to the one that fits a run.
COMMANDS = {"lm": "charlm sample", "lines": "charlm sample", "classify": "charlm classify",
            "seq2seq": "charlm translate"}


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model on the CPU in eval mode, its vocabulary, settings and record."""

    task: str
    model: nn.Module
    vocab: Any
    config: TrainConfig
    record: dict
    path: Path

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def classes(self) -> list[str]:
        return list(self.record.get("classes", []))


def load_checkpoint(path: Path | None = None, root: Path = DEFAULT_ROOT, kind: str = "best",
                    tasks: tuple[str, ...] | None = None, command: str = "") -> Checkpoint:
    """Rebuild the model of a checkpoint (a run directory, a JSON, or None for the newest run).

    tasks: the tasks the calling command serves; another task's run is a
    one-line error that names the command that fits it.
    """
    json_path = resolve_checkpoint(path, root, kind)
    try:
        return _load(json_path, tasks, command)
    except CheckpointError as exc:
        # A run directory was given (or found): if its best checkpoint is damaged but its last
        # one loads, say so and point to it rather than leave only "train again".
        last = json_path.with_name("last.json")
        if (path is not None and not path.is_dir()) or json_path.name == last.name or not last.is_file():
            raise
        try:
            _load(last, tasks, command)
        except CharlmError:
            raise exc from None
        problem = str(exc).rsplit("; ", 1)[0]
        raise CheckpointError(f"{problem}; the run's last checkpoint is intact: pass --checkpoint {last}") from None


def _load(json_path: Path, tasks: tuple[str, ...] | None, command: str) -> Checkpoint:
    from charlm.tasks import model_from_record  # the tasks import torch models; this module stays light

    record = read_record(json_path)
    task = record.get("task", "lm")
    if tasks is not None and task not in tasks:
        fits = COMMANDS.get(task)
        raise CharlmError(f"{json_path.parent} is a {task} run, which {command or 'this command'} does not serve"
                          + (f"; use {fits}" if fits else ""))
    try:
        config = build_config(record["config"])
        model, vocab = model_from_record(task, record)
        weights_path = json_path.parent / record["weights"]
    except (KeyError, TypeError, ValueError, CharlmError) as exc:
        raise CheckpointError(f"checkpoint {json_path} is damaged: {exc}; {DAMAGED}") from None
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint {json_path} refers to {weights_path.name}, which is missing; {DAMAGED}")
    load_weights(model, read_tensors(weights_path), weights_path)
    model.eval()
    return Checkpoint(task=task, model=model, vocab=vocab, config=config, record=record, path=json_path)
