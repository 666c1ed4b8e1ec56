"""What a run directory holds, and taking one for a run: free, an unfinished start, a run, or something else.

charlm writes, in order: the lock file (lock.py), `start.json` (the run's
settings and data, before the first step), `metrics.jsonl`, and at each
evaluation the checkpoint files, `best.json` and `last.json` last of all. A
directory that holds nothing but the first of these and no checkpoint JSON
is an *unfinished start*: a run that was killed before its first checkpoint.
Nothing in it can be resumed, so a new run may take it over, and `--resume`
starts that run again from scratch with the settings in its `start.json`.
A directory with anything charlm did not write is never trained into.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from charlm.engine.checkpoint import KINDS
from charlm.engine.lock import LOCK_NAME, RunLock, holder, in_use_error, is_lock_file
from charlm.errors import CheckpointError, RunDirectoryError
from charlm.files import write_atomic

START_NAME = "start.json"
START_FORMAT = "charlm-start"
# Every name charlm writes in a run directory before its first checkpoint JSON,
# and the temporary names (".NAME.partial") those files are written under.
_NAMES = (r"charlm\.lock|start\.json|metrics\.jsonl|weights-(?:best|last)-\d+\.safetensors|"
          r"state-\d+\.safetensors|best\.json|last\.json")
_CHARLM_FILE = re.compile(rf"^(?:{_NAMES}|\.(?:{_NAMES})\.partial)$")

FREE, UNFINISHED, RUN, FOREIGN = "free", "unfinished", "run", "foreign"


@dataclass(frozen=True)
class Contents:
    kind: str  # free | unfinished | run | foreign
    leftovers: tuple[Path, ...] = ()  # an unfinished start's files (the lock file aside)
    stranger: str = ""  # for foreign: the name of one file charlm did not write


def inspect(run_dir: Path) -> Contents:
    """Classify run_dir (which may not exist); reads names only. A file in its place is an error."""
    if not run_dir.exists():
        return Contents(FREE)
    if not run_dir.is_dir():
        raise RunDirectoryError(f"--out {run_dir} is a file, not a directory; choose a directory with --out")
    try:
        entries = sorted(run_dir.iterdir())
    except OSError as exc:
        raise RunDirectoryError(f"cannot read run directory {run_dir}: {exc.strerror}; "
                                "check its permissions or choose another --out") from None
    names = {entry.name for entry in entries}
    if any(f"{kind}.json" in names for kind in KINDS):
        return Contents(RUN)
    strangers = [entry.name for entry in entries if not (entry.is_file() and _CHARLM_FILE.match(entry.name))]
    if strangers:
        return Contents(FOREIGN, stranger=strangers[0])
    leftovers = tuple(entry for entry in entries if entry.name != LOCK_NAME)
    if leftovers and not is_lock_file(run_dir / LOCK_NAME):
        # charlm writes its lock file before anything else, and a kill leaves it: without it, a
        # metrics.jsonl or start.json is another tool's (common names), not an unfinished start.
        return Contents(FOREIGN, stranger=leftovers[0].name)
    return Contents(UNFINISHED, leftovers) if leftovers else Contents(FREE)


def refuse_if_held(run_dir: Path) -> None:
    """A one-line error naming the PID when another process holds run_dir (writes nothing)."""
    if run_dir.is_dir():
        pid = holder(run_dir)
        if pid is not None:
            raise in_use_error(run_dir, pid)


def half_saved(run_dir: Path) -> bool:
    """Whether the run's first checkpoint was cut off between `best` and `last` (a kill, a second Ctrl-C):
    a model to use, but nothing to resume from."""
    return (run_dir / "best.json").is_file() and not (run_dir / "last.json").exists()


def half_saved_error(run_dir: Path) -> RunDirectoryError:
    return RunDirectoryError(f"{run_dir} holds a model (best.json) but no resume state (last.json): its run was "
                             "stopped while saving its first checkpoint, so it cannot be continued; sample or "
                             "evaluate it there, and train again with another --out")


def check_fresh(run_dir: Path) -> None:
    """Refuse a directory a new run must not train into (see the module docstring)."""
    refuse_if_held(run_dir)
    contents = inspect(run_dir)
    if contents.kind == RUN and half_saved(run_dir):
        raise half_saved_error(run_dir)
    if contents.kind == RUN:
        raise RunDirectoryError(f"run directory {run_dir} already exists; continue it with --resume "
                                "or choose another with --out")
    if contents.kind == FOREIGN:
        raise _foreign_error(run_dir, contents.stranger)


def _foreign_error(run_dir: Path, stranger: str) -> RunDirectoryError:
    return RunDirectoryError(f"--out {run_dir} holds files charlm did not write ({stranger}); "
                             "choose an empty or new directory with --out")


def read_start(run_dir: Path) -> dict | None:
    """The start record of an unfinished start in run_dir, or None if there is none."""
    path = run_dir / START_NAME
    if not path.is_file() or any((run_dir / f"{kind}.json").exists() for kind in KINDS):
        return None  # a checkpoint was written: not an unfinished start
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise CheckpointError(f"{path} is damaged, so the run's settings are lost; start a new run "
                              "without --resume (it takes the directory over)") from None
    if not isinstance(record, dict) or record.get("format") != START_FORMAT or "config" not in record:
        raise CheckpointError(f"{path} is not a charlm start record; start a new run without --resume "
                              "or choose another --out")
    return record


@dataclass
class Claim:
    """A run directory held by this process: its lock, and what taking it said."""

    lock: RunLock
    notice: str | None  # one line for people when an unfinished start was taken over
    fresh: bool  # a new run (or one started again from scratch): no checkpoint of its own yet
    took_over: bool  # the directory held an unfinished start, whose start.json is kept if this one fails too

    def release(self) -> None:
        """Let the directory go; a fresh run that saved no checkpoint leaves nothing of its own behind."""
        run_dir = self.lock.run_dir
        if self.fresh and not (run_dir / "last.json").exists():
            for entry in inspect(run_dir).leftovers:
                if not (self.took_over and entry.name == START_NAME):
                    entry.unlink(missing_ok=True)
            self.lock.release(discard=not self.took_over)
        else:
            self.lock.release()


def claim(run_dir: Path, resumed_step: int | None, start_record: dict) -> Claim:
    """Take run_dir's lock and check again under it; clear an unfinished start; write start.json.

    resumed_step: the step of the checkpoint a resume was checked against
    (None for a new run, or a restart from scratch). The checks before this
    wrote nothing; they are repeated under the lock because another run may
    have started or saved in between.
    """
    lock = RunLock.acquire(run_dir)
    try:
        contents = inspect(run_dir)
        if resumed_step is not None:
            step = _last_step(run_dir)
            if step != resumed_step:
                raise RunDirectoryError(f"the run in {run_dir} moved on (to step {step}) while this one "
                                        "started; run the command again")
            return Claim(lock, None, fresh=False, took_over=False)
        if contents.kind == RUN:
            raise RunDirectoryError(f"run directory {run_dir} was written by another run while this one "
                                    "started; continue it with --resume or choose another with --out")
        if contents.kind == FOREIGN:
            raise _foreign_error(run_dir, contents.stranger)
        notice = None
        if contents.kind == UNFINISHED:
            for entry in contents.leftovers:
                entry.unlink(missing_ok=True)
            notice = (f"the run in {run_dir} stopped before its first checkpoint; "
                      + ("starting it again from scratch with its settings" if start_record.get("restart") else
                         "starting afresh there"))
        record = {key: value for key, value in start_record.items() if key != "restart"}
        write_atomic(run_dir / START_NAME, json.dumps(dict(record, format=START_FORMAT), indent=2).encode())
        return Claim(lock, notice, fresh=True, took_over=contents.kind == UNFINISHED)
    except BaseException:
        lock.release(discard=True)
        raise


def _last_step(run_dir: Path) -> int | None:
    try:
        return json.loads((run_dir / "last.json").read_text(encoding="utf-8")).get("step")
    except (OSError, ValueError, AttributeError):
        return None
