"""Dynamic evaluation: adapting while scoring lowers the loss on a text that repeats itself, never touches the model."""

import json
import random

import pytest
import torch

from charlm.engine.loop import train
from charlm.errors import CharlmError
from charlm.runs import load_checkpoint
from charlm.tasks.lm.dynamic import DynamicOptions, dynamic_score
from charlm.tasks.lm.evaluate import evaluate_ids, split_ids
from charlm.tasks.lm.task import LanguageModelTask
from charlm.text.corpus import read_corpus

WORDS = ("the of and to in is was for on that with as by at from his her are be this an king lord man day "
         "night sea land ship gold word hand eye love war time home fire road tree stone song sword").split()


def _sections(rng, count=60, words=200):
    """Text in sections, each drawing on its own few words: a later section is predictable once begun."""
    parts = []
    for _ in range(count):
        topic = rng.sample(WORDS, 5)
        parts.append(" ".join(rng.choice(topic) for _ in range(words)))
    return "\n".join(parts) + "\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("dyn")
    rng = random.Random(0)
    (root / "text.txt").write_text(_sections(rng))
    from charlm.config import build_config

    config = build_config({"hidden_size": 64, "num_layers": 1, "embedding_size": 16, "seq_len": 64, "batch_size": 8,
                           "lr": 0.01, "warmup_steps": 10, "max_steps": 150, "time_budget": "none",
                           "eval_every": 150, "sample_length": 0, "device": "cpu", "precision": "fp32"})
    list(train(LanguageModelTask(read_corpus(root / "text.txt"), config), root / "run"))
    return load_checkpoint(root / "run")


def test_on_a_text_that_repeats_itself_the_dynamic_figure_is_far_below_the_static(trained):
    rng = random.Random(1)
    verse = " ".join(rng.choice(WORDS) for _ in range(12)) + "\n"  # unpredictable once, then known
    ids, _ = trained.vocab.encode(verse * 30)
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    static = evaluate_ids(trained.model, ids, streams=1).nats_per_char
    dynamic = dynamic_score(trained.model, ids, DynamicOptions(method="rms", lr=0.003, segment_len=20))
    assert dynamic < 0.6 * static
    assert all(torch.equal(before[k], v) for k, v in trained.model.state_dict().items())  # the model is untouched


@pytest.mark.parametrize("method", ["sgd", "rms"])
def test_on_the_validation_split_the_dynamic_figure_is_below_the_static(trained, method):
    ids = split_ids(trained)
    static = evaluate_ids(trained.model, ids, streams=1).nats_per_char
    options = DynamicOptions(method=method, lr={"sgd": 0.003, "rms": 0.0002}[method])
    assert dynamic_score(trained.model, ids, options) < static


def test_bad_dynamic_options_are_one_line():
    with pytest.raises(CharlmError, match="--dynamic-method must be one of sgd, rms"):
        DynamicOptions(method="adam")


def test_a_dynamic_option_without_dynamic_is_refused_not_ignored(trained):
    from typer.testing import CliRunner

    from charlm.cli import app

    result = CliRunner().invoke(app, ["eval", "--checkpoint", str(trained.run_dir), "--dynamic-lr", "0.1"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "charlm: error: --dynamic-lr sets up dynamic evaluation; add --dynamic, or leave it out"]
    result = CliRunner().invoke(app, ["eval", "--checkpoint", str(trained.run_dir), "--dynamic", "--json",
                                      "--dynamic-method", "rms", "--dynamic-segment", "100"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert (scored["method"], scored["lr"], scored["segment"], scored["decay"]) == ("rms", 0.0002, 100, 0.0001)
    assert scored["dynamic_nats_per_char"] < scored["static_nats_per_char"]
