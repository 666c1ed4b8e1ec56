"""seq2seq from the command line: train, translate, eval; bad input; exact resume after SIGKILL; two processes."""

import json
import os
import random
import signal
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from charlm.cli import app
from charlm.engine.checkpoint import read_tensors

# One torch thread in the child processes: tiny models on two shared cores run several times faster.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FLAGS = ["--task", "seq2seq", "--hidden-size", "32", "--num-layers", "1", "--embedding-size", "16",
         "--batch-size", "16", "--lr", "0.01", "--warmup-steps", "5", "--time-budget", "none", "--sample-length", "0",
         "--device", "cpu", "--cell", "gru"]


def _charlm(cwd, *args, stdin=None, env=None):
    """charlm ARGS run in `cwd`, in this process (a subprocess costs ~2 s of imports per call; the exit path of
    a real process is tested in test_cli.py and below, where a reader leaves early)."""
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, [str(arg) for arg in args], input=stdin, env=env)
    finally:
        os.chdir(previous)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def _reversal_lines(count=400, seed=0):
    rng = random.Random(seed)
    strings = sorted({"".join(rng.choice("abcdef") for _ in range(rng.randint(3, 7))) for _ in range(count)})
    return [f"{s}\t{s[::-1]}" for s in strings]


def _write(root, name, lines):
    (root / name).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A seq2seq run (checkpoints/rev) and a language-model run (checkpoints/text) in one folder."""
    root = tmp_path_factory.mktemp("seq2seq")
    _write(root, "rev.tsv", _reversal_lines())
    done = _charlm(root, "train", "rev.tsv", *FLAGS, "--max-steps", "40", "--eval-every", "20")
    assert done.returncode == 0, done.stderr
    (root / "text.txt").write_text("abc abd abe " * 200)
    done = _charlm(root, "train", "text.txt", "--hidden-size", "16", "--num-layers", "1", "--seq-len", "16",
                   "--max-steps", "2", "--time-budget", "none", "--sample-length", "0")
    assert done.returncode == 0, done.stderr
    return root


REV = ["--checkpoint", "checkpoints/rev"]


def test_training_says_what_it_read(runs):
    log = json.loads((runs / "checkpoints" / "rev" / "best.json").read_text())
    assert log["task"] == "seq2seq" and log["source_vocab"]["reserved"] == ["<pad>", "<start>", "<end>"]
    assert log["data"]["val_sources"] == log["split"]["val_sources"] > 0


def test_translate_writes_one_line_per_text_and_json_per_piped_line(runs):
    out = _charlm(runs, "translate", *REV, "abc", "fed", "")
    assert out.returncode == 0 and out.stdout.count("\n") == 3 and not out.stderr, out.stderr
    piped = _charlm(runs, "translate", *REV, "-", "--json", stdin="abc\n\nfed\n")
    rows = [json.loads(line) for line in piped.stdout.splitlines()]
    assert [r["source"] for r in rows] == ["abc", "", "fed"] and rows[1]["translation"] == ""
    plain = _charlm(runs, "translate", *REV, "-", stdin="abc\nfed\n")  # piped: batched, same greedy outputs
    assert plain.stdout.splitlines() == [r["translation"] for r in rows if r["source"]]
    assert out.stdout.splitlines()[:2] == plain.stdout.splitlines()  # streamed == batched


def test_beam_search_lists_the_n_best(runs):
    out = _charlm(runs, "translate", *REV, "--beam-size", "4", "--n-best", "3", "abcd", "--json")
    [row] = [json.loads(line) for line in out.stdout.splitlines()]
    scores = [c["normalized_score"] for c in row["n_best"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and row["translation"] == row["n_best"][0]["text"]
    plain = _charlm(runs, "translate", *REV, "--beam-size", "4", "--n-best", "2", "abcd")
    assert plain.stdout.splitlines()[0] == "abcd" and len(plain.stdout.splitlines()) == 3


def test_unknown_source_characters_are_named_once_and_left_out(runs):
    out = _charlm(runs, "translate", *REV, "abxc", "xxab", "--json")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 0 and [r["read"] for r in rows] == ["abc", "ab"]
    assert out.stderr.count("\n") == 1 and "never saw are left out: 'x'" in out.stderr
    strict = _charlm(runs, "translate", *REV, "abxc", "--strict")
    assert strict.returncode == 1 and strict.stdout == "" and "'x'" in strict.stderr.strip()


def test_a_reader_that_leaves_early_is_not_an_error(runs):
    done = subprocess.run(f"yes abc | head -n 3000 | {sys.executable} -m charlm translate --checkpoint checkpoints/rev - | head -n 1",
                          shell=True, cwd=runs, capture_output=True, text=True, timeout=300, env=ENV)
    assert done.stdout.count("\n") == 1 and done.stderr == "", done.stderr


def test_eval_gives_the_figures_and_draws_attention_without_colour(runs):
    out = _charlm(runs, "eval", *REV, "--json")
    figures = json.loads(out.stdout)
    record = json.loads((runs / "checkpoints" / "rev" / "best.json").read_text())
    assert figures["nats_per_char"] == pytest.approx(record["val_loss"], abs=1e-6)
    assert figures["chrf"] == pytest.approx(record["metrics"]["val_chrf"])
    assert {"exact_match", "bleu", "bits_per_char", "perplexity"} <= set(figures) and figures["decoding"] == "greedy"
    _write(runs, "held.tsv", ["abcabc\tcbacba", "fed\tdef"])
    drawn = _charlm(runs, "eval", *REV, "held.tsv", "--show-attention", "2", "--beam-size", "2",
                    env={"NO_COLOR": "1"})
    lines = drawn.stdout.splitlines()
    assert drawn.returncode == 0 and any("decoded            beam 2, length penalty 0.6" in line for line in lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("abcabc -> "))
    assert lines[header + 1].split() == list("abcabc")  # the source across
    rows = [line.split(maxsplit=1) for line in lines[header + 2:header + 5]]  # label, then a mark per column
    assert len(rows) == 3 and all(len(row) == 1 or set(row[1]) <= set(" .:-=+*#%@") for row in rows)


BOUNDED = [*FLAGS, "--max-steps", "5"]
BAD = [
    (["train", "notab.tsv", *BOUNDED], "notab.tsv:2: no tab between source and target"),
    (["train", "empty.tsv", *BOUNDED], "empty.tsv:1: empty target"),
    (["train", "rev.tsv", *BOUNDED, "--max-source-length", "2"], "are longer than --max-source-length 2"),
    (["train", "rev.tsv", *BOUNDED, "--hidden-size", "33"], "must be even for --task seq2seq"),
    (["train", "rev.tsv", "--reverse"], "reverse (--reverse) applies to --task seq2seq"),
    (["train", "rev.tsv", *BOUNDED, "--max-length", "9"], "max_length (--max-length) applies to --task lines"),
    (["train", "rev.tsv", "other.tsv", *BOUNDED], "--task seq2seq reads one path"),
    (["translate", "--checkpoint", "checkpoints/text", "abc"], "is a lm run, which charlm translate does not serve; "
                                                               "use charlm sample"),
    (["sample", *REV], "is a seq2seq run, which charlm sample does not serve; use charlm translate"),
    (["translate", *REV, "--beam-size", "0", "abc"], "--beam-size must be at least 1, got 0"),
    (["translate", *REV, "--beam-size", "2", "--n-best", "3", "abc"], "--n-best must be between 1 and --beam-size (2)"),
    (["translate", *REV, "--n-best", "2", "abc"], "--n-best must be between 1 and --beam-size (1)"),
    (["translate", *REV, "--temperature", "1", "--beam-size", "2", "abc"], "give one of them"),
    (["translate", *REV, "--top-k", "3", "abc"], "--top-k applies to sampling"),
    (["translate", *REV], "give a text to translate, or -"),
    (["eval", *REV, "--exact"], "--exact applies to language-model runs"),
    (["eval", *REV, "--beam-size", "0"], "--beam-size must be at least 1"),
    (["eval", "--checkpoint", "checkpoints/text", "--beam-size", "3"], "--beam-size applies to seq2seq runs"),
    (["eval", *REV, "unknown.tsv"], "have characters the model never saw: 'z'"),
]


@pytest.mark.parametrize("argv, words", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_input_is_one_line_and_writes_nothing(runs, argv, words, monkeypatch):
    monkeypatch.chdir(runs)
    _write(runs, "notab.tsv", ["a\tb", "no tab here"])
    _write(runs, "empty.tsv", ["a\t"])
    _write(runs, "other.tsv", ["a\tb"])
    _write(runs, "unknown.tsv", ["abz\tzba", "abc\tcba"])
    before = sorted(p.name for p in (runs / "checkpoints").iterdir())
    result = CliRunner().invoke(app, argv)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("charlm: error: "), result.output
    assert words in lines[0] and result.stdout == "" and "Traceback" not in result.output
    assert sorted(p.name for p in (runs / "checkpoints").iterdir()) == before


def _weights(run_dir):
    record = json.loads((run_dir / "last.json").read_text())
    return read_tensors(run_dir / record["weights"]), record


@pytest.mark.slow
def test_a_seq2seq_run_killed_with_sigkill_resumes_bitwise_identically(tmp_path):
    from test_resume import _wait_for_step

    _write(tmp_path, "rev.tsv", _reversal_lines(600))
    flags = [*FLAGS, "--dropout", "0.2", "--num-layers", "2", "--max-steps", "120", "--eval-every", "20"]
    straight = _charlm(tmp_path, "train", "rev.tsv", "--out", "straight", *flags)
    assert straight.returncode == 0, straight.stderr
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "train", "rev.tsv", "--out", "killed", *flags],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for_step(tmp_path / "killed", 50, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((tmp_path / "killed" / "last.json").read_text())["step"]
    assert 0 < killed_at < 120
    resumed = _charlm(tmp_path, "train", "--resume", "--out", "killed")
    assert resumed.returncode == 0, resumed.stderr
    expected, _ = _weights(tmp_path / "straight")
    got, record = _weights(tmp_path / "killed")
    assert record["step"] == 120 and all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.slow
def test_two_gloo_processes_train_a_seq2seq_run_like_one_with_the_whole_batch(tmp_path):
    _write(tmp_path, "rev.tsv", _reversal_lines(600))
    flags = [*FLAGS, "--max-steps", "20", "--eval-every", "10", "--dist-timeout", "60s", "--attention", "dot"]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "-m", "charlm", "train", "rev.tsv", "--out", "ddp", *flags, "--batch-size", "8"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600, env=ENV)
    assert ddp.returncode == 0, ddp.stderr
    single = _charlm(tmp_path, "train", "rev.tsv", "--out", "single", *flags, "--batch-size", "16")
    assert single.returncode == 0, single.stderr
    got, record = _weights(tmp_path / "ddp")
    expected, expected_record = _weights(tmp_path / "single")
    for name in expected:  # pairs of different lengths on each rank: the loss is normalised by the global batch
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)
    for key in ("val_loss", "val_chrf", "val_exact_match"):  # sharded scoring and decoding, gathered
        assert record["metrics"][key] == pytest.approx(expected_record["metrics"][key], abs=1e-5), key


def test_the_report_draws_attention_maps_of_validation_translations(runs, monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(runs)
    result = CliRunner().invoke(app, ["report", "checkpoints/rev", "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text()
    assert '<section id="attention">' in html and html.count('id="plot-attention-0-') == 3
    assert "No view for" not in html  # seq2seq has its view
    # without the data the view is a note; the curves remain
    (runs / "rev.tsv").rename(runs / "moved.tsv")
    try:
        result = CliRunner().invoke(app, ["report", "checkpoints/rev", "-o", str(tmp_path / "s.html")])
    finally:
        (runs / "moved.tsv").rename(runs / "rev.tsv")
    assert result.exit_code == 0 and "no attention view: the run's pairs (" in result.stderr and "rev.tsv) are not there" in result.stderr
    assert 'id="plot-loss-step"' in (tmp_path / "s.html").read_text()


def test_the_python_api_translates_as_the_command_line_does(runs):
    import charlm

    piped = _charlm(runs, "translate", *REV, "-", "--json", "--beam-size", "3", "--n-best", "2", stdin="abc\nfexd\n")
    run = charlm.load(runs / "checkpoints" / "rev")
    assert run.translate(["abc", "fexd"], beam_size=3, n_best=2) == [json.loads(l) for l in piped.stdout.splitlines()]
    assert run.translate("abc")["translation"] == _charlm(runs, "translate", *REV, "abc").stdout.strip()
    with pytest.raises(charlm.CharlmError, match="'x'"):
        run.translate("fexd", strict=True)
    with pytest.raises(charlm.CharlmError, match="is a seq2seq run; generate\\(\\) serves lm runs|serves"):
        run.generate("abc")
