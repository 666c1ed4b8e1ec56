"""The task `lines`: records one per line, per class; batches, padding, conditioning, resume, processes."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlm.cli import app
from charlm.config import build_config
from charlm.decode.sampling import SamplingOptions
from charlm.engine.checkpoint import read_tensors
from charlm.engine.distributed import SINGLE
from charlm.engine.events import Evaluated, RunFinished
from charlm.engine.loop import train
from charlm.runs import load_checkpoint
from charlm.tasks.lines.data import EncodedRecords, RecordEpoch, encode_records, pad_batch
from charlm.tasks.lines.inference import evaluate_lines, sample_records
from charlm.tasks.lines.model import RecordModelSpec, RecordRNN
from charlm.tasks.lines.task import RecordsTask
from charlm.text.records import read_records
from charlm.text.vocab import RecordVocab

NAMES = ["anna", "bob", "cyril", "dora", "eve", "fred", "gus", "hal", "ida", "joe", "kim", "lou", "max", "ned",
         "olga", "pia", "quin", "rex", "sam", "tom", "uma", "vic", "walt", "xena", "yuri", "zoe"]


def _config(**changes):
    values = {"task": "lines", "hidden_size": 32, "num_layers": 1, "embedding_size": 16, "batch_size": 8,
              "lr": 0.01, "warmup_steps": 5, "max_steps": 30, "time_budget": "none", "eval_every": 15,
              "log_every": 5, "sample_length": 1, "device": "cpu", "precision": "fp32"}
    return build_config(values, changes)


def _names_file(tmp_path, count=300):
    path = tmp_path / "names.txt"
    path.write_text("\n".join(NAMES[i % len(NAMES)] + NAMES[i * 7 % len(NAMES)][:i % 3] for i in range(count)) + "\n")
    return path


def test_batches_read_end_then_characters_and_predict_characters_then_end():
    vocab = RecordVocab.from_texts(["ab", "c"])
    records, _ = encode_records(["ab", "c"], vocab)
    inputs, targets, classes = pad_batch(records, np.array([0, 1]))
    end = RecordVocab.END
    a, b, c = (vocab.encode(ch)[0].item() for ch in "abc")
    assert inputs.T.tolist() == [[end, a, b], [end, c, end]]  # (B, T): the short record padded
    assert targets.T.tolist() == [[a, b, end], [c, end, -1]]
    assert classes is None


def test_padding_never_reaches_the_loss(tmp_path):
    config = _config()
    task = RecordsTask(read_records(_names_file(tmp_path)), config)
    task.prepare(SINGLE, None)
    torch.manual_seed(0)
    model = task.build_model()
    rows = np.arange(8)
    assert len(set(task.train.lengths[rows].tolist())) > 1  # the batch really has padding
    losses, grads = [], []
    for pad_id in (RecordVocab.END, task.vocab.size - 1, 3):
        inputs, targets, classes = pad_batch(task.train, rows, pad_id=pad_id)
        model.zero_grad()
        loss, _ = task.loss(model, type("B", (), {"tensors": (inputs, targets, classes)}), None, torch.device("cpu"))
        loss.backward()
        losses.append(loss.item())
        grads.append([p.grad.clone() for p in model.parameters()])
    assert losses[0] == losses[1] == losses[2]
    for other in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads[0], other))


def test_bucketing_groups_similar_lengths_and_an_epoch_plan_is_the_same_when_rebuilt():
    vocab = RecordVocab.from_texts(["x" * n for n in range(1, 40)])
    texts = ["x" * (1 + (i * 17) % 39) for i in range(2000)]
    records, _ = encode_records(texts, vocab)
    epoch = RecordEpoch(records, batch_size=10, world_rank=0, world_size=1, seed=3, epoch=2)
    spreads = [np.ptp(records.lengths[rows]) for rows in epoch.batches]
    assert np.mean(spreads) < 3  # vs ~30 for random batches of these lengths
    again = RecordEpoch(records, batch_size=10, world_rank=0, world_size=1, seed=3, epoch=2)
    assert np.array_equal(epoch.batches, again.batches)
    assert not np.array_equal(epoch.batches, RecordEpoch(records, 10, 0, 1, 3, 3).batches)


def test_a_run_learns_records_and_eval_rebuilds_its_validation_figure(tmp_path):
    run = tmp_path / "run"
    events = list(train(RecordsTask(read_records(_names_file(tmp_path)), _config(max_steps=120, eval_every=60)),
                        run))
    evals = [e for e in events if isinstance(e, Evaluated)]
    assert evals[-1].val_loss < evals[0].val_loss < 3.0
    assert isinstance(events[-1], RunFinished) and events[-1].best_score == min(e.val_loss for e in evals)
    loaded = load_checkpoint(run)
    assert loaded.task == "lines" and isinstance(loaded.vocab, RecordVocab)
    stats = evaluate_lines(loaded, precision="fp32")
    assert stats.nats_per_char == pytest.approx(events[-1].best_score, abs=1e-6)


def _disjoint_alphabets(tmp_path):
    lines = [f"{'abc'[i % 3]}{'cab'[i % 5 % 3]}{'bca'[i % 7 % 3] * (i % 4)}\tfirst" for i in range(150)]
    lines += [f"{'xyz'[i % 3]}{'zyx'[i % 5 % 3]}{'yzx'[i % 7 % 3] * (i % 4)}\tsecond" for i in range(150)]
    path = tmp_path / "two.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_eval_rebuilds_the_validation_figure_of_a_run_that_skipped_long_records(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("\n".join(NAMES * 4 + [name * 5 for name in NAMES]) + "\n")  # a fifth are over 10 characters
    config = _config(max_length=10, skip_long=True, val_frac=0.3, max_steps=10, eval_every=10, batch_size=4)
    events = list(train(RecordsTask(read_records(path), config), tmp_path / "run"))
    record = json.loads((tmp_path / "run" / "best.json").read_text())
    assert record["data"]["skipped_long"] > 0
    stats = evaluate_lines(load_checkpoint(tmp_path / "run"), precision="fp32")
    assert stats.records == record["split"]["val_records"]
    assert stats.nats_per_char == pytest.approx(events[-1].best_score, abs=1e-6)


def test_a_conditional_model_generates_only_its_own_classes_characters(tmp_path):
    run = tmp_path / "run"
    list(train(RecordsTask(read_records(_disjoint_alphabets(tmp_path)), _config(max_steps=200, eval_every=200)), run))
    loaded = load_checkpoint(run)
    assert loaded.classes == ["first", "second"]
    # top-p 0.9 leaves out the last tenth of the probability: after 200 steps a few stray
    # characters keep a fraction of a percent each, which plain sampling draws now and then.
    options = SamplingOptions(top_p=0.9)
    for name, alphabet in (("first", set("abc")), ("second", set("xyz"))):
        records = sample_records(loaded, 100, options, torch.Generator().manual_seed(0), class_name=name)
        assert all(r.label == name and r.text and set(r.text) <= alphabet for r in records), records[:5]


def test_the_unconditional_model_of_the_same_data_mixes_them(tmp_path):
    run = tmp_path / "run"
    list(train(RecordsTask(read_records(_disjoint_alphabets(tmp_path)),
                           _config(max_steps=200, eval_every=200, condition=False)), run))
    loaded = load_checkpoint(run)
    records = sample_records(loaded, 100, SamplingOptions(top_p=0.9), torch.Generator().manual_seed(0))
    assert loaded.classes == [] and {r.label for r in records} == {None}
    firsts = {r.text[0] for r in records}
    assert firsts & set("abc") and firsts & set("xyz")


def test_records_are_generated_side_by_side_and_end_by_themselves():
    torch.manual_seed(0)
    model = RecordRNN(RecordModelSpec(vocab_size=5, num_classes=2, hidden_size=8, num_layers=2, embedding_size=4))
    vocab = RecordVocab(("a", "b", "c", "d"))
    from charlm.tasks.lines.generate import generate_records

    records = generate_records(model, vocab, 64, SamplingOptions(), torch.Generator().manual_seed(1), max_length=12,
                               prefix="ab", classes=torch.randint(2, (64,)))
    assert len(records) == 64 and all(r.startswith("ab") and len(r) <= 12 for r in records)
    assert len(set(records)) > 10 and any(len(r) < 12 for r in records)


def test_a_record_that_ends_leaves_the_batch_and_the_others_go_on_unchanged():
    from charlm.tasks.lines.generate import generate_records

    torch.manual_seed(4)
    model = RecordRNN(RecordModelSpec(vocab_size=5, num_classes=8, hidden_size=8, num_layers=2, embedding_size=4))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 2)  # every class its own start state, and records of many lengths
    vocab, greedy, classes = RecordVocab(("a", "b", "c", "d")), SamplingOptions(temperature=0), torch.arange(8)
    together = generate_records(model, vocab, 8, greedy, torch.Generator(), max_length=12, classes=classes)
    alone = [generate_records(model, vocab, 1, greedy, torch.Generator(), max_length=12, classes=classes[i:i + 1])[0]
             for i in range(8)]
    assert together == alone and len({len(r) for r in together}) >= 3, together


# -- through the command line -------------------------------------------------

def _charlm(cwd, *args):
    """charlm ARGS run in `cwd`, in this process (a subprocess costs ~2 s of imports per call; the exit path of
    a real process is tested in test_cli.py)."""
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, [str(arg) for arg in args])
    finally:
        os.chdir(previous)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


LINES_FLAGS = ["--task", "lines", "--hidden-size", "32", "--num-layers", "2", "--embedding-size", "16",
               "--batch-size", "8", "--lr", "0.01", "--warmup-steps", "5", "--time-budget", "none",
               "--sample-length", "0", "--device", "cpu", "--precision", "fp32", "--dropout", "0.2"]


def _weights(run_dir):
    record = json.loads((run_dir / "last.json").read_text())
    return read_tensors(run_dir / record["weights"]), record


@pytest.mark.slow
def test_a_lines_run_killed_with_sigkill_resumes_bitwise_identically(tmp_path):
    from test_resume import _wait_for_step

    (tmp_path / "names.txt").write_text(_names_file(tmp_path).read_text())
    flags = [*LINES_FLAGS, "--max-steps", "200", "--eval-every", "20"]
    straight = _charlm(tmp_path, "train", "names.txt", "--out", "straight", *flags)
    assert straight.returncode == 0, straight.stderr
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "train", "names.txt", "--out", "killed", *flags],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_step(tmp_path / "killed", 90, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((tmp_path / "killed" / "last.json").read_text())["step"]
    assert 0 < killed_at < 200
    resumed = _charlm(tmp_path, "train", "--resume", "--out", "killed")
    assert resumed.returncode == 0, resumed.stderr
    expected, _ = _weights(tmp_path / "straight")
    got, record = _weights(tmp_path / "killed")
    assert record["step"] == 200 and all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.slow
def test_two_gloo_processes_train_a_lines_run_like_one_with_the_whole_batch(tmp_path):
    path = _disjoint_alphabets(tmp_path)
    flags = [*LINES_FLAGS, "--dropout", "0", "--max-steps", "20", "--eval-every", "10", "--dist-timeout", "60s"]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "-m", "charlm", "train", path.name, "--out", "ddp", *flags, "--batch-size", "4"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr
    single = _charlm(tmp_path, "train", path.name, "--out", "single", *flags, "--batch-size", "8")
    assert single.returncode == 0, single.stderr
    got, record = _weights(tmp_path / "ddp")
    expected, expected_record = _weights(tmp_path / "single")
    for name in expected:  # records of different lengths on each rank: the loss is normalised by the global batch
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)
    assert record["val_loss"] == pytest.approx(expected_record["val_loss"], abs=1e-5)


def test_sample_and_eval_of_a_lines_run_from_the_command_line(tmp_path):
    path = _disjoint_alphabets(tmp_path)
    done = _charlm(tmp_path, "train", path.name, *LINES_FLAGS, "--max-steps", "60", "--eval-every", "30")
    assert done.returncode == 0, done.stderr
    assert "2 classes (smallest first: 150" in done.stdout
    out = _charlm(tmp_path, "sample", "--num-samples", "5", "--class", "second", "--json", "--novelty", "--rng-seed", "3")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 0 and len(rows) == 5 and {r["class"] for r in rows} == {"second"}
    assert {r["seen"] for r in rows} <= {"new", "train", "val"} and "5 records:" in out.stderr
    scored = json.loads(_charlm(tmp_path, "eval", "--json", "--precision", "fp32").stdout)
    record = json.loads((tmp_path / "checkpoints" / "two" / "best.json").read_text())
    assert scored["records"] == record["split"]["val_records"] > 0  # the run's own split, rebuilt
    assert scored["nats_per_char"] == pytest.approx(record["val_loss"], abs=1e-6)


BAD = [
    (["sample", "--class", "nope"], "unknown class 'nope'; the model knows first, second"),
    (["sample", "--num-samples", "0"], "--num-samples must be at least 1"),
    (["sample", "--length", "9"], "--length applies to language-model runs"),
    (["eval", "--exact"], "--exact applies to language-model runs"),
    (["eval", "--dynamic"], "--dynamic applies to language-model runs"),
    (["eval", "odd.tsv"], "odd.tsv:2: 1 character(s) not in the model's vocabulary ('é'); pass --skip-unknown"),
    (["train", "two.tsv", "--task", "lines", "--seq-len", "9"], "seq_len (--seq-len) applies to --task lm"),
    (["train", "--resume", "--out", "checkpoints/two", "--task", "lm"], "--task cannot change when resuming"),
    (["train", "long.txt", "--task", "lines", "--max-length", "20"],
     "1 record(s) are longer than --max-length 20, the first at long.txt:2"),
    (["train", "running.txt", "--task", "lines"], "for running text use --task lm"),
    (["train", "a.txt", "b.txt", "--task", "lines"], "--task lines reads one path"),
    (["train", ".", "--task", "lines", "--include", "*.tsv"], "--include applies to --task lm; --task lines reads"),
]


@pytest.fixture(scope="module")
def lines_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lines")
    path = _disjoint_alphabets(root)
    done = _charlm(root, "train", path.name, *LINES_FLAGS, "--max-steps", "10", "--eval-every", "10")
    assert done.returncode == 0, done.stderr
    return root


@pytest.mark.parametrize("argv, words", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_lines_input_is_one_line_and_writes_nothing(lines_run, argv, words):
    (lines_run / "long.txt").write_text("ok\n" + "x" * 21 + "\nfine\n")
    (lines_run / "running.txt").write_text("word " * 3000)
    (lines_run / "a.txt").write_text("a\n")
    (lines_run / "b.txt").write_text("b\n")
    (lines_run / "odd.tsv").write_text("ab\tfirst\naé\tsecond\n")
    before = sorted(p.name for p in (lines_run / "checkpoints").iterdir())
    done = _charlm(lines_run, *argv)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and words in lines[0], done.stderr
    assert sorted(p.name for p in (lines_run / "checkpoints").iterdir()) == before


def test_eval_scores_a_file_of_one_class_and_the_figures_add_up(lines_run):
    # Training needs two classes; scoring a conditional model on one class's records needs one.
    files = {"first.tsv": ["abca\tfirst", "cab\tfirst"], "second.tsv": ["xyzzy\tsecond"]}
    files["both.tsv"] = files["first.tsv"] + files["second.tsv"]
    scored = {}
    for name, lines in files.items():
        (lines_run / name).write_text("\n".join(lines) + "\n")
        done = _charlm(lines_run, "eval", name, "--json", "--precision", "fp32")
        assert done.returncode == 0, done.stderr
        scored[name] = json.loads(done.stdout)
    (lines_run / "one").mkdir(exist_ok=True)
    (lines_run / "one" / "second.txt").write_text("xyzzy\n")
    done = _charlm(lines_run, "eval", "one", "--json", "--precision", "fp32")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["nats_per_char"] == pytest.approx(scored["second.tsv"]["nats_per_char"])
    first, second, both = scored["first.tsv"], scored["second.tsv"], scored["both.tsv"]
    assert (first["characters"], second["characters"], both["characters"]) == (9, 6, 15)  # end symbols counted
    assert both["nats_per_char"] == pytest.approx((9 * first["nats_per_char"] + 6 * second["nats_per_char"]) / 15)


def test_a_lines_run_trained_on_a_relative_path_evaluates_samples_and_resumes_from_elsewhere(lines_run, tmp_path):
    # The run was trained in lines_run on "two.tsv"; its records are read again from any directory.
    run = lines_run / "checkpoints" / "two"
    scored = _charlm(tmp_path, "eval", "--checkpoint", str(run), "--json", "--precision", "fp32")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["records"] == json.loads((run / "last.json").read_text())["split"]["val_records"]
    novelty = _charlm(tmp_path, "sample", "--checkpoint", str(run), "--novelty", "--num-samples", "2")
    assert novelty.returncode == 0 and "2 records:" in novelty.stderr, novelty.stderr
    shutil.copytree(run, tmp_path / "copy")
    resumed = _charlm(tmp_path, "train", "--resume", "--out", "copy", "--max-steps", "12")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "copy" / "last.json").read_text())["step"] == 12


def test_unique_records_are_distinct_and_a_shortfall_is_said_truly(lines_run):
    done = _charlm(lines_run, "sample", "--num-samples", "6", "--unique", "--class", "first", "--rng-seed", "1")
    assert done.returncode == 0 and len(set(done.stdout.splitlines())) == len(done.stdout.splitlines()) == 6
    greedy = _charlm(lines_run, "sample", "--num-samples", "3", "--unique", "--temperature", "0", "--class", "first")
    assert greedy.returncode == 0 and len(greedy.stdout.splitlines()) == 1  # greedy draws one record, every time
    # 3 draws, then 2 in each of 19 more rounds: not "60 draws" (3 x 20), as it said
    assert greedy.stderr.splitlines()[-1:] == ["charlm: only 1 distinct record(s) turned up in 20 rounds of drawing; a "
                                          "higher --temperature (or --top-p 1) gives more variety"]


def test_skip_long_leaves_long_records_out_with_a_count(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("\n".join(["ab", "abc" * 20] + [n for n in NAMES] * 3) + "\n")
    task = RecordsTask(read_records(path), _config(max_length=10, skip_long=True, batch_size=4))
    task.prepare(SINGLE, None)
    assert task.skipped_long == 1 and "1 over --max-length skipped" in task.data_summary()
    assert int(task.train.lengths.max()) <= 10 and isinstance(task.train, EncodedRecords)
