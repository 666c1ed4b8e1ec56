"""Run directories as data, without torch: checkpoint records, metrics.jsonl, best figures, settings.

A run directory holds best.json / last.json (config, model spec, corpus,
step, best figures) and metrics.jsonl (one JSON object per progress report
and per evaluation). Train lines carry `train_loss`; evaluation lines carry
`val_*` figures (whatever the task measures) and, from newer runs,
`preview`. Fields added later (`task`, `tokens_per_second`, `grad_norm`,
`preview`) are used when present and their absence is not an error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from charlm.errors import CheckpointError

FORMAT_NAME = "charlm-checkpoint"  # as engine/checkpoint.py writes it (that module imports torch)
# Metric names in which a smaller number is better; anything else (accuracy, F1, BLEU) is better larger.
_LOWER_IS_BETTER = ("loss", "bits", "perplexity", "error", "cer", "wer")
_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def lower_is_better(metric: str) -> bool:
    return any(word in metric for word in _LOWER_IS_BETTER)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Run:
    """One run directory: its checkpoint record (best, else last) and its metrics."""

    path: Path
    name: str
    record: dict  # best.json when there is one (the weights a report explains), else last.json
    last: dict  # last.json (or best.json): where the run stands
    train_rows: list[dict] = field(default_factory=list)
    eval_rows: list[dict] = field(default_factory=list)
    damaged_lines: int = 0  # metrics.jsonl lines that were not JSON objects (a run killed mid-write)

    @property
    def config(self) -> dict:
        return self.record.get("config", {})

    @property
    def task(self) -> str:
        return self.record.get("task", "lm")

    @property
    def unit(self) -> str:
        vocab = self.record.get("vocab")
        return "byte" if isinstance(vocab, dict) and vocab.get("tokenizer") == "bytes" else "char"

    @property
    def val_metrics(self) -> list[str]:
        """The numeric val_* figures of the evaluations, in the order they first appear."""
        names: dict[str, None] = {}
        for row in self.eval_rows:
            for key, value in row.items():
                if key.startswith("val_") and _number(value):
                    names.setdefault(key)
        return list(names)

    @property
    def main_metric(self) -> str | None:
        metrics = self.val_metrics
        named = self.record.get("main_metric")
        if named in metrics:
            return named
        return "val_loss" if "val_loss" in metrics else (metrics[0] if metrics else None)

    def series(self, key: str, rows: str = "train") -> tuple[list[float], list[float], list[float]]:
        """(steps, elapsed seconds, values) of the rows of one kind that carry a finite `key`."""
        chosen = [r for r in (self.train_rows if rows == "train" else self.eval_rows) if _number(r.get(key))]
        return ([r["step"] for r in chosen], [r.get("elapsed_seconds", math.nan) for r in chosen],
                [r[key] for r in chosen])

    def best_eval(self, metric: str | None = None) -> dict | None:
        """The evaluation line with the best value of `metric` (default: the main one); the first of ties."""
        metric = metric or self.main_metric
        rows = [r for r in self.eval_rows if _number(r.get(metric))]
        if not rows:
            return None
        pick = min if lower_is_better(metric) else max
        return pick(rows, key=lambda r: r[metric])

    def throughput(self) -> tuple[list[float], list[float], str]:
        """(steps, units per second, how it was measured): recorded, or else estimated from step times."""
        steps, _, rates = self.series("tokens_per_second")
        if rates:
            return steps, rates, "recorded"
        per_step = self.tokens_per_step()
        rows = [r for r in self.train_rows if _number(r.get("elapsed_seconds"))]
        steps, rates = [], []
        for before, after in zip(rows, rows[1:]):
            seconds = after["elapsed_seconds"] - before["elapsed_seconds"]
            if per_step and seconds > 0 and after["step"] > before["step"]:
                steps.append(after["step"])
                rates.append((after["step"] - before["step"]) * per_step / seconds)
        return steps, rates, "estimated from step times, evaluation pauses included"

    def tokens_per_step(self) -> int | None:
        """Characters (or bytes) one step of a language-model run reads, all processes together."""
        if self.task != "lm" or not all(_number(self.config.get(k)) for k in ("batch_size", "seq_len")):
            return None
        world = self.last.get("trainer", {}).get("state", {}).get("world_size", 1)
        return int(self.config["batch_size"] * self.config["seq_len"] * (world if _number(world) else 1))

    def num_parameters(self) -> int | None:
        """Parameters as the run recorded them, or for a language model from its spec (Embedding, the
        recurrent stack, the head)."""
        if _number(self.record.get("num_parameters")):
            return int(self.record["num_parameters"])
        spec = self.record.get("model", {})
        try:
            vocab, hidden, layers = spec["vocab_size"], spec["hidden_size"], spec["num_layers"]
            embedding, gates = spec["embedding_size"], _GATES[spec["cell"]]
        except (KeyError, TypeError):
            return None
        recurrent = sum(gates * hidden * ((embedding if layer == 0 else hidden) + hidden + 2)
                        for layer in range(layers))
        return vocab * embedding + recurrent + hidden * vocab + vocab

    def summary(self) -> dict:
        """The run's headline figures, for the table of runs: best, final and totals."""
        main = self.main_metric
        best = self.best_eval(main)
        last_train = self.train_rows[-1] if self.train_rows else {}
        steps, rates, _ = self.throughput()
        elapsed = [r["elapsed_seconds"] for r in self.train_rows + self.eval_rows if _number(r.get("elapsed_seconds"))]
        return {
            "main_metric": main,
            "best": best.get(main) if best else None,
            "best_step": best.get("step") if best else None,
            "best_elapsed": best.get("elapsed_seconds") if best else None,
            "best_metrics": {k: v for k, v in (best or {}).items() if k.startswith("val_") and _number(v)},
            "steps": self.last.get("step", last_train.get("step")),
            "evaluations": len(self.eval_rows),
            "elapsed": max(elapsed) if elapsed else None,
            "final_train_loss": last_train.get("train_loss"),
            "throughput": sum(rates) / len(rates) if rates else None,
            "parameters": self.num_parameters(),
        }


