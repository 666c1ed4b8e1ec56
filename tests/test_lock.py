"""One process per run directory: a second run on a held directory is refused, naming the holder's PID."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from charlm.engine.checkpoint import is_run_directory
from charlm.engine.lock import RunLock, holder
from charlm.errors import RunDirectoryError
from conftest import REPO

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 40
TINY = str(REPO / "configs" / "tiny.toml")

# Another process that takes the lock and keeps it (lock.py imports no torch: it starts at once).
HOLD = """
import sys, time
from pathlib import Path
from charlm.engine.lock import RunLock
RunLock.acquire(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def held(tmp_path):
    """A run directory held by another live process; yields (directory, that process)."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield run_dir, proc
    finally:
        proc.kill()
        proc.wait()


def test_a_held_directory_is_refused_naming_the_pid_and_freed_when_its_holder_is_killed(held):
    run_dir, proc = held
    assert holder(run_dir) == proc.pid
    with pytest.raises(RunDirectoryError, match=f"in use by another charlm process \\(PID {proc.pid}\\)"):
        RunLock.acquire(run_dir)
    assert is_run_directory(run_dir)  # a walk over its parent leaves it out, checkpoint or not
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel drops the lock
    proc.wait()
    assert holder(run_dir) is None
    lock = RunLock.acquire(run_dir)
    assert holder(run_dir) == os.getpid()
    lock.release()
    assert holder(run_dir) is None


def test_train_on_a_held_directory_writes_nothing_and_names_the_pid(held, text_file, tiny_config):
    from charlm.engine.loop import train
    from charlm.tasks.lm.task import LanguageModelTask
    from charlm.text.corpus import read_corpus

    run_dir, proc = held
    before = sorted(p.name for p in run_dir.iterdir())
    for resume in (False, True):
        with pytest.raises(RunDirectoryError, match=f"PID {proc.pid}"):
            list(train(LanguageModelTask(read_corpus(text_file()), tiny_config), run_dir, resume=resume))
    assert sorted(p.name for p in run_dir.iterdir()) == before


def _charlm(*args, cwd, wait=True):
    proc = subprocess.Popen([sys.executable, "-m", "charlm", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if wait:
        proc.communicate(timeout=300)
    return proc


@pytest.mark.slow
def test_two_charlm_runs_on_one_directory_the_second_is_refused_and_the_first_is_untouched(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT)
    (tmp_path / "b.txt").write_text(TEXT.upper())
    first = _charlm("train", "a.txt", "--out", "R", "--config", TINY, "--max-steps", "none", "--epochs", "100000",
                    "--sample-length", "0", "--device", "cpu", cwd=tmp_path, wait=False)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "R" / "last.json").exists():  # the first run has saved a checkpoint
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.05)
        for argv in (["train", "b.txt", "--out", "R", "--config", TINY], ["train", "--resume", "--out", "R"]):
            second = subprocess.run([sys.executable, "-m", "charlm", *argv], cwd=tmp_path, capture_output=True,
                                    text=True, timeout=300)
            lines = second.stderr.strip().splitlines()
            assert second.returncode == 1 and len(lines) == 1, second.stderr
            assert f"run directory R is in use by another charlm process (PID {first.pid})" in lines[0]
            assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)  # saves, then exits
        first.communicate(timeout=120)
    assert first.returncode == 143
    steps = [json.loads(line)["step"] for line in (tmp_path / "R" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # one run's lines, not two interleaved
    record = json.loads((tmp_path / "R" / "last.json").read_text())
    assert record["corpus"]["files"][0]["path"].endswith("a.txt")  # the second run overwrote nothing
