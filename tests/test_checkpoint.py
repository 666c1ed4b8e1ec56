import json
import os
import pickle

import pytest
import torch

from charlm.engine.checkpoint import (find_latest_run, join_optimizer_state, read_tensors, save_checkpoint,
                                      split_optimizer_state)
from charlm.files import write_atomic
from charlm.runs import load_checkpoint
from charlm.config import TrainConfig
from charlm.errors import CharlmError, CheckpointError, RunDirectoryError
from charlm.tasks.lm.model import CharRNN, ModelSpec
from charlm.text.vocab import Vocab


def _save(run_dir, kind="last", seed=0):
    torch.manual_seed(seed)
    vocab = Vocab.from_text("abcdefg")
    model = CharRNN(ModelSpec(vocab_size=vocab.size, cell="gru", hidden_size=8, num_layers=2, embedding_size=4))
    meta = {"model": model.spec.to_dict(), "vocab": vocab.to_json(), "config": TrainConfig().to_dict(), "step": 7,
            "corpus": {"path": "x", "sha256": "0"}}
    run_dir.mkdir(exist_ok=True)
    save_checkpoint(run_dir, kind, model.state_dict(), meta)
    return model


def test_save_then_load_gives_identical_logits(tmp_path):
    model = _save(tmp_path / "run").eval()
    loaded = load_checkpoint(tmp_path / "run")
    x = torch.randint(7, (12, 3))
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded.model(x)[0])
    assert loaded.vocab.chars == tuple("abcdefg") and loaded.record["step"] == 7


def test_old_files_are_removed_once_the_json_moves_on(tmp_path):
    run = tmp_path / "run"
    _save(run)
    record = json.loads((run / "last.json").read_text())
    record["step"] = 8
    model = load_checkpoint(run).model
    save_checkpoint(run, "last", model.state_dict(), {k: v for k, v in record.items() if k not in ("weights", "kind")})
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["weights-last-00000008.safetensors"]


