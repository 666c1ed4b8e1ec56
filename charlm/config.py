"""Training configuration: one frozen dataclass, validated field by field.

Precedence is dataclass defaults < a TOML preset (`--config`) < command-line
flags. `configs/default.toml` spells out the defaults below (a test keeps the
two equal), so a preset only needs the keys it changes.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from charlm.config_hints import explain_toml_error, unknown_key_hint
from charlm.errors import ConfigError

TASKS = ("lm", "lines", "classify", "seq2seq")
CELLS = ("rnn", "lstm", "gru")
SCHEDULES = ("cosine", "exponential", "constant")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ENGINES = ("torch", "numpy")
DTYPES = ("float32", "float64")
BOUNDS = ("max_steps", "epochs", "time_budget")  # training stops at whichever comes first
OPTIONAL_COUNTS = ("max_steps", "epochs", "patience")  # whole numbers that "none" unsets
# Defaults that differ by task, between the dataclass defaults and a preset.
# A record is a few dozen characters, not a 128-character window: more per batch.
# A classifier reads each text once per example: a small bidirectional GRU (bench/classify_quality.py).
# seq2seq: fp32, since its decoder runs one step at a time, where bf16 autocast costs more in
# conversions than it saves (0.7-0.85x fp32's speed on an AMX CPU); a GRU of 256, one layer each
# side, at lr 3e-3: in 4 minutes on 10,000 eng-fra pairs on a 2-core CPU it reached validation chrF
# 40.8, against 37.3 at lr 2e-3 and 36.0 for an LSTM (two layers: half the steps, far behind).
# Its best checkpoint is the one whose greedy outputs score the highest chrF (tasks/seq2seq/task.py).
SEQ2SEQ_DEFAULTS: dict[str, Any] = {"cell": "gru", "num_layers": 1, "lr": 0.003, "batch_size": 64,
                                    "precision": "fp32", "select_by": "chrf"}
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "lines": {"batch_size": 64, "eval_every": 250},
    "classify": {"cell": "gru", "hidden_size": 128, "num_layers": 1, "batch_size": 64, "eval_every": 250},
    "seq2seq": SEQ2SEQ_DEFAULTS,
}
UNSET_WORDS = ("", "none")  # what clears a bound, in a preset or on the command line
# What a new lm run picks from its corpus and bounds when no size or regulariser is given (tasks/lm/sizing.py).
SIZED_FOR_LM = ("hidden_size", "num_layers", "weight_drop", "locked_dropout")
# The numpy engine runs on the CPU in its own dtype: "auto" there means the CPU, without autocast.
ENGINE_AUTO: dict[str, dict[str, str]] = {"numpy": {"device": "cpu", "precision": "fp32"}}


def _field(default: Any, help: str, **rules: Any) -> Any:
    """A dataclass field whose metadata carries its help text, its checks and (tasks=...) the tasks it serves."""
    return field(default=default, metadata={"help": help, **rules})


LM = ("lm",)
LINES = ("lines",)
CLASSIFY = ("classify",)
SEQ2SEQ = ("seq2seq",)
# --select-by -> the metric that picks the best checkpoint, and the values each task offers
SELECT_BY = {"loss": "val_loss", "accuracy": "val_accuracy", "macro-f1": "val_macro_f1", "chrf": "val_chrf"}
SELECT_BY_TASKS = {"classify": ("loss", "accuracy", "macro-f1"), "seq2seq": ("loss", "chrf")}


@dataclass(frozen=True)
class TrainConfig:
    task: str = _field("lm", "what to learn: lm (the next character of a stream of text), lines "
                             "(whole records, one per line, optionally per class), classify (the label of "
                             "each record) or seq2seq (a target text for each source text, from a TSV of pairs)",
                       choices=TASKS)
    # model
    cell: str = _field("lstm", "recurrent cell: rnn (tanh), lstm or gru", choices=CELLS)
    hidden_size: int = _field(256, "units per recurrent layer", min=1)
    num_layers: int = _field(2, "stacked recurrent layers", min=1)
    embedding_size: int = _field(64, "size of each character's learned vector", min=1)
    dropout: float = _field(0.0, "dropout between layers and before the head, a new mask every step",
                            min=0.0, below=1.0)
    weight_drop: float = _field(0.0, "DropConnect on the hidden-to-hidden matrices, one mask per window",
                                min=0.0, below=1.0, tasks=LM + LINES)
    locked_dropout: float = _field(0.0, "variational dropout: one mask per sequence, the same at every step, on "
                                        "the embeddings, between layers and before the head (instead of dropout)",
                                   min=0.0, below=1.0, tasks=LM + LINES)
    embedding_dropout: float = _field(0.0, "drop whole characters' embeddings, one mask per window",
                                      min=0.0, below=1.0, tasks=LM + LINES)
    tie_weights: bool = _field(False, "the output layer reuses the embedding matrix (with a projection when the "
                                      "hidden size differs)", tasks=LM + LINES)
    bidirectional: bool = _field(True, "read each text both ways and classify from the final states of both "
                                       "directions", tasks=CLASSIFY)
    # data
    seq_len: int = _field(128, "characters per window (truncated-BPTT length)", min=1, tasks=LM)
    batch_size: int = _field(32, "parallel streams (lm), records (lines, classify) or pairs (seq2seq) per step",
                             min=1)
    val_frac: float = _field(0.1, "fraction held out for validation: the end of the text (lm), "
                                  "a seeded random set of distinct records (lines), of each class's distinct "
                                  "texts (classify), of distinct sources with all their targets (seq2seq)",
                             above=0.0, below=1.0)
    normalize_newlines: bool = _field(False, "turn CRLF and CR into LF before training", tasks=LM)
    tokenizer: str = _field("chars", "chars (the text's Unicode characters) or bytes (its 256 UTF-8 byte values)",
                            choices=("chars", "bytes"), tasks=LM)
    max_length: int = _field(256, "longest record in characters; a longer one is an error unless skip_long",
                             min=1, tasks=LINES + CLASSIFY)
    skip_long: bool = _field(False, "skip records longer than max_length (counted) instead of stopping",
                             tasks=LINES + CLASSIFY)
    condition: bool = _field(True, "learn each record given its class when the data is labelled "
                                   "(a directory of class files or a TSV)", tasks=LINES)
    class_weights: str = _field("none", "weigh each example's loss by its class: none, or balanced (every class "
                                        "the same total weight, for imbalanced data)",
                                choices=("none", "balanced"), tasks=CLASSIFY)
    attention: str = _field("additive", "the decoder's look back at the encoder states: additive (Bahdanau), "
                                        "dot or general (Luong), or none (the final state alone)",
                            choices=("additive", "dot", "general", "none"), tasks=SEQ2SEQ)
    # 128 keeps the longest batch's additive attention (target x source x hidden per pair) near 2 GB at
    # batch 64 and hidden 256; eng-fra loses 0.2% of its pairs to it.
    max_source_length: int = _field(128, "skip pairs whose source is longer (counted)", min=1, tasks=SEQ2SEQ)
    max_target_length: int = _field(128, "skip pairs whose target is longer (counted)", min=1, tasks=SEQ2SEQ)
    reverse: bool = _field(False, "swap the TSV's columns: learn the first column from the second",
                           tasks=SEQ2SEQ)
    # optimisation
    lr: float = _field(2e-3, "peak learning rate (AdamW)", above=0.0)
    weight_decay: float = _field(0.01, "AdamW decoupled weight decay", min=0.0)
    clip: float = _field(1.0, "clip the global gradient norm to this; 0 disables", min=0.0)
    schedule: str = _field("cosine", "learning-rate decay after warmup: cosine, exponential or constant",
                           choices=SCHEDULES)
    warmup_steps: int = _field(100, "steps of linear learning-rate warmup", min=0)
    min_lr_ratio: float = _field(0.1, "floor of the decay, as a fraction of lr", min=0.0, max=1.0)
    ema_decay: float = _field(0.0, "evaluate, select and save an exponential moving average of the weights "
                                   "with this decay per step (e.g. 0.999); training goes on from the weights "
                                   "themselves; 0 for none", min=0.0, below=1.0)
    max_nonfinite_steps: int = _field(20, "stop after this many NaN/inf steps in a row (each is skipped)", min=1)
    # bounds: training stops at whichever comes first
    max_steps: int | None = _field(None, "stop after this many optimiser steps; none to unset", min=1)
    epochs: int | None = _field(None, "stop after this many passes over the training text; none to unset", min=1)
    time_budget: str | None = _field("3m", "stop after this much training time, e.g. 90s, 5m, 1h; none to unset")
    patience: int | None = _field(None, "stop after this many evaluations without a new best; none to unset", min=1)
    select_by: str = _field("macro-f1", "the validation figure that picks the best checkpoint: loss, accuracy or "
                                        "macro-f1 (classify), loss or chrf (seq2seq, default chrf)",
                            choices=tuple(SELECT_BY), tasks=CLASSIFY + SEQ2SEQ)
    # evaluation and logging
    eval_every: int = _field(500, "steps between validation passes and checkpoints", min=1)
    log_every: int = _field(10, "steps between progress updates", min=1)
    sample_length: int = _field(200, "characters of sample (lm) shown at each evaluation, or with lines and "
                                     "classify or seq2seq whether to show sampled records, predictions or "
                                     "translations; 0 for none", min=0)
    # runtime
    device: str = _field("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda or mps", choices=DEVICES)
    precision: str = _field("auto", "autocast precision of training: auto (bf16 where it is faster, else fp32), "
                                    "fp32, bf16, or fp16 (GPU only, with loss scaling); weights stay fp32",
                            choices=PRECISIONS)
    dist_timeout: str = _field("10m", "multi-process training (torchrun): how long a process waits for the "
                                      "others before giving up, e.g. 30s, 10m")
    rng_seed: int = _field(1337, "seed for weights, data offsets, dropout and samples")
    engine: str = _field("torch", "torch (PyTorch's kernels) or numpy (charlm's from-scratch reference engine: "
                                  "task lm on the CPU; the same checkpoints)", choices=ENGINES)
    dtype: str = _field("float32", "numpy engine: float32, or float64 for checking and teaching",
                        choices=DTYPES)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name))
        if self.time_budget is not None:
            parse_duration(self.time_budget)
        parse_duration(self.dist_timeout, what="dist_timeout")
        if self.dropout > 0 and self.locked_dropout > 0:
            raise ConfigError("dropout and locked_dropout both drop the same activations (per step and per "
                              "sequence); use one of them and set the other to 0")
        if self.task == "seq2seq" and self.hidden_size % 2:
            raise ConfigError(f"{_label('hidden_size')} must be even for --task seq2seq (its encoder has half of it "
                              f"per direction), got {self.hidden_size}")
        if self.task in SELECT_BY_TASKS and self.select_by not in SELECT_BY_TASKS[self.task]:
            raise ConfigError(f"{_label('select_by')} {self.select_by} does not apply to --task {self.task}; use "
                              f"{' or '.join(SELECT_BY_TASKS[self.task])}")
        if self.max_steps is None and self.epochs is None and self.time_budget is None:
            raise ConfigError("no stopping bound: set max_steps, epochs or time_budget")
        self._check_engine()

    def _check_engine(self) -> None:
        """Refuse, in one line each, what the chosen engine cannot do."""
        if self.engine == "torch":
            if self.dtype != "float32":
                raise ConfigError(f"{_label('dtype')} applies to --engine numpy; the torch engine keeps "
                                  "float32 weights (see --precision); leave --dtype out")
            return
        if self.task != "lm":
            raise ConfigError(f"--engine numpy trains --task lm only, not {self.task}; use --engine torch")
        if self.precision not in ("auto", "fp32"):
            raise ConfigError(f"--engine numpy has no --precision {self.precision}: it computes in --dtype "
                              "float32 or float64; leave --precision out")
        if self.device not in ("auto", "cpu"):
            raise ConfigError(f"--engine numpy runs on the CPU, not --device {self.device}; "
                              "leave --device out, or use --engine torch")
        for name in ("weight_drop", "locked_dropout", "embedding_dropout", "tie_weights"):
            if getattr(self, name):
                raise ConfigError(f"--engine numpy has no {_label(name)} (it implements plain dropout only); "
                                  "leave it out, or use --engine torch")
        if self.ema_decay:
            raise ConfigError(f"--engine numpy has no {_label('ema_decay')}; leave it out, or use --engine torch")

    @property
    def time_budget_seconds(self) -> float | None:
        return None if self.time_budget is None else parse_duration(self.time_budget)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        return build_config(self.to_dict(), changes)


def config_help(name: str) -> str:
    """The help text of a config field, for the CLI's `--help` (with the tasks it serves, if not all)."""
    metadata = TrainConfig.__dataclass_fields__[name].metadata
    tasks = metadata.get("tasks")
    return metadata["help"] + (f" ({', '.join(tasks)} only)" if tasks else "")


