"""Checkpoints: safetensors for every tensor, JSON for everything else.

A run directory holds

    last.json / best.json          the commit points: config, vocabulary, corpus,
                                   step, metrics, and the names of the files below
    weights-<kind>-<step>.safetensors   model weights (fp32, CPU layout): with
                                   --ema-decay their moving average (averaging.py)
    state-<step>.safetensors       optimizer moments, RNG states, carried hidden
                                   state (and with --ema-decay the weights being
                                   trained): what an exact resume needs
    metrics.jsonl                  one JSON object per log line

Nothing here is ever unpickled, so loading a checkpoint cannot run code.
Each file is written to a temporary name, fsynced and renamed into place, and
the JSON goes last: until its rename, the previous JSON still points at the
previous, complete files. Files no JSON refers to are removed afterwards.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from charlm.engine.lock import LOCK_NAME, is_lock_file
from charlm.errors import CharlmError, CheckpointError
from charlm.files import write_atomic

FORMAT_NAME = "charlm-checkpoint"
FORMAT_VERSION = 1
KINDS = ("best", "last")
DEFAULT_ROOT = Path("checkpoints")
# What every checkpoint JSON holds, whatever task wrote it (save_checkpoint adds "weights").
_REQUIRED = ("model", "config", "weights")
# The way out of a checkpoint that cannot be used, for every message that says so.
DAMAGED = "use another checkpoint or train again"


def _tensors_to_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return save_safetensors_bytes({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})


# -- optimizer state <-> (tensors, JSON) -------------------------------------

def split_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Separate an optimizer state_dict into named tensors and a JSON-able rest."""
    tensors, scalars = {}, {}
    for param_id, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{name}"] = value
            else:
                scalars[f"{param_id}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def join_optimizer_state(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    for key, value in info["scalars"].items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in info["param_groups"]]
    return {"state": state, "param_groups": groups}


# -- saving ------------------------------------------------------------------

def save_checkpoint(run_dir: Path, kind: str, weights: dict[str, torch.Tensor], meta: dict,
                    resume_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write weights (a state dict) and, for 'last', the resume state, then commit with <kind>.json."""
    if not all(bool(torch.isfinite(t).all()) for t in weights.values() if t.is_floating_point()):
        raise CharlmError("refusing to save a checkpoint with NaN or infinite weights; lower the learning rate (--lr)")
    step = meta["step"]
    record = dict(meta, format=FORMAT_NAME, format_version=FORMAT_VERSION, kind=kind,
                  weights=f"weights-{kind}-{step:08d}.safetensors")
    write_atomic(run_dir / record["weights"], _tensors_to_bytes(weights))
    if resume_tensors is not None:
        record["state"] = f"state-{step:08d}.safetensors"
        write_atomic(run_dir / record["state"], _tensors_to_bytes(resume_tensors))
    json_path = run_dir / f"{kind}.json"
    write_atomic(json_path, json.dumps(record, indent=2, allow_nan=False).encode("utf-8"))
    _remove_unreferenced(run_dir)
    return json_path


def _remove_unreferenced(run_dir: Path) -> None:
    keep = set()
    for kind in KINDS:
        try:
            record = json.loads((run_dir / f"{kind}.json").read_text(encoding="utf-8"))
            keep.update(record.get(key) for key in ("weights", "state"))
        except (OSError, ValueError):
            continue
    for path in list(run_dir.glob("weights-*.safetensors")) + list(run_dir.glob("state-*.safetensors")):
        if path.name not in keep:
            path.unlink(missing_ok=True)


# -- loading -----------------------------------------------------------------

def _not_a_checkpoint(path: Path) -> CheckpointError:
    return CheckpointError(f"{path} is not a charlm checkpoint; pass a run directory made by charlm train, "
                           "or the best.json or last.json in it")


def _is_charlm_record(record: object) -> bool:
    return isinstance(record, dict) and record.get("format") == FORMAT_NAME


def is_run_directory(folder: Path, file_names: list[str] | None = None) -> bool:
    """Whether charlm wrote this folder as a run: its best or last JSON is a charlm checkpoint, or it
    holds charlm's lock file (a run before its first checkpoint, or one still training).

    file_names: the folder's files, when the caller has listed them already
    (a directory walk), to open nothing in folders that cannot be runs.
    """
    if (file_names is None or LOCK_NAME in file_names) and is_lock_file(folder / LOCK_NAME):
        return True
    for kind in KINDS:
        name = f"{kind}.json"
        if file_names is not None and name not in file_names:
            continue
        try:
            if _is_charlm_record(json.loads((folder / name).read_text(encoding="utf-8"))):
                return True
        except (OSError, ValueError):
            continue
    return False


def read_record(json_path: Path) -> dict:
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {json_path}: {exc.strerror}; check its permissions") from None
    except ValueError:
        # charlm writes only .json checkpoints: unparsable text under another
        # name (README.md, a weights file) was never one, so "damaged" would mislead.
        if json_path.suffix != ".json":
            raise _not_a_checkpoint(json_path) from None
        raise CheckpointError(f"checkpoint {json_path} is damaged: not valid JSON; {DAMAGED}") from None
    if not _is_charlm_record(record):
        raise _not_a_checkpoint(json_path)
    if record.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {json_path} has format version {record.get('format_version')!r}; "
            f"this charlm reads version {FORMAT_VERSION}; open it with the charlm that wrote it, or train again"
        )
    missing = [key for key in _REQUIRED if key not in record]
    if missing:  # named here: a KeyError later read "damaged: 'model'"
        raise CheckpointError(f"checkpoint {json_path} is damaged: it lacks {', '.join(map(repr, missing))}; "
                              f"{DAMAGED}")
    return record


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file (never a pickle), with a one-line error when it is damaged."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}; check its permissions") from None
    try:
        return load_safetensors_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({exc}); {DAMAGED}") from None


def resolve_checkpoint(path: Path | None, root: Path = DEFAULT_ROOT, kind: str = "best") -> Path:
    """A run directory, a checkpoint JSON, or None for the newest run under `root` -> a JSON path."""
    if path is None:
        path = find_latest_run(root)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (runs are saved under {root}/)")
    for name in (f"{kind}.json", "last.json", "best.json"):
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"{path} holds no checkpoint (no best.json or last.json); "
                          "pass a run directory made by charlm train")


def find_latest_run(root: Path = DEFAULT_ROOT) -> Path:
    runs = [p.parent for p in root.glob("*/last.json")] if root.is_dir() else []
    if not runs:
        raise CheckpointError(f"no trained runs under {root}/; train one first (charlm train) "
                              "or pass --checkpoint DIR")
    return max(runs, key=lambda run: (run / "last.json").stat().st_mtime)


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(extra)}"] if extra else [])
        raise CheckpointError(f"{source} does not match the model: {'; '.join(parts)}; {DAMAGED}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(f"{source}: tensor {name} has shape {tuple(tensor.shape)}, "
                                  f"the model needs {tuple(expected[name].shape)}; {DAMAGED}")
    model.load_state_dict(tensors)


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: store them as null."""
    return value if value is not None and math.isfinite(value) else None
