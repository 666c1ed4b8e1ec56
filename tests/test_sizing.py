"""`charlm train FILE` without a size: the model is sized from the corpus and the run's bounds."""

import json

import pytest
import torch
from typer.testing import CliRunner

from charlm.cli import app
from charlm.cli.inputs import sizes_to_corpus
from charlm.config import SIZED_FOR_LM, build_config, config_default_text
from charlm.tasks.lm import sizing
from charlm.tasks.lm.sizing import (HIDDEN_SIZES, awd_regularisation, candidate_spec, chars_per_parameter_needed,
                                    choose_size, probe_rate, regularisation_strength)

# Training characters/s of LSTM 2xH in bf16 on a 2-core CPU with AMX (bench/train_throughput.py).
RATES = {128: 175_000, 256: 62_000, 384: 40_000, 512: 25_000, 768: 12_000, 1024: 7_000}
SHAKESPEARE_TRAIN = 1_003_854


def _choose(train_chars, asked=None, **settings):
    config = build_config(settings)

    def rate_of(hidden):
        if asked is not None:
            asked.append(hidden)
        return RATES[hidden]

    return choose_size(config, 65, train_chars, config.seq_len * config.batch_size, rate_of)


def test_tiny_shakespeare_gets_a_larger_model_for_a_longer_budget():
    asked = []
    five = _choose(SHAKESPEARE_TRAIN, asked, time_budget="5m")
    assert (five.hidden_size, five.num_layers, five.weight_drop, five.locked_dropout) == (384, 2, 0.1, 0.1)
    assert asked == [128, 256, 384, 512]  # not past the first candidate that falls short
    thirty = _choose(SHAKESPEARE_TRAIN, time_budget="30m")
    # The 30-minute preset (configs/shakespeare-30m.toml), which beat plain dropout there.
    assert thirty.settings() == {"hidden_size": 512, "num_layers": 2, "dropout": 0.0, "weight_drop": 0.2,
                                 "locked_dropout": 0.15}
    assert "sized lstm 2x512, weight drop 0.2, locked dropout 0.15 (3.3" in thirty.message()
    assert "1M training characters and 12M to train on" in five.message()
    assert "at 40k characters/s measured here" in five.message()


def test_a_small_corpus_gets_the_smallest_model_without_a_probe():
    asked = []
    sizing = _choose(20_000, asked, time_budget="1h")
    assert sizing.hidden_size == HIDDEN_SIZES[0] and asked == []  # 16 passes could never fill a larger one
    assert "too few for a larger model" in sizing.message()


def test_steps_or_epochs_bound_the_run_without_measuring_speed():
    asked = []
    # 20.5M characters, less than half a pass: Chinchilla's 20 per parameter allow 1M parameters.
    sizing = _choose(50_000_000, asked, time_budget="none", max_steps=5_000)
    assert asked == [] and sizing.hidden_size == 256
    sizing = _choose(50_000_000, asked, time_budget="none", epochs=1)  # 50M: 2.5M parameters
    # One pass: nothing to memorise, so nothing regularised.
    assert asked == [] and sizing.hidden_size == 384 and (sizing.weight_drop, sizing.locked_dropout) == (0, 0)
    assert "384, no dropout (" in sizing.message()


def test_a_text_read_a_few_times_wants_more_characters_per_parameter():
    assert [chars_per_parameter_needed(passes) for passes in (0.5, 1, 2, 4, 5, 16)] == [20, 20, 10, 5, 4, 4]
    # The Python corpus for 10 minutes in fp32 on a 2-core CPU without AMX (bench/results/sizing_10m.json):
    # 2x384 would read it 2.9 times at 5.4 characters per parameter, and lost to 2x256 (5.7 passes, 23).
    fp32 = {128: 92_000, 256: 34_000, 384: 17_700, 512: 9_800}
    config = build_config({"time_budget": "10m"})
    python = choose_size(config, 100, 3_610_000, config.seq_len * config.batch_size, fp32.__getitem__)
    assert python.hidden_size == 256
    # Tiny Shakespeare, read 10 times by 2x384 in the same minutes, keeps it (it won there: 1.4456 to 1.4739).
    shakespeare = choose_size(config, 65, SHAKESPEARE_TRAIN, config.seq_len * config.batch_size, fp32.__getitem__)
    assert (shakespeare.hidden_size, shakespeare.weight_drop, shakespeare.locked_dropout) == (384, 0.1, 0.1)


def test_regularisation_grows_with_parameters_per_training_character():
    assert regularisation_strength(1_000_000, 1_000_000, passes=10) == 0.0
    assert regularisation_strength(4_000_000, 1_000_000, passes=10) == 0.25
    assert regularisation_strength(100_000_000, 1_000_000, passes=10) == 0.5
    assert regularisation_strength(4_000_000, 1_000_000, passes=1.5) == 0.0


@pytest.mark.parametrize("strength, expected", [(0.0, (0.0, 0.0)), (0.05, (0.05, 0.05)), (0.1, (0.1, 0.1)),
                                                (0.2, (0.2, 0.15)), (0.25, (0.25, 0.2)),
                                                (0.3, (0.3, 0.25)),  # 0.225 half up (round() gives 0.2)
                                                (0.5, (0.5, 0.4))])
def test_awd_regularisation_keeps_locked_dropout_at_three_quarters_of_weight_drop(strength, expected):
    assert awd_regularisation(strength) == expected


def test_the_probe_measures_a_real_training_step():
    config = build_config({"batch_size": 4, "seq_len": 16, "embedding_size": 8})
    assert probe_rate(config, 20, 128, torch.device("cpu"), None) > 0
    assert probe_rate(config, 20, 128, torch.device("cpu"), None, regularised=True) > 0
    masked = candidate_spec(config, 20, 128, regularised=True)
    assert masked.weight_drop > 0 and masked.locked_dropout > 0 and not candidate_spec(config, 20, 128).regularised


def test_a_candidate_that_will_be_regularised_is_probed_with_its_masks(monkeypatch):
    probed = {}

    def probe_rate(config, vocab_size, hidden, device, amp_dtype, regularised):
        probed[hidden] = regularised
        return RATES[hidden]

    monkeypatch.setattr(sizing, "probe_rate", probe_rate)
    sizing.size_for_corpus(build_config({"time_budget": "30m", "device": "cpu"}), 65, SHAKESPEARE_TRAIN)
    # 2x128 (0.24M parameters) and 2x256 (0.88M) are smaller than the text; 2x384 (1.9M) is not
    # (and 2x768 is not probed: 16 passes could never give it 4 characters per parameter).
    assert probed == {128: False, 256: False, 384: True, 512: True}


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fox.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 100)
    return tmp_path


def _train(*argv):
    result = CliRunner().invoke(app, ["train", "fox.txt", "--max-steps", "2", "--seq-len", "16", "--batch-size", "4",
                                      "--sample-length", "0", "--device", "cpu", *argv])
    assert result.exit_code == 0, result.output
    return result


def test_train_says_what_it_sized_and_records_it(corpus, monkeypatch):
    result = _train("--out", "run")
    [note] = [line for line in result.stderr.splitlines() if "sized" in line]
    assert note.startswith("charlm: note: sized lstm 2x128, ") and "--hidden-size" in note
    config = json.loads((corpus / "run" / "last.json").read_text())["config"]
    assert (config["hidden_size"], config["num_layers"], config["dropout"]) == (128, 2, 0.0)
    assert "2x128, no dropout (" in note  # 2 steps read the text less than once: nothing to memorise
    # A resumed run keeps the size it has: sizing is not even asked.
    monkeypatch.setattr(sizing, "size_for_corpus", lambda *args: pytest.fail("a resumed run was sized"))
    resumed = CliRunner().invoke(app, ["train", "--resume", "--out", "run", "--max-steps", "3"])
    assert resumed.exit_code == 0 and "sized" not in resumed.stderr, resumed.output
    assert json.loads((corpus / "run" / "last.json").read_text())["config"]["hidden_size"] == 128


def test_a_text_read_again_and_again_gets_awd_regularisation(corpus):
    result = CliRunner().invoke(app, ["train", "fox.txt", "--epochs", "2", "--seq-len", "16", "--batch-size", "4",
                                      "--sample-length", "0", "--device", "cpu", "--out", "run"])
    assert result.exit_code == 0, result.output
    # 4,050 training characters for 0.24M parameters, read twice: the strongest regularisation.
    assert "sized lstm 2x128, weight drop 0.5, locked dropout 0.4 (" in result.stderr
    config = json.loads((corpus / "run" / "last.json").read_text())["config"]
    assert (config["dropout"], config["weight_drop"], config["locked_dropout"]) == (0.0, 0.5, 0.4)


@pytest.mark.parametrize("given, expected", [
    (["--hidden-size", "32"], (32, 2, 0.0)), (["--num-layers", "1"], (256, 1, 0.0)),
    (["--dropout", "0.1"], (256, 2, 0.1)), (["--config", "preset.toml"], (48, 2, 0.0)),
    (["--locked-dropout", "0.3"], (256, 2, 0.0)), (["--weight-drop", "0.2"], (256, 2, 0.0))])  # regularised by hand
def test_a_size_given_by_flag_or_preset_is_never_overridden(corpus, given, expected):
    (corpus / "preset.toml").write_text("hidden_size = 48\n")
    result = _train("--out", "run", *given)
    assert "sized" not in result.stderr
    config = json.loads((corpus / "run" / "last.json").read_text())["config"]
    assert (config["hidden_size"], config["num_layers"], config["dropout"]) == expected


@pytest.mark.parametrize("task, given, resume, world_size, engine, sized", [
    ("lm", set(), False, 1, "torch", True),
    ("lm", set(), True, 1, "torch", False),  # a resumed run keeps the size it has
    ("lm", set(), False, 2, "torch", False),  # each torchrun process would probe (and might choose) its own
    ("lm", set(), False, 1, "numpy", False),
    ("lm", {"embedding_dropout"}, False, 1, "torch", False),
    ("lines", set(), False, 1, "torch", False)])
def test_sizing_applies_to_new_single_process_lm_runs_only(task, given, resume, world_size, engine, sized):
    config = build_config({"task": task, "engine": engine})
    assert sizes_to_corpus(config, given, resume, world_size) is sized


def test_help_says_which_defaults_are_sized():
    assert config_default_text("hidden_size") == "sized to the corpus (lm), else 256"
    assert config_default_text("weight_drop") == "sized to the corpus (lm), else 0.0"
    assert config_default_text("embedding_size") == "64"
    assert set(sizing.Sizing("lstm", 128, 2, 0.1, 0.1, 1, "").settings()) == {*SIZED_FOR_LM, "dropout"}