def applies_to(name: str, task: str) -> bool:
    """Whether a setting means anything for a task."""
    return task in TrainConfig.__dataclass_fields__[name].metadata.get("tasks", TASKS)


def check_applicable(config: "TrainConfig", given: set[str] | list[str], preset: Mapping[str, Any] | None = None,
                     preset_path: Path | None = None) -> None:
    """Refuse settings the user gave (flags, `given`; or the preset's keys that differ from the
    defaults) that the run's task does not use. A preset's key is blamed on the preset."""
    from_preset = differing_from_defaults(preset or {}) - set(given)
    for name in [*given, *sorted(from_preset)]:
        if name in TrainConfig.__dataclass_fields__ and not applies_to(name, config.task):
            tasks = " or ".join(TrainConfig.__dataclass_fields__[name].metadata["tasks"])
            if name in from_preset:
                raise ConfigError(f"{name} = {preset[name]!r} in {preset_path or 'the --config preset'} applies to "
                                  f"--task {tasks}, not {config.task}; remove it from the preset, or use one "
                                  f"made for {config.task}")
            raise ConfigError(f"{_label(name)} applies to --task {tasks}, not {config.task}; leave it out")


def differing_from_defaults(values: Mapping[str, Any]) -> set[str]:
    """The keys of a preset that change something (a preset may spell out every default harmlessly)."""
    fields = TrainConfig.__dataclass_fields__
    return {key for key, value in values.items() if key in fields and value != fields[key].default}


