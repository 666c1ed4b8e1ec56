"""`--engine numpy` inside charlm: the same loop, files and commands as the torch engine, checked against it.

The torch engine is the oracle here, and the numpy engine the one for the torch engine in
tests/test_numpy_rnn.py: the two share no arithmetic, so agreement to 1e-8 in float64 over 50
steps of the real loop (data layout, carried state, schedule, clipping, AdamW) means each
computes what it claims.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlm.cli import app
from charlm.config import build_config
from charlm.engine.checkpoint import read_tensors
from charlm.engine.distributed import World
from charlm.engine.events import Evaluated, RunStarted, StepProgress
from charlm.engine.loop import train
from charlm.errors import CharlmError, ConfigError
from charlm.numpy_rnn.network import forward as numpy_forward
from charlm.runs import load_checkpoint
from charlm.tasks.lm.model import CharRNN, ModelSpec
from charlm.tasks.lm.task import LanguageModelTask
from charlm.text.corpus import read_corpus
from conftest import REPO

TEXT = "".join(f"The line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13}.\n" for i in range(40))
CELLS = ["rnn", "lstm", "gru"]
# Two layers, so the carried state and the layer-to-layer gradients take part; precision fp32 so
# the torch side does not autocast to bf16 on a CPU with AMX.
SETTINGS = {"hidden_size": 24, "num_layers": 2, "embedding_size": 12, "seq_len": 16, "batch_size": 4,
            "lr": 0.01, "warmup_steps": 5, "clip": 0.5, "max_steps": 50, "time_budget": "none",
            "eval_every": 25, "log_every": 1, "sample_length": 0, "device": "cpu", "precision": "fp32"}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: a second torch thread only waits on the busy shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(**changes):
    return build_config(SETTINGS, changes)


def run(corpus, config, run_dir, double=False, **kwargs):
    """Train through the one loop; double=True runs the torch engine's model in float64 (tests only)."""
    task = LanguageModelTask(read_corpus(corpus), config)
    if double:
        # The same fp32 initial weights the numpy engine starts from, then float64 all the way:
        # the lm task keeps a float64 model's loss and carry in float64.
        task.build_model = lambda: CharRNN(task.spec()).double()
    return list(train(task, run_dir, **kwargs))


def train_losses(events):
    return np.array([e.train_loss for e in events if isinstance(e, StepProgress)])


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


# -- against the torch engine -----------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-8), ("float32", 1e-4)])
def test_fifty_steps_give_the_torch_engines_losses_and_checkpoint(tmp_path, corpus, cell, dtype, tolerance):
    """Measured (max |difference| over the 50 losses): float64 9e-16, float32 5e-7; logits from the
    checkpoints 0 (float64) and 1e-6 (float32); validation 3e-7 (both fp32 passes, the torch side's on
    float64 weights)."""
    ours = run(corpus, config(cell=cell, engine="numpy", dtype=dtype), tmp_path / "numpy")
    theirs = run(corpus, config(cell=cell), tmp_path / "torch", double=dtype == "float64")
    assert ours[0].precision == f"{dtype}, numpy engine" and theirs[0].precision == "fp32"
    our_losses, their_losses = train_losses(ours), train_losses(theirs)
    assert len(our_losses) == 50 and our_losses[-1] < our_losses[0] - 0.5  # every step, and it learned
    assert np.abs(our_losses - their_losses).max() <= tolerance
    # Validation runs the torch model on the numpy weights: the torch engine's figures, to fp32 rounding.
    our_val, their_val = ([e.metrics["val_loss"] for e in events if isinstance(e, Evaluated)]
                          for events in (ours, theirs))
    assert len(our_val) == 2 and np.abs(np.array(our_val) - np.array(their_val)).max() <= 1e-6

    numpy_run = load_checkpoint(tmp_path / "numpy", kind="last")
    torch_run = load_checkpoint(tmp_path / "torch", kind="last")
    assert numpy_run.record["engine"] == "numpy" and numpy_run.record["dtype"] == dtype
    assert torch_run.record["engine"] == "torch"
    x = numpy_run.vocab.encode(TEXT[:64])[0].reshape(4, 16).T  # (T, B)
    with torch.no_grad():
        our_logits, their_logits = numpy_run.model(x)[0], torch_run.model(x)[0]  # both fp32, as loaded
    assert (our_logits - their_logits).abs().max().item() <= 1e-5


def test_the_carried_state_matters(tmp_path, corpus):
    """The agreement above includes the carry: a numpy run that drops it drifts off the torch curve."""
    from charlm.engine import numpy_step

    settings = config(cell="gru", engine="numpy", dtype="float64", max_steps=10)
    theirs = train_losses(run(corpus, settings.replace(engine="torch", dtype="float32"), tmp_path / "torch",
                              double=True))
    real_step = numpy_step.NumpyOptimisation.step
    forgetful = lambda self, task, batch, carry, lr, agree: real_step(self, task, batch, None, lr, agree)  # noqa: E731
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(numpy_step.NumpyOptimisation, "step", forgetful)
        ours = train_losses(run(corpus, settings, tmp_path / "numpy"))
    assert ours[0] == pytest.approx(theirs[0], abs=1e-8)  # the first window starts from zeros either way
    assert np.abs(ours - theirs).max() > 1e-3


