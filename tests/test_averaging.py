"""--ema-decay: the average of the weights is what a run scores and saves; training and resume are untouched."""

import json

import pytest
import torch
from torch import nn

from charlm.config import ConfigError, build_config
from charlm.errors import CharlmError, CheckpointError
from charlm.engine.averaging import TRAINING_PREFIX, WeightAverage
from charlm.engine.checkpoint import read_tensors
from charlm.engine.loop import train
from charlm.tasks.lm.task import LanguageModelTask
from charlm.text.corpus import read_corpus


def test_the_average_warms_up_then_decays_at_the_given_rate():
    model = nn.Linear(1, 1, bias=False)
    average = WeightAverage(model, decay=0.15)
    seen = []
    for value in (4.0, 0.0, 0.0, 8.0):
        model.weight.data.fill_(value)
        average.update(model)
        seen.append(average.module.weight.item())
    # By hand: the first update copies (4). After n updates the decay is min(0.15, (1 + n) / (10 + n)):
    # the warmup's 2/11 = 0.18 is above 0.15 already, so the cap holds from the second update on.
    assert seen == pytest.approx([4.0, 0.6, 0.09, 0.09 * 0.15 + 8.0 * 0.85])
    assert average.updates == 4
    slow = WeightAverage(model, decay=0.9)
    for value in (4.0, 0.0, 0.0):
        model.weight.data.fill_(value)
        slow.update(model)
    assert slow.module.weight.item() == pytest.approx(4.0 * 2 / 11 * 3 / 12)  # (1 + n) / (10 + n) while below 0.9


def test_the_average_sits_closer_to_the_minimum_than_noisy_iterates():
    torch.manual_seed(0)
    model = nn.Linear(8, 1, bias=False)
    average = WeightAverage(model, decay=0.99)
    for _ in range(2000):  # iterates scattered around 1.0 with unit noise
        model.weight.data = 1.0 + torch.randn(1, 8)
        average.update(model)
    iterate_error = (model.weight - 1.0).abs().mean().item()
    average_error = (average.module.weight - 1.0).abs().mean().item()
    assert average_error < iterate_error / 5


def _config(tiny_config, **changes):
    return tiny_config.replace(**{"max_steps": 40, "eval_every": 10, "dropout": 0.1, "num_layers": 2,
                                  "sample_length": 0, **changes})


def _run(tmp_path, corpus, config, out, **kwargs):
    return list(train(LanguageModelTask(read_corpus(corpus), config), tmp_path / out, **kwargs))


def _files(run_dir, kind="last"):
    record = json.loads((run_dir / f"{kind}.json").read_text())
    state = read_tensors(run_dir / record["state"]) if "state" in record else {}
    return record, read_tensors(run_dir / record["weights"]), state


def test_a_run_saves_the_average_and_its_recorded_loss_is_the_average_s(tmp_path, text_file, tiny_config):
    from charlm.runs import load_checkpoint
    from charlm.tasks.lm.evaluate import evaluate_checkpoint

    corpus = text_file()
    events = _run(tmp_path, corpus, _config(tiny_config, ema_decay=0.9), "averaged")
    record, weights, state = _files(tmp_path / "averaged")
    live = {name[len(TRAINING_PREFIX):]: value for name, value in state.items() if name.startswith(TRAINING_PREFIX)}
    assert set(live) == set(weights) and record["trainer"]["weight_average"] == {"updates": 40}
    assert not all(torch.equal(live[name], weights[name]) for name in weights)  # the average is not the iterate
    # What a user loads from the run scores what the run recorded for it.
    assert events[-1].step == 40
    for kind in ("best", "last"):
        recorded = json.loads((tmp_path / "averaged" / f"{kind}.json").read_text())["metrics"]["val_loss"]
        checkpoint = load_checkpoint(tmp_path / "averaged" / f"{kind}.json")
        assert evaluate_checkpoint(checkpoint, precision="fp32").nats_per_char == pytest.approx(recorded, abs=1e-5)


def test_averaging_leaves_training_alone(tmp_path, text_file, tiny_config):
    """The live weights of a run that averages are those of the same run without it, bitwise."""
    corpus = text_file()
    _run(tmp_path, corpus, _config(tiny_config), "plain")
    _run(tmp_path, corpus, _config(tiny_config, ema_decay=0.9), "averaged")
    _, plain, _ = _files(tmp_path / "plain")
    _, _, state = _files(tmp_path / "averaged")
    assert all(torch.equal(plain[name], state[TRAINING_PREFIX + name]) for name in plain)


def test_an_averaging_run_resumes_bitwise(tmp_path, text_file, tiny_config):
    corpus = text_file()
    config = _config(tiny_config, ema_decay=0.9)
    _run(tmp_path, corpus, config, "straight")
    polls = iter(range(10**6))
    assert _run(tmp_path, corpus, config, "resumed", stop_requested=lambda: next(polls) >= 17)[-1].reason == \
        "interrupted"
    _run(tmp_path, corpus, config, "resumed", resume=True)
    (straight, straight_weights, straight_state), (resumed, resumed_weights, resumed_state) = (
        _files(tmp_path / "straight"), _files(tmp_path / "resumed"))
    assert resumed["step"] == 40 and resumed["trainer"]["weight_average"] == straight["trainer"]["weight_average"]
    assert all(torch.equal(straight_weights[k], resumed_weights[k]) for k in straight_weights)
    training = [k for k in straight_state if k.startswith(TRAINING_PREFIX)]
    assert training and all(torch.equal(straight_state[k], resumed_state[k]) for k in training)


def test_averaging_cannot_be_turned_on_or_off_when_resuming(tmp_path, text_file, tiny_config):
    """The best score so far would compare the average with the weights themselves; the decay may change."""
    corpus = text_file()
    plain, averaged = _config(tiny_config), _config(tiny_config, ema_decay=0.9)
    for name, before, after, said in (("on", plain, averaged, r"does not average its weights.* --ema-decay 0,"),
                                      ("off", averaged, plain, r"averages its weights \(--ema-decay 0\.9\).* "
                                                               r"resume with --ema-decay 0\.9,")):
        polls = iter(range(10**6))
        _run(tmp_path, corpus, before, name, stop_requested=lambda: next(polls) >= 17)
        with pytest.raises(CharlmError, match=said):
            _run(tmp_path, corpus, after, name, resume=True)
    assert _run(tmp_path, corpus, averaged.replace(ema_decay=0.95), "off", resume=True)[-1].step == 40


def test_a_state_file_with_half_of_an_average_is_damaged(tmp_path, text_file, tiny_config):
    from safetensors.torch import save_file

    corpus = text_file()
    config = _config(tiny_config, ema_decay=0.9)
    polls = iter(range(10**6))
    _run(tmp_path, corpus, config, "run", stop_requested=lambda: next(polls) >= 17)
    record, _, state = _files(tmp_path / "run")
    save_file({k: v for k, v in state.items() if not k.startswith(TRAINING_PREFIX)},
              tmp_path / "run" / record["state"])
    with pytest.raises(CheckpointError, match="damaged: it holds the count of a weight average without the live"):
        _run(tmp_path, corpus, config, "run", resume=True)


def test_a_classifier_scores_and_saves_its_average(tmp_path):
    from charlm.engine.events import Evaluated
    from charlm.runs import load_checkpoint
    from charlm.tasks.classify.inference import evaluate_classifier
    from charlm.tasks.classify.task import ClassifyTask
    from charlm.text.records import read_records
    from test_classify_task import _config as classify_config, marker_tsv

    path = marker_tsv(tmp_path / "markers.tsv")
    config = classify_config(max_steps=120, eval_every=40, ema_decay=0.9)
    events = list(train(ClassifyTask(read_records(path), config), tmp_path / "run"))
    assert [e for e in events if isinstance(e, Evaluated)][-1].metrics["val_accuracy"] == 1.0
    best, _, _ = _files(tmp_path / "run", "best")
    _, last_weights, state = _files(tmp_path / "run")
    assert not all(torch.equal(last_weights[k], state[TRAINING_PREFIX + k]) for k in last_weights)
    report = evaluate_classifier(load_checkpoint(tmp_path / "run"), precision="fp32")
    assert report.loss == pytest.approx(best["metrics"]["val_loss"], abs=1e-6)  # the saved weights are the scored


def test_ema_decay_is_checked():
    with pytest.raises(ConfigError, match=r"ema_decay \(--ema-decay\) must be < 1.0"):
        build_config({}, {"ema_decay": 1.0})
    with pytest.raises(ConfigError, match=r"--engine numpy has no ema_decay \(--ema-decay\)"):
        build_config({}, {"engine": "numpy", "ema_decay": 0.999})