def stored_value(stored: Mapping[str, Any], name: str) -> Any:
    """A setting of a config stored in a checkpoint; keys added since it was written read as their defaults."""
    return stored.get(name, TrainConfig.__dataclass_fields__[name].default)


def config_default_text(name: str) -> str:
    """A config field's default as `--help` shows it (what applies without a preset)."""
    value = TrainConfig.__dataclass_fields__[name].default
    if value is None:
        return "none"
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f"sized to the corpus (lm), else {text}" if name in SIZED_FOR_LM else text


_KIND_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string"}


def _label(name: str) -> str:
    """How an error names a setting: its config key and its flag."""
    return f"{name} (--{name.replace('_', '-')})"


def _type_name(f: dataclasses.Field) -> str:
    return str(f.type).replace(" | None", "")


def _check_field(f: dataclasses.Field, value: Any) -> None:
    name, rules, kind = f.name, f.metadata, _type_name(f)
    if value is None:
        if "None" not in str(f.type):
            raise ConfigError(f"{_label(name)} must be set")
        return
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if not ok:
        raise ConfigError(f"{_label(name)} must be {_KIND_WORDS[kind]}, got {value!r}")
    if kind == "float" and not math.isfinite(value):
        raise ConfigError(f"{_label(name)} must be a finite number, got {value!r}")
    if "choices" in rules and value not in rules["choices"]:
        raise ConfigError(f"{_label(name)} must be one of {', '.join(rules['choices'])}; got {value!r}")
    bounds = (("min", ">=", value >= rules.get("min", value)),
              ("max", "<=", value <= rules.get("max", value)),
              ("above", ">", "above" not in rules or value > rules["above"]),
              ("below", "<", "below" not in rules or value < rules["below"]))
    for rule, sign, holds in bounds:
        if rule in rules and not holds:
            raise ConfigError(f"{_label(name)} must be {sign} {rules[rule]}, got {value!r}")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}