def test_optimizer_state_round_trips_through_tensors_and_json():
    model = CharRNN(ModelSpec(vocab_size=5, hidden_size=4, num_layers=1, embedding_size=2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randint(5, (3, 2)))[0].sum().backward()
    optimizer.step()
    tensors, info = split_optimizer_state(optimizer.state_dict())
    info = json.loads(json.dumps(info))
    fresh = torch.optim.AdamW(model.parameters(), lr=0.1)
    fresh.load_state_dict(join_optimizer_state(tensors, info))
    for a, b in zip(optimizer.state.values(), fresh.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_pickle_payload_is_never_executed(tmp_path):
    run = tmp_path / "run"
    _save(run)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    weights = run / json.loads((run / "last.json").read_text())["weights"]
    weights.write_bytes(pickle.dumps(Payload()))
    torch.save({"x": Payload()}, run / "state-00000007.safetensors")
    with pytest.raises(CheckpointError, match="damaged or not a safetensors"):
        load_checkpoint(run)
    assert not marker.exists()


@pytest.mark.parametrize("damage, words", [
    (lambda run: (run / "last.json").write_text("{not json"), "not valid JSON"),
    (lambda run: _edit(run, format_version=99), "format version 99"),
    (lambda run: _edit(run, format="other"), "not a charlm checkpoint"),
    (lambda run: _drop(run, "model"), "is damaged: it lacks 'model'; use another checkpoint"),
    (lambda run: _truncate_weights(run), "damaged or not a safetensors"),
    (lambda run: _edit(run, weights="weights-gone.safetensors"), "which is missing"),
    (lambda run: _edit(run, model=dict(_record(run)["model"], hidden_size=16)), "does not match the model|shape"),
    (lambda run: _edit(run, model=dict(_record(run)["model"], num_layers=3)), "missing rnn.bias_hh_l2, .*rnn.weight_ih_l2"),
    (lambda run: _edit(run, model=dict(_record(run)["model"], num_layers=1)), "unexpected rnn.bias_hh_l1, .*rnn.weight_hh_l1"),
])
def test_damaged_checkpoints_get_one_line_errors(tmp_path, damage, words):
    run = tmp_path / "run"
    _save(run)
    damage(run)
    with pytest.raises(CheckpointError, match=words) as info:
        load_checkpoint(run)
    assert "\n" not in str(info.value)


def _record(run):
    return json.loads((run / "last.json").read_text())


def _edit(run, **changes):
    (run / "last.json").write_text(json.dumps(dict(_record(run), **changes)))


def _drop(run, key):
    (run / "last.json").write_text(json.dumps({k: v for k, v in _record(run).items() if k != key}))


@pytest.mark.parametrize("name, content", [
    ("README.md", "# charlm\n\nA character-level language model.\n"),
    ("weights.safetensors", None),  # a run's weights file instead of its JSON
    ("package.json", '{"name": "x", "model": {}}'),
])
def test_a_file_that_is_no_checkpoint_is_not_called_damaged(tmp_path, name, content):
    _save(tmp_path / "run")
    path = tmp_path / name
    if content is None:
        path.write_bytes(next((tmp_path / "run").glob("weights-*.safetensors")).read_bytes())
    else:
        path.write_text(content)
    with pytest.raises(CheckpointError, match="is not a charlm checkpoint; pass a run directory") as info:
        load_checkpoint(path)
    assert "damaged" not in str(info.value)


def _truncate_weights(run):
    path = run / _record(run)["weights"]
    path.write_bytes(path.read_bytes()[:-100])


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    write_atomic(path, b"old")

    def no_space(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(RunDirectoryError, match="No space left"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_latest_run_and_empty_root(tmp_path):
    with pytest.raises(CheckpointError, match="no trained runs"):
        find_latest_run(tmp_path)
    _save(tmp_path / "one")
    _save(tmp_path / "two")
    os.utime(tmp_path / "one" / "last.json", (1e9, 1e9))
    assert find_latest_run(tmp_path) == tmp_path / "two"


# A child process trains with os.fsync patched to hang at its N-th call; the test
# SIGKILLs it there, in the middle of writing the second round of checkpoints.
_HANG_AT_FSYNC = """
import os, sys, time
from pathlib import Path
import charlm.files as checkpoint
from charlm.config import build_config
from charlm.text.corpus import read_corpus
from charlm.engine.loop import train
from charlm.tasks.lm.task import LanguageModelTask

calls, hang_at, real_fsync = [0], int(sys.argv[1]), os.fsync
def fsync(fd):
    calls[0] += 1
    if calls[0] == hang_at:
        print("hanging", flush=True)
        time.sleep(600)
    real_fsync(fd)
checkpoint.os.fsync = fsync
config = build_config({"hidden_size": 16, "num_layers": 1, "embedding_size": 8, "seq_len": 8, "batch_size": 4,
                       "max_steps": 40, "time_budget": "none", "eval_every": 10, "sample_length": 0, "device": "cpu"})
for _ in train(LanguageModelTask(read_corpus(Path("corpus.txt")), config), Path("run")):
    pass
print("finished", flush=True)
"""


# fsyncs 1-2: start.json and its folder; 3-12: the first round (step 10) of best and last
@pytest.mark.parametrize("hang_at", [13] + [pytest.param(n, marks=pytest.mark.slow) for n in (15, 16, 19, 21, 22)])
def test_a_kill_while_writing_leaves_the_previous_checkpoint_loadable(tmp_path, hang_at):
    import signal
    import subprocess
    import sys

    (tmp_path / "corpus.txt").write_text("abcdefghij klmnopqrst uvwxyz\n" * 40)
    (tmp_path / "child.py").write_text(_HANG_AT_FSYNC)
    child = subprocess.Popen([sys.executable, "child.py", str(hang_at)], cwd=tmp_path,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "hanging"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # the first round (step 10) wrote best and last with 10 fsyncs after start.json's 2; the kill hit the second
    for kind in ("best", "last"):
        loaded = load_checkpoint(tmp_path / "run", kind=kind)
        assert loaded.record["step"] in (10, 20) and loaded.path.name == f"{kind}.json"
    record = json.loads((tmp_path / "run" / "last.json").read_text())
    assert read_tensors(tmp_path / "run" / record["state"])  # the resume state is complete too


def test_non_finite_weights_are_never_saved(tmp_path):
    model = _save(tmp_path / "run")
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    with pytest.raises(CharlmError, match="NaN"):
        save_checkpoint(tmp_path / "run", "last", model.state_dict(),
                        json.loads((tmp_path / "run" / "last.json").read_text()))
    assert load_checkpoint(tmp_path / "run").record["step"] == 7
