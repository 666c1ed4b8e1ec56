"""Run directories: a run killed before its first checkpoint is no dead end; nothing else is trained into."""

import json
import shutil
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from charlm.cli import app
from charlm.engine.rundir import FOREIGN, FREE, RUN, UNFINISHED, inspect
from conftest import REPO

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 40
TINY = str(REPO / "configs" / "tiny.toml")


@pytest.fixture(scope="module")
def killed_start(tmp_path_factory):
    """A run directory whose run was SIGKILLed after some steps, before its first checkpoint."""
    root = tmp_path_factory.mktemp("killed")
    (root / "fox.txt").write_text(TEXT)
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "train", "fox.txt", "--out", "run", "--config", TINY,
                             "--max-steps", "none", "--epochs", "100000", "--eval-every", "100000",
                             "--sample-length", "0", "--device", "cpu"],
                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = root / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert inspect(root / "run").kind == UNFINISHED
    return root


def _copy(killed_start, tmp_path, monkeypatch):
    shutil.copytree(killed_start, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "run"


def test_a_new_run_takes_over_a_run_killed_before_its_first_checkpoint(killed_start, tmp_path, monkeypatch):
    run = _copy(killed_start, tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["train", "fox.txt", "--out", "run", "--config", TINY, "--max-steps", "10",
                                      "--sample-length", "0"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "stopped before its first checkpoint" in line]
    assert notes == ["charlm: note: the run in run stopped before its first checkpoint; starting afresh there"]
    assert json.loads((run / "last.json").read_text())["step"] == 10
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[0] == 5  # the killed run's lines are gone


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_again_with_its_settings(
        killed_start, tmp_path, monkeypatch):
    run = _copy(killed_start, tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["train", "--resume", "--out", "run", "--max-steps", "10"])
    assert result.exit_code == 0, result.output
    assert "starting it again from scratch with its settings" in result.stderr
    config = json.loads((run / "last.json").read_text())["config"]
    assert config["hidden_size"] == 32 and config["epochs"] == 100000  # tiny.toml's and the killed run's flags
    assert config["max_steps"] == 10


def test_what_a_run_directory_holds(tmp_path):
    assert inspect(tmp_path / "new").kind == FREE
    (tmp_path / "empty").mkdir()
    assert inspect(tmp_path / "empty").kind == FREE
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    (tmp_path / "mine" / "metrics.jsonl").write_text("")
    assert inspect(tmp_path / "mine").kind == FOREIGN
    (tmp_path / "started").mkdir()
    for name in ("charlm.lock", "start.json", "metrics.jsonl", ".weights-best-00000500.safetensors.partial"):
        (tmp_path / "started" / name).write_text("")
    assert inspect(tmp_path / "started").kind == UNFINISHED
    (tmp_path / "started" / "last.json").write_text("{}")
    assert inspect(tmp_path / "started").kind == RUN


def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_nothing_behind(tmp_path, text_file, tiny_config,
                                                                                 monkeypatch):
    from charlm.engine.loop import train
    from charlm.tasks.lm.task import LanguageModelTask
    from charlm.text.corpus import read_corpus

    def fails(*args, **kwargs):
        raise RuntimeError("a bug in the third step")

    task = LanguageModelTask(read_corpus(text_file()), tiny_config)
    calls = []
    real_loss = LanguageModelTask.loss
    monkeypatch.setattr(LanguageModelTask, "loss",
                        lambda self, *a, **k: fails() if calls.append(1) or len(calls) == 3 else real_loss(self, *a, **k))
    with pytest.raises(RuntimeError, match="third step"):
        list(train(task, tmp_path / "runs" / "new"))
    assert not (tmp_path / "runs").exists()
