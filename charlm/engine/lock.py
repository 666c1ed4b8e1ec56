"""One process per run directory: an OS lock on a file inside it, held for the whole run.

Two `charlm train --out R` at once (or a `--resume` while the run still
trains) would interleave their metrics and overwrite each other's
checkpoints. So a run holds `fcntl.flock` on `R/charlm.lock` from before it
writes anything until it ends; the file holds the holder's PID, so the
second process can say who has the directory. The kernel drops the lock when
its process dies, however it dies: a SIGKILL never leaves a stale lock, and
nothing has to be cleaned up by hand. The file itself stays (a run directory
keeps it, with the PID of its last holder): deleting a lock file that others
may have open would let two processes hold "the" lock on two different files.

Under torchrun, rank 0 holds the lock for all the processes of its run.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from charlm.errors import RunDirectoryError

LOCK_NAME = "charlm.lock"
_SIGNATURE = "charlm run lock"
# A process that takes the lock writes its PID a moment later, and a process that
# only looks (holder()) holds it for an instant: a refused attempt retries this long.
_RETRY_SECONDS = 0.25


def holder(run_dir: Path) -> int | None:
    """The PID of the process that holds run_dir's lock (0 when it has not said yet), or None when free.

    Writes nothing: a directory that was never a run is not touched.
    """
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # no lock file (or none we can open): nobody holds it through charlm
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def is_lock_file(path: Path) -> bool:
    """Whether `path` is a lock file charlm wrote (a directory walk uses this to recognise a run)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(_SIGNATURE)) == _SIGNATURE.encode()
    except OSError:
        return False


def in_use_error(run_dir: Path, pid: int | None) -> RunDirectoryError:
    who = f"another charlm process (PID {pid})" if pid else "another charlm process"
    return RunDirectoryError(f"run directory {run_dir} is in use by {who}; wait for it to finish or stop it "
                             "(then continue with --resume), or choose another --out")


class RunLock:
    """The held lock of one run directory; release() (or the process's end) lets it go."""

    def __init__(self, run_dir: Path, fd: int, created: list[Path]):
        self.run_dir, self.fd, self.created = run_dir, fd, created

    @classmethod
    def acquire(cls, run_dir: Path) -> "RunLock":
        """Create run_dir if needed, take its lock and write this PID into it.

        Raises RunDirectoryError naming the holder's PID when another process has it.
        """
        created = _make_directories(run_dir)
        path = run_dir / LOCK_NAME
        created_file = not path.exists()
        deadline = time.monotonic() + _RETRY_SECONDS
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                _remove_created(created)
                raise RunDirectoryError(f"cannot write in run directory {run_dir}: {exc.strerror}; "
                                        "check its permissions or choose another --out") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                pid = _read_pid(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    _remove_created(created + ([path] if created_file else []))
                    raise RunDirectoryError(f"cannot lock run directory {run_dir}: {exc.strerror}; "
                                            "choose another --out on a local disk") from None
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                _remove_created(created)
                raise in_use_error(run_dir, pid) from None
            if _same_file(fd, path):
                break
            os.close(fd)  # locked a file that was removed meanwhile: take the one in its place
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{_SIGNATURE}\npid {os.getpid()}\n".encode(), 0)
        return cls(run_dir, fd, created + ([path] if created_file else []))

    def release(self, discard: bool = False) -> None:
        """Let the lock go. discard: also remove the lock file and the folders acquire() made
        (a run that never got going leaves nothing behind)."""
        if self.fd < 0:
            return
        if discard:
            _remove_created(self.created)
        os.close(self.fd)  # closing drops the lock
        self.fd = -1


def _read_pid(fd: int) -> int:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace")
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("pid ") and line[4:].strip().isdigit():
            return int(line[4:].strip())
    return 0


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _make_directories(run_dir: Path) -> list[Path]:
    """Create run_dir and any missing parents; return those created, outermost first."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirectoryError(f"--out {run_dir} is a file, not a directory; choose a directory with --out")
    missing = []
    folder = run_dir
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirectoryError(f"cannot create run directory {run_dir}: {exc.strerror}; "
                                "choose another with --out") from None
    return list(reversed(missing))


def _remove_created(created: list[Path]) -> None:
    """Remove what acquire() created, innermost first; a folder that is no longer empty stays."""
    for path in reversed(created):
        try:
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass
