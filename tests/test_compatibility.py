"""Checkpoints written by release 0.1.0 (before tasks) keep loading for sample, eval and --resume.

The test rewrites a fresh run's JSON into exactly the keys 0.1.0 wrote: no
task, no generic metrics, the counters under their old names, and the 27
settings it knew; the tensor files did not change format.
"""

import json
import subprocess
import sys

import torch

from charlm.config import build_config, load_config_file
from charlm.engine.checkpoint import read_tensors
from charlm.engine.loop import train
from charlm.tasks.lm.task import LanguageModelTask
from charlm.text.corpus import read_corpus
from conftest import REPO

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13}.\n" for i in range(200))
FLAGS = ["--config", str(REPO / "configs" / "tiny.toml"), "--num-layers", "2", "--dropout", "0.1",
         "--sample-length", "0", "--device", "cpu", "--precision", "fp32"]
RELEASE_0_1_SETTINGS = ("cell hidden_size num_layers embedding_size dropout seq_len batch_size val_frac "
                        "normalize_newlines tokenizer lr weight_decay clip schedule warmup_steps min_lr_ratio "
                        "max_nonfinite_steps max_steps epochs time_budget eval_every log_every sample_length device "
                        "precision dist_timeout rng_seed").split()
RELEASE_0_1_KEYS = ("model", "vocab", "config", "corpus", "split", "step", "epoch", "val_loss", "best_val_loss",
                    "best_step", "format", "format_version", "kind", "weights", "state", "trainer")
OLD_COUNTER_NAMES = {"batch": "window", "units_seen": "chars_seen", "best_score": "best_val_loss"}


def _as_release_0_1(run_dir):
    for kind in ("best", "last"):
        path = run_dir / f"{kind}.json"
        record = json.loads(path.read_text())
        old = {key: record[key] for key in RELEASE_0_1_KEYS if key in record}
        old["best_val_loss"] = record["best_score"]
        old["config"] = {key: record["config"][key] for key in RELEASE_0_1_SETTINGS}
        if "trainer" in record:
            state = {OLD_COUNTER_NAMES.get(k, k): v for k, v in record["trainer"]["state"].items()
                     if k != "evaluations_since_best"}
            old["trainer"] = dict(record["trainer"], state=state)
        path.write_text(json.dumps(old, indent=2))


def _charlm(cwd, *args):
    done = subprocess.run([sys.executable, "-m", "charlm", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_a_release_0_1_run_samples_evaluates_and_resumes_exactly(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT)
    _charlm(tmp_path, "train", "corpus.txt", "--out", "straight", *FLAGS, "--max-steps", "40", "--eval-every", "20")
    config = build_config(load_config_file(REPO / "configs" / "tiny.toml"),
                          {"num_layers": 2, "dropout": 0.1, "sample_length": 0, "device": "cpu", "precision": "fp32",
                           "max_steps": 40, "eval_every": 20})
    polls = iter(range(10**6))  # stopped (as by Ctrl-C) part-way, then saved
    events = list(train(LanguageModelTask(read_corpus(tmp_path / "corpus.txt"), config), tmp_path / "old",
                        stop_requested=lambda: next(polls) >= 25))
    assert events[-1].reason == "interrupted" and 20 <= events[-1].step < 40
    _as_release_0_1(tmp_path / "old")
    assert "task" not in json.loads((tmp_path / "old" / "last.json").read_text())

    sample = _charlm(tmp_path, "sample", "--checkpoint", "old", "--length", "30", "--rng-seed", "1")
    assert len(sample.stdout) >= 30
    scored = json.loads(_charlm(tmp_path, "eval", "--checkpoint", "old", "--json", "--precision", "fp32").stdout)
    assert scored["nats_per_char"] == json.loads((tmp_path / "old" / "best.json").read_text())["val_loss"]

    _charlm(tmp_path, "train", "--resume", "--out", "old")
    new = json.loads((tmp_path / "old" / "last.json").read_text())
    straight = json.loads((tmp_path / "straight" / "last.json").read_text())
    assert new["task"] == "lm" and new["step"] == straight["step"] == 40
    got, expected = read_tensors(tmp_path / "old" / new["weights"]), read_tensors(tmp_path / "straight" /
                                                                                  straight["weights"])
    assert all(torch.equal(got[k], expected[k]) for k in expected)