def _read_json(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}; check its permissions") from None
    except ValueError:
        raise CheckpointError(f"{path} is damaged: not valid JSON; use another run or train again") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a charlm checkpoint; pass a run directory made by charlm train")
    return record


def read_metrics(path: Path) -> tuple[list[dict], list[dict], int]:
    """metrics.jsonl -> (train lines, evaluation lines, lines that could not be read).

    Steps only grow within each kind; a step at or below the last one (a run resumed from an earlier
    checkpoint) drops every line from that step on, so the curves show the run that was kept.
    """
    train, evals, damaged = [], [], 0
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return train, evals, 0
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}; check its permissions") from None
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            damaged += 1
            continue
        if not isinstance(row, dict) or not _number(row.get("step")):
            damaged += 1
            continue
        kind = evals if any(key.startswith("val_") for key in row) else train if "train_loss" in row else None
        if kind is None:
            continue
        if kind and row["step"] <= kind[-1]["step"]:
            # A resumed run: it went back to its checkpoint, so what the interrupted run logged from here on
            # describes weights that were thrown away.
            train[:] = [r for r in train if r["step"] < row["step"]]
            evals[:] = [r for r in evals if r["step"] < row["step"]]
        kind.append(row)
    return train, evals, damaged


def read_run(path: Path) -> Run:
    """A run directory (or its best.json / last.json) -> Run, with one-line errors for anything else."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not path.exists():
        raise CheckpointError(f"run directory {path} does not exist; pass a run directory made by charlm train")
    if not folder.is_dir():
        raise CheckpointError(f"{path} is not a run directory; pass a run directory made by charlm train")
    records = {kind: _read_json(folder / f"{kind}.json") for kind in ("best", "last") if (folder / f"{kind}.json").is_file()}
    if not records:
        raise CheckpointError(f"{folder} holds no checkpoint (no best.json or last.json); "
                              "pass a run directory made by charlm train")
    record = records.get("best") or records["last"]
    train, evals, damaged = read_metrics(folder / "metrics.jsonl")
    return Run(path=folder, name=folder.name, record=record, last=records.get("last") or record,
               train_rows=train, eval_rows=evals, damaged_lines=damaged)


def read_runs(paths: list[Path]) -> list[Run]:
    """Several runs; names made unique by their parent folders where two share one."""
    runs = [read_run(p) for p in paths]
    seen = {}
    for run in runs:
        if run.path.resolve() in seen:
            raise CheckpointError(f"run {run.path} is given twice; name each run once")
        seen[run.path.resolve()] = run
    shared = {run.name for run in runs if sum(other.name == run.name for other in runs) > 1}
    for run in runs:
        if run.name in shared:
            run.name = f"{run.path.resolve().parent.name}/{run.path.name}"
    return runs


def settings_table(runs: list[Run]) -> list[tuple[str, list[object], bool]]:
    """(setting, value per run, whether the runs differ) for the task, model, data and config of each run."""
    def facts(run: Run) -> dict:
        corpus = run.record.get("corpus", {})
        split = run.record.get("split", {})
        out = {"task": run.task, "corpus": corpus.get("name"), "corpus sha256": (corpus.get("sha256") or "")[:12] or None}
        out.update({f"split {k}": v for k, v in split.items()})
        out.update(run.config)
        return out
    rows = [facts(run) for run in runs]
    keys = list(dict.fromkeys(key for row in rows for key in row))
    table = []
    for key in keys:
        values = [row.get(key) for row in rows]
        table.append((key, values, len({json.dumps(v, sort_keys=True) for v in values}) > 1))
    return table


def latest_run(root: Path = Path("checkpoints")) -> Path:
    """The run under `root` whose last.json was written most recently."""
    runs = [p.parent for p in root.glob("*/last.json")] if root.is_dir() else []
    if not runs:
        raise CheckpointError(f"no trained runs under {root}/; train one first (charlm train) or name run directories")
    return max(runs, key=lambda run: (run / "last.json").stat().st_mtime)
