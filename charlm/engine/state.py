"""The counters of a run: with the weights, optimizer and RNG states, they pin it down exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# Names earlier releases stored these counters under (language-model runs).
_RENAMED = {"window": "batch", "chars_seen": "units_seen", "best_val_loss": "best_score"}


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch: int = 0  # next batch of the current epoch
    elapsed_seconds: float = 0.0
    units_seen: int = 0  # characters (or examples) trained on, all processes together
    best_score: float | None = None  # of the task's main metric
    best_step: int = 0
    evaluations_since_best: int = 0  # for --patience
    decay_start_progress: float | None = None  # progress when warmup ended
    skipped_steps: int = 0
    nonfinite_in_a_row: int = 0
    world_size: int = 1  # processes that trained it (each carries its own share's state)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainState":
        """Read a stored state, under today's names or earlier ones; unknown keys are an error (TypeError)."""
        renamed = {_RENAMED.get(key, key): value for key, value in values.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(renamed) - known)
        if unknown:
            raise TypeError(f"unknown counters {', '.join(unknown)}")
        return cls(**renamed)