def parse_duration(text: str, what: str = "time budget") -> float:
    """'90s', '5m', '1.5h' or plain seconds '300' -> seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        unset = "; none for no time limit" if what == "time budget" else ""
        raise ConfigError(f"{what} '{text}' is not a positive duration such as 90s, 5m or 1h{unset}")
    unit = (match.group(2) or "s").lower()
    return float(match.group(1)) * _UNIT_SECONDS[unit]


def build_config(*layers: Mapping[str, Any]) -> TrainConfig:
    """Defaults overridden by each mapping in turn; unknown keys are errors."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key not in known:
                raise ConfigError(f"unknown config key '{key}'; {unknown_key_hint(key, known)}")
            values[key] = value
    for key, value in TASK_DEFAULTS.get(values.get("task", "lm"), {}).items():
        values.setdefault(key, value)
    # TOML has no null: an empty string or "none" clears an optional bound.
    for key in BOUNDS + OPTIONAL_COUNTS:
        if isinstance(values.get(key), str) and values[key].strip().lower() in UNSET_WORDS:
            values[key] = None
    # A bare number of seconds is a duration too (time_budget = 300, as "300" already is).
    for key in ("time_budget", "dist_timeout"):
        if isinstance(values.get(key), (int, float)) and not isinstance(values[key], bool):
            values[key] = str(values[key])
    for key, value in ENGINE_AUTO.get(values.get("engine"), {}).items():
        if values.get(key, "auto") == "auto":
            values[key] = value
    return TrainConfig(**values)


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML preset into a flat mapping of config keys."""
    if path.is_dir():
        raise ConfigError(f"--config {path} is a directory; give a TOML file in it, e.g. configs/tiny.toml")
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; check the path (shipped presets are in configs/)")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        explained = isinstance(exc, tomllib.TOMLDecodeError) and explain_toml_error(text, str(exc), defaults)
        if explained:
            raise ConfigError(f"config file {path}, {explained}") from None
        raise ConfigError(f"config file {path} is not valid TOML: {exc}; fix that line (TOML is key = value)") from None
    for key, value in data.items():
        if isinstance(value, dict):
            raise ConfigError(f"config file {path}: table [{key}] is not supported; keys are flat")
    return data
