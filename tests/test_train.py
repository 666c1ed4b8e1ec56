import json

import pytest
import torch

import charlm.tasks.lm.task as train_module
from charlm.engine.checkpoint import read_tensors
from charlm.runs import load_checkpoint
from charlm.text.corpus import read_corpus
from charlm.errors import CorpusError, RunDirectoryError
from charlm.decode.sampling import SamplingOptions
from charlm.tasks.lm.generate import generate
import charlm.engine.loop as loop_module
from charlm.engine.events import Evaluated, Notice, RunFinished, RunStarted, StepProgress
from charlm.engine.loop import NonFiniteLossError, train
from charlm.tasks.lm.task import LanguageModelTask

PHRASE = "to be or not to be, that is the question. "


def _events(corpus_path, config, run_dir, **kwargs):
    return list(train(LanguageModelTask(read_corpus(corpus_path), config), run_dir, **kwargs))


@pytest.mark.slow
def test_memorises_a_repeated_string_then_greedily_reproduces_it(tmp_path, text_file, tiny_config):
    config = tiny_config.replace(hidden_size=64, max_steps=250, eval_every=250, warmup_steps=10,
                                 seq_len=32, batch_size=8, min_lr_ratio=0.3)
    events = _events(text_file(PHRASE * 120), config, tmp_path / "run")
    losses = [e.train_loss for e in events if isinstance(e, StepProgress)]
    assert losses[-1] < 0.05 < losses[0]
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.reason == "max_steps" and finished.step == 250
    loaded = load_checkpoint(tmp_path / "run")
    out = "".join(generate(loaded.model, loaded.vocab, "to be or", 2 * len(PHRASE),
                           SamplingOptions(temperature=0), torch.Generator()))
    assert ("to be or" + out).startswith((PHRASE * 3)[: 2 * len(PHRASE)])


def test_events_metrics_and_checkpoints(tmp_path, text_file, tiny_config):
    run = tmp_path / "run"
    events = _events(text_file(), tiny_config, run)
    assert isinstance(events[0], RunStarted) and events[0].resumed_from_step is None
    evals = [e for e in events if isinstance(e, Evaluated)]
    assert [e.step for e in evals] == [15, 30] and evals[0].is_best and len(evals[0].preview) == 20
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "val_loss" in r] == [15, 30]
    assert [r["step"] for r in lines if "train_loss" in r] == [5, 10, 15, 20, 25, 30]
    assert {p.name for p in run.iterdir()} >= {"best.json", "last.json", "metrics.jsonl"}
    record = json.loads((run / "last.json").read_text())
    assert record["corpus"]["sha256"] and record["config"]["hidden_size"] == 32 and record["step"] == 30


def _weights(run_dir):
    record = json.loads((run_dir / "last.json").read_text())
    return read_tensors(run_dir / record["weights"]), record


def test_interrupted_and_resumed_run_is_bitwise_identical(tmp_path, text_file, tiny_config):
    config = tiny_config.replace(num_layers=2, dropout=0.2, max_steps=40, eval_every=10)
    corpus = text_file()
    _events(corpus, config, tmp_path / "straight")

    polls = iter(range(10**6))
    run = tmp_path / "resumed"
    events = _events(corpus, config, run, stop_requested=lambda: next(polls) >= 13)
    interrupted = events[-1]
    assert interrupted.reason == "interrupted"
    _, record = _weights(run)
    assert record["step"] == interrupted.step < 40
    events = _events(corpus, config, run, resume=True)
    assert events[0].resumed_from_step == interrupted.step and events[-1].step == 40
    straight, _ = _weights(tmp_path / "straight")
    resumed, _ = _weights(run)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for kind in ("train_loss", "val_loss"):  # appended across the interruption, never repeated
        steps = [r["step"] for r in records if kind in r]
        assert steps == sorted(set(steps))
    assert [r["step"] for r in records if "train_loss" in r] == list(range(5, 41, 5))


def test_non_finite_steps_are_skipped_and_counted(tmp_path, text_file, tiny_config, monkeypatch):
    real = train_module.F.cross_entropy
    calls = []

    def sometimes_nan(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) in (3, 4) else loss

    monkeypatch.setattr(train_module.F, "cross_entropy", sometimes_nan)
    events = _events(text_file(), tiny_config, tmp_path / "run")
    assert events[-1].skipped_steps == 2 and events[-1].step == 30
    weights, _ = _weights(tmp_path / "run")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_a_run_of_non_finite_steps_stops_with_advice(tmp_path, text_file, tiny_config, monkeypatch):
    real = train_module.F.cross_entropy
    calls = []

    def nan_after_20(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs) * (float("nan") if len(calls) > 20 else 1.0)

    monkeypatch.setattr(train_module.F, "cross_entropy", nan_after_20)
    with pytest.raises(NonFiniteLossError, match=f"learning rate.*last good checkpoint is in {tmp_path / 'run'}"):
        _events(text_file(), tiny_config.replace(max_steps=60, max_nonfinite_steps=5), tmp_path / "run")
    weights, record = _weights(tmp_path / "run")  # the step-15 checkpoint survives, finite
    assert record["step"] == 15 and all(torch.isfinite(t).all() for t in weights.values())


