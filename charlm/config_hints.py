"""The way out of a config mistake: the key a foreign name means, and what a broken TOML line lacks.

People bring names from other tools (`learning_rate`, `n_layers`,
`block_size`) that no spelling distance leads to charlm's (`lr`,
`num_layers`, `seq_len`); a table of them does. And TOML's own message for
`learning_rate =` is "Invalid value (at line 1, column 16)": this says that
the value is missing, and which key to write.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Mapping

# Other tools' names for charlm's settings (nanoGPT, char-rnn, PyTorch's examples, Keras, ...).
SYNONYMS = {
    "learning_rate": "lr", "learningrate": "lr", "rate": "lr", "max_lr": "lr",
    "hidden": "hidden_size", "hidden_dim": "hidden_size", "rnn_size": "hidden_size", "nhid": "hidden_size",
    "n_hidden": "hidden_size", "units": "hidden_size",
    "layers": "num_layers", "n_layers": "num_layers", "nlayers": "num_layers", "n_layer": "num_layers",
    "emsize": "embedding_size", "embed_size": "embedding_size", "embedding_dim": "embedding_size",
    "n_embd": "embedding_size", "emb_size": "embedding_size",
    "bptt": "seq_len", "block_size": "seq_len", "seq_length": "seq_len", "sequence_length": "seq_len",
    "batch": "batch_size", "batchsize": "batch_size",
    "model": "cell", "rnn_type": "cell", "cell_type": "cell", "model_type": "cell",
    "seed": "rng_seed", "random_seed": "rng_seed",
    "steps": "max_steps", "max_iters": "max_steps", "iterations": "max_steps", "num_steps": "max_steps",
    "num_epochs": "epochs", "n_epochs": "epochs", "max_epochs": "epochs",
    "grad_clip": "clip", "clip_grad_norm": "clip", "gradient_clip": "clip", "max_grad_norm": "clip",
    "warmup": "warmup_steps", "warmup_iters": "warmup_steps",
    "eval_interval": "eval_every", "log_interval": "log_every", "print_every": "log_every",
    "decay": "weight_decay", "wd": "weight_decay",
    "budget": "time_budget", "time_limit": "time_budget", "max_time": "time_budget",
    "dropout_rate": "dropout",
}


def suggest_key(key: str, known: set[str]) -> str | None:
    """The config key `key` most likely means, or None."""
    plain = key.strip().lower().replace("-", "_")
    if plain in known:
        return plain
    if plain in SYNONYMS and SYNONYMS[plain] in known:
        return SYNONYMS[plain]
    close = difflib.get_close_matches(plain, known, n=1)
    return close[0] if close else None


def unknown_key_hint(key: str, known: set[str]) -> str:
    close = suggest_key(key, known)
    return f"did you mean '{close}'?" if close else "`charlm train --help` lists every setting"


_POSITION = re.compile(r"at line (\d+)")
_NO_VALUE = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=\s*(#.*)?$")


def explain_toml_error(text: str, message: str, defaults: Mapping[str, Any]) -> str | None:
    """What a TOML error at a line `key =` means (its value is missing), with the key to write; else None."""
    match = _POSITION.search(message)
    lines = text.splitlines()
    if not match or not 1 <= int(match.group(1)) <= len(lines):
        return None
    number = int(match.group(1))
    found = _NO_VALUE.match(lines[number - 1])
    if not found:
        return None
    key = found.group(1)
    meant = suggest_key(key, set(defaults))
    if meant is None:
        return f"line {number}: {key} has no value, and {key} is not a setting (`charlm train --help` lists them)"
    example = f"{meant} = {_toml(defaults[meant])}"
    if meant == key:
        return f"line {number}: {key} has no value; give one, e.g. {example}"
    return f"line {number}: {key} has no value, and the setting is called {meant}: e.g. {example}"


def _toml(value: Any) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return str(value).lower()
    return f'"{value}"' if isinstance(value, str) else repr(value)
