from pathlib import Path

import pytest

from charlm.config import build_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def tiny_config():
    """A model that trains in a second: one small LSTM layer, a step bound, no time bound."""
    return build_config({"hidden_size": 32, "num_layers": 1, "embedding_size": 16, "seq_len": 16,
                         "batch_size": 4, "lr": 0.01, "warmup_steps": 5, "max_steps": 30,
                         "time_budget": "none", "eval_every": 15, "log_every": 5, "sample_length": 20,
                         "device": "cpu"})


@pytest.fixture
def text_file(tmp_path):
    """Write a small UTF-8 corpus into tmp_path and return its path."""
    def write(text: str = "the quick brown fox jumps over the lazy dog.\n" * 40, name: str = "corpus.txt") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8", newline="")
        return path
    return write
