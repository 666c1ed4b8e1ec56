"""Writing files so that an interruption never leaves one half-written.

Every file charlm writes for a run (checkpoints, the corpus cache, the
metrics log) goes through here: a temporary name, fsync, rename, fsync of the
folder. Any OS error becomes one line that says how to get out of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from charlm.errors import RunDirectoryError


def write_atomic(path: Path, data: bytes) -> None:
    """Write data so that `path` is either its old content or the new, never half."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise RunDirectoryError(f"cannot write {path}: {exc.strerror or exc}; free some space or check "
                                "the folder's permissions") from None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_jsonl(path: Path, record: dict) -> None:
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    except OSError as exc:
        raise RunDirectoryError(f"cannot write {path}: {exc.strerror or exc}; free some space or check "
                                "the folder's permissions") from None