def test_non_finite_from_the_first_step_says_nothing_was_saved(tmp_path, text_file, tiny_config, monkeypatch):
    real = train_module.F.cross_entropy
    monkeypatch.setattr(train_module.F, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(NonFiniteLossError, match="nothing was saved yet") as raised:
        _events(text_file(), tiny_config.replace(max_steps=60, max_nonfinite_steps=5), tmp_path / "run")
    assert "checkpoint is in" not in str(raised.value)


def _steps_take(seconds, monkeypatch):
    """A fake clock under the loop: every step takes `seconds`, however busy the machine is."""
    clock = [1000.0]
    monkeypatch.setattr(loop_module.time, "monotonic", lambda: clock[0])
    real_loss = LanguageModelTask.loss

    def timed_loss(self, *args, **kwargs):
        clock[0] += seconds
        return real_loss(self, *args, **kwargs)

    monkeypatch.setattr(LanguageModelTask, "loss", timed_loss)


def test_time_budget_ends_the_run_with_the_lr_at_its_floor(tmp_path, text_file, tiny_config, monkeypatch):
    _steps_take(0.1, monkeypatch)
    config = tiny_config.replace(max_steps=None, time_budget="2s", eval_every=10_000, log_every=1,
                                 warmup_steps=2, min_lr_ratio=0.25)
    events = _events(text_file(), config, tmp_path / "run")
    assert events[-1].reason == "time_budget" and events[-1].step in (19, 20)
    reports = [e for e in events if isinstance(e, StepProgress)]
    lrs = [e.lr for e in reports]
    assert max(lrs) == pytest.approx(config.lr, rel=0.05)
    # the decay follows the clock: the last step, at the end of the budget, is close to the floor
    last = reports[-1]
    assert last.progress > 0.9 and lrs[-1] < 0.3 * config.lr
    assert lrs[-1] >= config.lr * 0.25 and lrs == sorted(lrs[:2]) + sorted(lrs[2:], reverse=True)


def test_a_step_that_cannot_finish_inside_the_time_budget_is_not_started_and_said_once(
        tmp_path, text_file, tiny_config, monkeypatch):
    _steps_take(8.0, monkeypatch)  # of a 20 s budget
    config = tiny_config.replace(max_steps=None, time_budget="20s", eval_every=10_000, log_every=1)
    events = _events(text_file(), config, tmp_path / "run")
    notices = [e for e in events if isinstance(e, Notice)]
    assert [n.kind for n in notices] == ["slow_step"]
    assert notices[0].message.startswith("one step takes 8.0 s, a sizeable part of the 20s time budget")
    finished = events[-1]  # 8 s, 16 s; a third step would end at 24 s
    assert finished.reason == "time_budget" and finished.step == 2 and finished.elapsed_seconds <= 20


def test_refuses_to_overwrite_and_to_train_on_too_little(tmp_path, text_file, tiny_config):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunDirectoryError, match="holds files charlm did not write"):
        _events(text_file(), tiny_config, run)
    assert (run / "notes.txt").read_text() == "mine"
    with pytest.raises(CorpusError, match="too short"):
        _events(text_file("short text " * 3), tiny_config, tmp_path / "other")


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_autocast_training_keeps_fp32_weights_and_state(tmp_path, text_file, tiny_config, precision):
    config = tiny_config.replace(precision=precision, max_steps=60, eval_every=60)
    events = _events(text_file(PHRASE * 60), config, tmp_path / "run")
    assert events[0].precision == precision
    losses = [e.train_loss for e in events if isinstance(e, StepProgress)]
    assert losses[-1] < losses[0] - 0.5
    weights, record = _weights(tmp_path / "run")
    assert all(t.dtype == torch.float32 for t in weights.values())
    state = read_tensors(tmp_path / "run" / record["state"])
    assert state["hidden.h"].dtype == torch.float32 and state["optimizer.0.exp_avg"].dtype == torch.float32


def test_hidden_state_is_carried_detached_within_an_epoch_and_reset_between(tmp_path, text_file, tiny_config,
                                                                             monkeypatch):
    seen = []
    real_forward = train_module.CharRNN.forward

    def spy(self, x, hidden=None):
        if self.training:
            seen.append(None if hidden is None else (hidden[0].requires_grad, hidden[0].abs().sum().item()))
        return real_forward(self, x, hidden)

    monkeypatch.setattr(train_module.CharRNN, "forward", spy)
    text = text_file("abcdefgh" * 40)  # 288 train chars: 4 streams x 64 x 16 = 4 windows an epoch
    events = _events(text, tiny_config.replace(max_steps=None, epochs=3, eval_every=1000), tmp_path / "run")
    finished = events[-1]
    assert finished.reason == "epochs"
    per_epoch = finished.step // 3
    assert len(seen) == finished.step and per_epoch >= 2
    starts = [i for i, h in enumerate(seen) if h is None]
    assert starts == [0, per_epoch, 2 * per_epoch]  # a fresh state at each epoch, carried otherwise
    assert all(h == (False, h[1]) and h[1] > 0 for h in seen if h is not None)  # detached, not zeros


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_a_run_trained_on_cuda_loads_samples_and_resumes_on_the_cpu(tmp_path, text_file, tiny_config, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    corpus = text_file(PHRASE * 60)
    events = _events(corpus, tiny_config.replace(device="cuda", precision=precision, max_steps=30), tmp_path / "run")
    assert events[0].device.startswith("cuda") and events[0].precision == precision
    losses = [e.train_loss for e in events if isinstance(e, StepProgress)]
    assert losses[-1] < losses[0]
    loaded = load_checkpoint(tmp_path / "run")
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in loaded.model.parameters())
    sample = "".join(generate(loaded.model, loaded.vocab, "to be", 20, SamplingOptions(), torch.Generator()))
    assert len(sample) == 20
    resumed = _events(corpus, tiny_config.replace(device="cpu", precision="fp32", max_steps=40),
                      tmp_path / "run", resume=True)
    assert resumed[0].resumed_from_step == 30 and resumed[-1].step == 40
