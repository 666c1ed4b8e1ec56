"""Exact resume across real process deaths: SIGKILL at a random step, Ctrl-C, SIGTERM."""

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from charlm.engine.checkpoint import read_tensors
from charlm.runs import load_checkpoint
from conftest import REPO

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13}.\n" for i in range(300))
# Long enough to be killed part-way, short enough for CI; dropout exercises the RNG restore.
FLAGS = ["--config", str(REPO / "configs" / "tiny.toml"), "--max-steps", "300", "--eval-every", "25",
         "--num-layers", "2", "--dropout", "0.2", "--sample-length", "0", "--device", "cpu"]


def _train(cwd, out, *extra, wait=True):
    argv = [sys.executable, "-m", "charlm", "train", *([] if "--resume" in extra else ["corpus.txt"]),
            "--out", out, *FLAGS, *extra]
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        out_text, err_text = proc.communicate(timeout=300)
        assert proc.returncode == 0, err_text
    return proc


def _final_weights(run_dir):
    record = json.loads((run_dir / "last.json").read_text())
    return read_tensors(run_dir / record["weights"]), record


def _last_logged_step(metrics):
    for line in reversed(metrics.read_text().splitlines()):
        try:
            return json.loads(line)["step"]
        except ValueError:
            continue  # a line still being written
    return 0


def _wait_for_step(run_dir, step, proc, replay="", timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "metrics.jsonl").exists() and _last_logged_step(run_dir / "metrics.jsonl") >= step:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended before step {step}{replay}: {proc.stderr.read()}")
        time.sleep(0.005)
    pytest.fail(f"step {step} not reached in {timeout}s{replay}")


@pytest.fixture
def stop_step():
    """Draw the step to stop at from a seeded generator; CHARLM_STOP_SEED=N replays a failure."""
    seed = int(os.environ.get("CHARLM_STOP_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    replay = f" (replay: CHARLM_STOP_SEED={seed})"
    print(f"stop step drawn with{replay}")  # shown with a failure's captured output
    return lambda low, high: (rng.randint(low, high), replay)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """The reference: the same run, never interrupted."""
    root = tmp_path_factory.mktemp("straight")
    (root / "corpus.txt").write_text(TEXT)
    _train(root, "run")
    return _final_weights(root / "run")


def _assert_same_weights(reference, run_dir, replay=""):
    expected, expected_record = reference
    got, record = _final_weights(run_dir)
    assert record["step"] == expected_record["step"] == 300, replay
    assert expected.keys() == got.keys(), replay
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs after resume{replay}"


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(tmp_path, straight_run, stop_step):
    (tmp_path / "corpus.txt").write_text(TEXT)
    kill_at, replay = stop_step(30, 270)
    proc = _train(tmp_path, "run", wait=False)
    _wait_for_step(tmp_path / "run", kill_at, proc, replay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((tmp_path / "run" / "last.json").read_text())["step"]
    assert 0 < killed_at < 300, f"killed near step {kill_at}, checkpoint at {killed_at}{replay}"
    resumed = _train(tmp_path, "run", "--resume")
    assert resumed.returncode == 0, replay
    _assert_same_weights(straight_run, tmp_path / "run", replay)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if "train_loss" in line]
    assert steps == list(range(5, 301, 5)), f"metrics.jsonl must be appended, not duplicated{replay}"


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_clean_stop_saves_then_resume_is_bitwise_identical(tmp_path, straight_run, signum, code, stop_step):
    (tmp_path / "corpus.txt").write_text(TEXT)
    stop_at, replay = stop_step(30, 200)
    proc = _train(tmp_path, "run", wait=False)
    _wait_for_step(tmp_path / "run", stop_at, proc, replay)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err + replay
    assert "charlm train --resume --out run" in err and "Traceback" not in err, err + replay
    stopped = json.loads((tmp_path / "run" / "last.json").read_text())["step"]
    assert 0 < stopped < 300 and f"interrupted after {stopped} steps" in out, replay  # saved where it stopped
    _train(tmp_path, "run", "--resume")
    _assert_same_weights(straight_run, tmp_path / "run", replay)


@pytest.mark.slow
def test_resume_refuses_a_changed_model_or_corpus(tmp_path, straight_run):
    (tmp_path / "corpus.txt").write_text(TEXT)
    proc = _train(tmp_path, "run", "--max-steps", "25")
    changed = subprocess.run([sys.executable, "-m", "charlm", "train", "--resume", "--out", "run",
                              "--hidden-size", "64"], cwd=tmp_path, capture_output=True, text=True)
    assert changed.returncode == 1 and "--hidden-size cannot change when resuming" in changed.stderr
    (tmp_path / "corpus.txt").write_text(TEXT + "edited")
    moved = subprocess.run([sys.executable, "-m", "charlm", "train", "--resume", "--out", "run"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert moved.returncode == 1 and "not the one this run was trained on" in moved.stderr
    assert proc.returncode == 0 and load_checkpoint(tmp_path / "run").record["step"] == 25


class _Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_pickled_state_file_without_running_it(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT)
    _train(tmp_path, "run", "--max-steps", "25")
    run, marker = tmp_path / "run", tmp_path / "MARKER"
    state = run / json.loads((run / "last.json").read_text())["state"]
    assert state.name.startswith("state-") and state.suffix == ".safetensors"
    pickle.loads(pickle.dumps(_Payload(tmp_path / "canary")))  # the payload is live: unpickling it does run
    assert (tmp_path / "canary").exists()
    torch.save({"optimizer": _Payload(marker)}, state)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    done = subprocess.run([sys.executable, "-m", "charlm", "train", "--resume", "--out", "run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("charlm: error: ") and f"{state.name} is damaged or not a safetensors file" in lines[0]
    assert not marker.exists()
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing trimmed or rewritten