# -- dropout: the torch model's semantics, in distribution ---------------------------------------------

def test_dropout_matches_the_torch_models_in_distribution():
    """nn.GRU's dropout between layers plus CharRNN's before the head: every layer's output dropped.

    Each of 4,000 streams reads the same text with its own masks, so the spread of the logits
    across streams is the distribution of one position's logits under dropout.
    """
    spec = ModelSpec(vocab_size=6, cell="gru", hidden_size=8, num_layers=2, embedding_size=4, dropout=0.3)
    torch.manual_seed(0)
    model = CharRNN(spec).double().train()
    params = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    streams = 4000
    x = np.tile(np.array([[1], [4], [2], [5], [0]]), (1, streams))  # (T, S)
    ours = numpy_forward(params, x, None, "gru", 0.3, np.random.default_rng(0))[0]  # (T, S, V)
    with torch.no_grad():
        theirs = model(torch.from_numpy(x))[0].numpy()
        model.dropout.p = 0.0  # only between layers: a different distribution the test must tell apart
        between_only = model(torch.from_numpy(x))[0].numpy()

    def same_distribution(a, b):
        error = np.sqrt((a.var(axis=1) + b.var(axis=1)) / streams)  # of the difference of two means
        means = np.abs(a.mean(axis=1) - b.mean(axis=1)) <= 5 * error
        spreads = np.abs(a.std(axis=1) / b.std(axis=1) - 1) <= 0.1
        return bool(means.all() and spreads.all())

    assert same_distribution(ours, theirs)
    assert not same_distribution(ours, between_only)


# -- exact resume --------------------------------------------------------------------------------------

def state_tensors(run_dir):
    record = json.loads((run_dir / "last.json").read_text())
    return read_tensors(run_dir / record["weights"]), read_tensors(run_dir / record["state"]), record


def test_interrupted_float64_run_resumes_bitwise(tmp_path, corpus):
    """Weights (float64, from the state file), Adam moments, the dropout generator and the carried state."""
    settings = config(engine="numpy", dtype="float64", cell="lstm", dropout=0.2, max_steps=40, eval_every=10)
    straight = run(corpus, settings, tmp_path / "straight")
    polls = iter(range(10**6))
    events = run(corpus, settings, tmp_path / "resumed", stop_requested=lambda: next(polls) >= 13)
    assert events[-1].reason == "interrupted" and 0 < events[-1].step < 40
    resumed = run(corpus, settings, tmp_path / "resumed", resume=True)
    assert resumed[0].resumed_from_step == events[-1].step
    weights, state, record = state_tensors(tmp_path / "straight")
    weights_again, state_again, record_again = state_tensors(tmp_path / "resumed")
    assert record["step"] == record_again["step"] == 40
    assert any(name.startswith("params.") and tensor.dtype == torch.float64 for name, tensor in state.items())
    for expected, got in ((weights, weights_again), (state, state_again)):
        assert expected.keys() == got.keys()
        for name in expected:
            assert torch.equal(expected[name], got[name]), name
    assert record["trainer"]["numpy_rng"] == record_again["trainer"]["numpy_rng"]
    tail = train_losses(straight)[-len(train_losses(resumed)):]
    assert np.array_equal(train_losses(resumed), tail)  # the carry and the masks pick up where they were


def _cli_train(cwd, *extra, wait=True):
    argv = [sys.executable, "-m", "charlm", "train", *([] if "--resume" in extra else ["corpus.txt"]), "--out",
            "run", "--config", str(REPO / "configs" / "tiny.toml"), "--engine", "numpy", "--num-layers", "2",
            "--dropout", "0.2", "--max-steps", "300", "--eval-every", "25", "--sample-length", "0", *extra]
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    return proc


def _last_logged_step(metrics):
    for line in reversed(metrics.read_text().splitlines()):
        try:
            return json.loads(line)["step"]
        except ValueError:
            continue  # a line still being written
    return 0


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(tmp_path):
    seed = int(os.environ.get("CHARLM_STOP_SEED") or random.SystemRandom().randrange(2**32))
    # Numpy's tiny steps take milliseconds: stop well before the end, or the run may finish first.
    kill_at, replay = random.Random(seed).randint(30, 200), f" (replay: CHARLM_STOP_SEED={seed})"
    for folder in ("straight", "killed"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "corpus.txt").write_text(TEXT)
    _cli_train(tmp_path / "straight")
    proc = _cli_train(tmp_path / "killed", wait=False)
    metrics = tmp_path / "killed" / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and _last_logged_step(metrics) >= kill_at):
        assert proc.poll() is None and time.monotonic() < deadline, f"step {kill_at} not reached{replay}"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((tmp_path / "killed" / "run" / "last.json").read_text())["step"]
    assert 0 < killed_at < 300, replay
    _cli_train(tmp_path / "killed", "--resume")
    weights, state, record = state_tensors(tmp_path / "straight" / "run")
    weights_again, state_again, record_again = state_tensors(tmp_path / "killed" / "run")
    assert record["step"] == record_again["step"] == 300, replay
    for expected, got in ((weights, weights_again), (state, state_again)):
        assert expected.keys() == got.keys(), replay
        for name in expected:
            assert torch.equal(expected[name], got[name]), f"{name} differs after resume{replay}"


