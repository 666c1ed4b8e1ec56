import dataclasses

import pytest

from charlm.config import TrainConfig, build_config, load_config_file, parse_duration
from charlm.errors import ConfigError
from conftest import REPO


def test_default_toml_spells_out_the_dataclass_defaults():
    assert build_config(load_config_file(REPO / "configs" / "default.toml")) == TrainConfig()


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_preset_loads(path):
    config = build_config(load_config_file(path))
    assert config.max_steps or config.epochs or config.time_budget


def test_flags_override_the_file_which_overrides_defaults():
    config = build_config({"hidden_size": 64, "lr": 0.1}, {"lr": 0.5})
    assert (config.hidden_size, config.lr, config.num_layers) == (64, 0.5, TrainConfig().num_layers)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown config key 'hiden_size'"):
        build_config({"hiden_size": 3})


@pytest.mark.parametrize("key, value, words", [
    ("cell", "transformer", "cell .--cell. must be one of rnn, lstm, gru"),
    ("hidden_size", 0, "hidden_size .--hidden-size. must be >= 1"),
    ("batch_size", -2, "batch_size"),
    ("val_frac", 0.0, "val_frac .--val-frac. must be > 0"),
    ("val_frac", 1.0, "must be < 1"),
    ("dropout", 1.0, "dropout"),
    ("lr", "fast", "lr .--lr. must be a number"),
    ("seq_len", 1.5, "must be a whole number"),
    ("normalize_newlines", 1, "true or false"),
    ("time_budget", "soon", "time budget 'soon'"),
    ("lr", float("nan"), "finite"),
])
def test_bad_values_name_the_key(key, value, words):
    with pytest.raises(ConfigError, match=words):
        build_config({key: value})


def test_some_bound_is_required():
    with pytest.raises(ConfigError, match="no stopping bound"):
        build_config({"time_budget": "none"})


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("5m", 300), ("1h", 3600), ("1.5h", 5400), ("300", 300)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_malformed_toml_is_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("hidden_size = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(path)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().lr = 1.0


def test_none_or_empty_clears_a_bound_and_zero_is_not_a_bound():
    config = build_config({"max_steps": 5}, {"max_steps": "none", "epochs": "", "time_budget": "1m"})
    assert config.max_steps is None and config.epochs is None
    for key, zero in [("max_steps", 0), ("max_steps", "0"), ("time_budget", "0"), ("time_budget", "0s")]:
        with pytest.raises(ConfigError):
            build_config({key: zero})


def test_a_bare_number_of_seconds_is_a_duration():
    assert build_config({"time_budget": 300}).time_budget_seconds == 300
    assert build_config({"dist_timeout": 30}).dist_timeout == "30"


def test_the_printed_config_pasted_into_a_preset_gives_the_same_config():
    import tomllib
    from charlm.cli.render import format_config
    for config in [build_config({"max_steps": 5, "time_budget": "none"}), build_config({"epochs": 2}),
                   build_config({})]:
        assert build_config(tomllib.loads(format_config(config))) == config


def test_a_task_specific_key_is_blamed_on_the_preset_that_set_it_and_a_preset_of_defaults_passes():
    from charlm.config import check_applicable

    default_path, tiny_path = REPO / "configs" / "default.toml", REPO / "configs" / "tiny.toml"
    default = load_config_file(default_path)
    check_applicable(build_config(default, {"task": "lines"}), {"task"}, default, default_path)  # seq_len = 128 too
    tiny = load_config_file(tiny_path)
    config = build_config(tiny, {"task": "lines"})
    with pytest.raises(ConfigError) as raised:  # the user never typed --seq-len: tiny.toml's seq_len = 16 is the cause
        check_applicable(config, {"task"}, tiny, tiny_path)
    assert str(raised.value) == (f"seq_len = 16 in {tiny_path} applies to --task lm, not lines; remove it from "
                                 "the preset, or use one made for lines")
    with pytest.raises(ConfigError, match=r"^seq_len \(--seq-len\) applies to --task lm, not lines; leave it out$"):
        check_applicable(build_config(tiny, {"task": "lines", "seq_len": 8}), {"task", "seq_len"}, tiny, tiny_path)