# -- the commands ---------------------------------------------------------------------------------------

def test_sample_and_eval_load_a_numpy_run_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text(TEXT)
    trained = CliRunner().invoke(app, ["train", "notes.txt", "--engine", "numpy", "--cell", "rnn", "--hidden-size",
                                       "32", "--config", str(REPO / "configs" / "tiny.toml")])
    assert trained.exit_code == 0, trained.output
    assert "numpy engine" in trained.stdout and 'engine = "numpy"' in trained.stdout
    sampled = CliRunner().invoke(app, ["sample", "--seed", "The", "--length", "30", "--rng-seed", "1"])
    assert sampled.exit_code == 0 and sampled.stdout.startswith("The") and len(sampled.stdout) == 3 + 30 + 1
    scored = CliRunner().invoke(app, ["eval", "--json"])
    figures = json.loads(scored.stdout)
    recorded = load_checkpoint(tmp_path / "checkpoints" / "notes").record
    assert recorded["engine"] == "numpy"
    assert figures["nats_per_char"] == pytest.approx(recorded["val_loss"], abs=1e-5)  # eval's pass = the run's


# -- refusals: one line each, before anything is written ----------------------------------------------------

@pytest.mark.parametrize("settings, words", [
    ({"engine": "numpy", "task": "lines"}, "--engine numpy trains --task lm only, not lines"),
    ({"engine": "numpy", "precision": "bf16"}, "--engine numpy has no --precision bf16"),
    ({"engine": "numpy", "precision": "fp16"}, "--engine numpy has no --precision fp16"),
    ({"engine": "numpy", "device": "cuda"}, "--engine numpy runs on the CPU, not --device cuda"),
    ({"engine": "numpy", "device": "mps"}, "--engine numpy runs on the CPU, not --device mps"),
    ({"dtype": "float64"}, "dtype (--dtype) applies to --engine numpy"),
    ({"engine": "jax"}, "engine (--engine) must be one of torch, numpy"),
])
def test_what_the_numpy_engine_cannot_do_is_refused(settings, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        build_config({"max_steps": 5}, settings)


def test_auto_means_the_cpu_in_fp32_for_the_numpy_engine():
    resolved = build_config({"max_steps": 5, "engine": "numpy", "device": "auto"})
    assert (resolved.device, resolved.precision, resolved.dtype) == ("cpu", "fp32", "float32")
    assert build_config({"max_steps": 5}).device == "auto"  # the torch engine's auto is untouched


@pytest.mark.parametrize("flags, words", [
    (["--engine", "numpy", "--precision", "bf16"], "--engine numpy has no --precision bf16"),
    (["--engine", "numpy", "--device", "cuda"], "--engine numpy runs on the CPU"),
    (["--dtype", "float64"], "dtype (--dtype) applies to --engine numpy"),
])
def test_refusals_are_one_line_and_write_nothing(tmp_path, monkeypatch, flags, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text(TEXT)
    result = CliRunner().invoke(app, ["train", "notes.txt", "--max-steps", "5", *flags])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and words in lines[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_more_than_one_process_is_refused_before_anything_is_written(tmp_path, corpus):
    with pytest.raises(CharlmError, match="--engine numpy trains in one process, not 2; run it without torchrun"):
        run(corpus, config(engine="numpy"), tmp_path / "run", world=World(rank=0, size=2))
    assert not (tmp_path / "run").exists()


def test_resume_with_the_other_engine_is_refused_in_one_line(tmp_path, corpus, monkeypatch):
    run(corpus, config(engine="numpy", max_steps=5, eval_every=5), tmp_path / "numpy")
    with pytest.raises(CharlmError, match="engine cannot change when resuming \\(the run uses 'numpy'\\)"):
        run(corpus, config(max_steps=10), tmp_path / "numpy", resume=True)
    run(corpus, config(max_steps=5, eval_every=5), tmp_path / "torch")
    with pytest.raises(CharlmError, match="engine cannot change when resuming \\(the run uses 'torch'\\)"):
        run(corpus, config(engine="numpy", max_steps=10), tmp_path / "torch", resume=True)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in (tmp_path / "numpy").iterdir())
    result = CliRunner().invoke(app, ["train", "--resume", "--out", "numpy", "--engine", "torch"])
    lines = result.stderr.strip().splitlines()
    refusal = "charlm: error: --engine cannot change when resuming (the run uses 'numpy')"
    assert result.exit_code == 1 and lines == [refusal], result.output
    assert sorted(p.name for p in (tmp_path / "numpy").iterdir()) == before
    assert isinstance(run(corpus, config(engine="numpy", max_steps=8, eval_every=5), tmp_path / "numpy",
                          resume=True)[0], RunStarted)  # the numpy engine itself carries on
