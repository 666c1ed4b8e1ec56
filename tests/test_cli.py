"""The command line end to end: the real entry point, and a one-line answer to every bad input."""

import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from charlm.cli import app
from conftest import REPO

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 40


def charlm(*args, cwd):
    return subprocess.run([sys.executable, "-m", "charlm", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_train_sample_eval_through_the_real_entry_point(tmp_path):
    (tmp_path / "fox.txt").write_text(TEXT)
    trained = charlm("train", "fox.txt", "--config", REPO / "configs" / "tiny.toml", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert 'cell = "lstm"' in trained.stdout  # the resolved config is printed
    assert "best val" in trained.stdout and "checkpoints/fox" in trained.stdout
    assert (tmp_path / "checkpoints" / "fox" / "best.json").is_file()

    args = ("sample", "--seed", "the ", "--length", "60", "--rng-seed", "7")
    first, second = charlm(*args, cwd=tmp_path), charlm(*args, cwd=tmp_path)
    assert first.returncode == 0 and first.stdout == second.stdout
    assert first.stdout.startswith("the ") and len(first.stdout) == len("the ") + 60 + 1

    scored = charlm("eval", "--json", cwd=tmp_path)
    figures = json.loads(scored.stdout)
    assert figures["characters"] == int(round(len(TEXT) * 0.1)) - 1
    assert abs(figures["bits_per_char"] - figures["nats_per_char"] / 0.6931471805599453) < 1e-9
    on_file = json.loads(charlm("eval", "fox.txt", "--checkpoint", "checkpoints/fox", "--json", cwd=tmp_path).stdout)
    assert on_file["characters"] == len(TEXT) - 1


def test_console_script_is_installed():
    script = shutil.which("charlm") or str(Path(sys.executable).parent / "charlm")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "train" in done.stdout and "sample" in done.stdout


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny trained run directory, made once through the library."""
    from charlm.config import build_config, load_config_file
    from charlm.text.corpus import read_corpus
    from charlm.engine.loop import train
    from charlm.tasks.lm.task import LanguageModelTask

    root = tmp_path_factory.mktemp("trained")
    (root / "fox.txt").write_text(TEXT)
    config = build_config(load_config_file(REPO / "configs" / "tiny.toml"), {"device": "cpu"})
    for _ in train(LanguageModelTask(read_corpus(root / "fox.txt"), config), root / "run"):
        pass
    return root


def test_sample_streams_characters_as_they_are_made(trained_run):
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "sample", "--checkpoint", trained_run / "run",
                             "--length", "1000000", "--seed", "the"], stdout=subprocess.PIPE)
    try:
        first = proc.stdout.read(20)
        assert len(first) == 20 and proc.poll() is None  # output arrived while still generating
    finally:
        proc.kill()
        proc.wait()


def test_skip_unknown_scores_the_rest(trained_run, tmp_path):
    (tmp_path / "odd.txt").write_text("the fox€ jumps§ over")
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "odd.txt"), "--checkpoint",
                                      str(trained_run / "run"), "--skip-unknown", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["skipped"] == 2 and figures["characters"] == len("the fox jumps over") - 1


def test_bom_and_crlf_corpus_trains_and_samples_with_crlf_around_its_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("crlf.txt").write_bytes(b"\xef\xbb\xbf" + TEXT.replace("\n", "\r\n").encode())
    result = CliRunner().invoke(app, ["train", "crlf.txt", "--config", str(REPO / "configs" / "tiny.toml"),
                                      "--max-steps", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    vocab = json.loads(Path("checkpoints/crlf/last.json").read_text())["vocab"]
    assert "\r" in vocab and "\ufeff" not in vocab
    # the prime (a line end by default, or a typed seed's line ends) and the closing line end are CRLF
    for seed, starts in ((), b"\r\n"), (("--seed", "the\nfox"), b"the\r\nfox"):
        sampled = CliRunner().invoke(app, ["sample", "--length", "20", "--rng-seed", "1", *seed])
        assert sampled.exit_code == 0, sampled.output
        assert sampled.stdout_bytes.startswith(starts) and sampled.stdout_bytes.endswith(b"\r\n")


def test_sample_says_on_stderr_which_run_it_picked(trained_run, tmp_path, monkeypatch):
    _setup_run(trained_run, tmp_path)
    monkeypatch.chdir(tmp_path)
    picked = CliRunner().invoke(app, ["sample", "--length", "5"])
    assert picked.exit_code == 0 and picked.stderr == "charlm: sampling from checkpoints/fox/best.json (step 40)\n"
    given = CliRunner().invoke(app, ["sample", "--length", "5", "--checkpoint", "checkpoints/fox"])
    assert given.exit_code == 0 and given.stderr == ""


def test_help_shows_flags_as_flags_and_tells_seed_from_rng_seed():
    for argv in (["-h"], ["train", "-h"], ["sample", "--help"], ["eval", "-h"], ["translate", "-h"], ["corpus", "-h"],
                 ["corpus", "list", "-h"]):
        result = CliRunner().invoke(app, argv, env={"COLUMNS": "250"})
        assert result.exit_code == 0 and "Usage" in result.output, result.output
        assert "<bool>" not in result.output and "<list[" not in result.output, result.output
    lines = CliRunner().invoke(app, ["train", "-h"], env={"COLUMNS": "250"}).output.splitlines()
    resume = next(line for line in lines if "--resume" in line)
    assert "<" not in resume.split("continue")[0]  # nothing between the flag and its help: it takes no value
    lines = CliRunner().invoke(app, ["sample", "-h"], env={"COLUMNS": "250"}).output.splitlines()
    assert "for reproducible samples use --rng-seed" in next(line for line in lines if line.startswith("│ --seed "))
    assert "(--seed is the prime text)" in next(line for line in lines if line.startswith("│ --rng-seed"))


def test_version_and_shell_completion():
    version = CliRunner().invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout == "charlm 0.1.0\n"
    completed = CliRunner().invoke(app, [], prog_name="charlm", env={"_CHARLM_COMPLETE": "complete_bash",
                                                                    "COMP_WORDS": "charlm trai", "COMP_CWORD": "1"})
    assert completed.exit_code == 0 and completed.stdout == "train\n"


@pytest.mark.parametrize("argv", [["--help"], ["sample", "--length", "100"],
                                  *(pytest.param(argv, marks=pytest.mark.slow) for argv in (["train", "-h"],
                                                                                         ["corpus", "list"]))])
def test_a_reader_that_leaves_early_is_not_an_error(argv, trained_run, tmp_path):
    # `charlm ... | head -1`: here the reader has gone before the first line, so every write fails
    _setup_run(trained_run, tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "charlm", *argv], cwd=tmp_path, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "error" not in done.stderr, done.stderr


def _setup_run(trained_run, tmp_path, damage=None):
    shutil.copytree(trained_run / "run", tmp_path / "checkpoints" / "fox")
    shutil.copy(trained_run / "fox.txt", tmp_path / "fox.txt")
    run = tmp_path / "checkpoints" / "fox"
    record = json.loads((run / "best.json").read_text())
    if damage == "truncate":
        weights = run / record["weights"]
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "json":
        (run / "best.json").write_text('{"format": "charlm-checkpoint", ')
    elif damage == "both-json":
        for name in ("best.json", "last.json"):
            (run / name).write_text('{"format": "charlm-checkpoint", ')
    elif damage == "version":
        (run / "best.json").write_text(json.dumps(dict(record, format_version=0)))
    elif damage == "corpus-gone":
        (tmp_path / "fox.txt").unlink()
    elif damage == "corpus-changed":
        (tmp_path / "fox.txt").write_text(TEXT + "more")
    # the recorded corpus path points at the copy in this directory
    for name in ("best.json", "last.json"):
        path = run / name
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        data["corpus"]["files"][0]["path"] = str(tmp_path / "fox.txt")
        path.write_text(json.dumps(data))


TINY = str(REPO / "configs" / "tiny.toml")


def _zipped(name: str, text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr(name, text)
    return buffer.getvalue()


def _row(name, files, argv, run_setup, problem, way_out):
    """files: relative path -> content (str or bytes), or None for an empty directory.
    problem, way_out: what the message must say is wrong, and how to put it right (None: not yet, see below)."""
    return pytest.param(files, argv, run_setup, problem, way_out, id=name)


# Range and choice errors state the allowed values: that is their way out.
BAD_INPUTS = [
    _row("missing file", {}, ["train", "nope.txt"], None, "corpus file nope.txt does not exist", "check the path"),
    _row("directory given as file", {"d/a.txt": TEXT}, ["eval", "d"], "ok", "d is a directory",
         "give the path of a text file"),
    _row("directory with no files", {"hollow": None}, ["train", "hollow"], None,
         "directory hollow has no files to train on", "check the path"),
    _row("directory of binary files", {"adir/x.bin": b"\0\1\2"}, ["train", "adir"], None,
         "no files left to train on: skipped adir/x.bin: it looks binary", "point at text files"),
    _row("glob matching nothing", {}, ["train", "*.txt"], None, "no files match *.txt", "check the pattern"),
    _row("unknown tokenizer", {"c.txt": TEXT}, ["train", "c.txt", "--tokenizer", "words"], None, "got 'words'",
         "must be one of chars, bytes"),
    _row("eval test split without one", {}, ["eval", "--split", "test"], "ok", "has no test split",
         "use --split val"),
    _row("empty file", {"e.txt": ""}, ["train", "e.txt"], None, "corpus e.txt is empty",
         "give a text file with some content"),
    _row("whitespace only", {"w.txt": " \n\t\n"}, ["train", "w.txt"], None, "corpus w.txt holds only whitespace",
         "give a text file with some content"),
    _row("not utf-8", {"b.txt": b"abc\xff\xfe"}, ["train", "b.txt"], None, "byte 0xff at offset 3",
         "convert it to UTF-8"),
    _row("shorter than one batch", {"s.txt": "tiny text"}, ["train", "s.txt", "--config", TINY], None, "too short",
         "use a longer text"),
    _row("val-frac 0", {"c.txt": TEXT}, ["train", "c.txt", "--val-frac", "0"], None, "--val-frac", "must be > 0.0"),
    _row("val-frac 1", {"c.txt": TEXT}, ["train", "c.txt", "--val-frac", "1"], None, "--val-frac", "must be < 1.0"),
    _row("val-frac negative", {"c.txt": TEXT}, ["train", "c.txt", "--val-frac", "-0.2"], None, "--val-frac",
         "must be > 0.0"),
    _row("seq-len 0", {"c.txt": TEXT}, ["train", "c.txt", "--seq-len", "0"], None, "--seq-len", "must be >= 1"),
    _row("batch-size negative", {"c.txt": TEXT}, ["train", "c.txt", "--batch-size", "-4"], None, "--batch-size",
         "must be >= 1"),
    _row("hidden-size 0", {"c.txt": TEXT}, ["train", "c.txt", "--hidden-size", "0"], None, "--hidden-size",
         "must be >= 1"),
    _row("unknown cell", {"c.txt": TEXT}, ["train", "c.txt", "--cell", "transformer"], None, "got 'transformer'",
         "must be one of rnn, lstm, gru"),
    _row("model too big for memory", {"c.txt": TEXT}, ["train", "c.txt", "--config", TINY, "--hidden-size", "100000"],
         None, "this run needs about", "is available on"),
    _row("bad time budget", {"c.txt": TEXT}, ["train", "c.txt", "--time-budget", "soon"], None,
         "time budget 'soon'", "such as 90s, 5m or 1h"),
    _row("time budget 0", {"c.txt": TEXT}, ["train", "c.txt", "--time-budget", "0"], None, "time budget '0'",
         "such as 90s"),
    _row("unknown config key", {"c.txt": TEXT, "k.toml": "hiden_size = 3\n"}, ["train", "c.txt", "--config", "k.toml"],
         None, "unknown config key 'hiden_size'", "did you mean 'hidden_size'?"),
    _row("malformed toml", {"c.txt": TEXT, "m.toml": "lr = = 1\n"}, ["train", "c.txt", "--config", "m.toml"], None,
         "config file m.toml is not valid TOML", "fix that line"),
    _row("missing config", {"c.txt": TEXT}, ["train", "c.txt", "--config", "nope.toml"], None,
         "config file nope.toml not found", "check the path"),
    _row("fp16 on a cpu", {"c.txt": TEXT}, ["train", "c.txt", "--device", "cpu", "--precision", "fp16"], None,
         "--precision fp16 needs a GPU", "use --precision bf16 or fp32"),
    _row("eval fp16 on a cpu", {}, ["eval", "--precision", "fp16"], "ok", "--precision fp16 needs a GPU",
         "use --precision bf16 or fp32"),
    _row("unknown precision", {"c.txt": TEXT}, ["train", "c.txt", "--precision", "fp8"], None,
         "precision (--precision) must be one of auto, fp32, bf16, fp16", "got 'fp8'"),
    _row("resume with no run", {"c.txt": TEXT}, ["train", "c.txt", "--resume"], None, "nothing to resume",
         "start a new run without --resume"),
    _row("existing run without resume", {}, ["train", "fox.txt", "--config", TINY], "ok",
         "run directory checkpoints/fox already exists", "continue it with --resume"),
    _row("checkpoint missing", {}, ["sample", "--checkpoint", "nowhere"], None, "checkpoint nowhere does not exist",
         "check the path"),
    _row("no checkpoints/ yet", {}, ["sample"], None, "no trained runs under checkpoints/", "train one first"),
    _row("checkpoints/ is empty", {"checkpoints": None}, ["sample"], None, "no trained runs under checkpoints/",
         "train one first"),
    # best damaged, last intact: say so and point to last
    _row("truncated weights", {}, ["sample"], "truncate", "is damaged or not a safetensors file",
         "the run's last checkpoint is intact: pass --checkpoint checkpoints/fox/last.json"),
    _row("corrupted json", {}, ["sample"], "json", "best.json is damaged: not valid JSON",
         "the run's last checkpoint is intact: pass --checkpoint checkpoints/fox/last.json"),
    _row("wrong version", {}, ["eval"], "version", "format version 0", "pass --checkpoint checkpoints/fox/last.json"),
    _row("both checkpoints damaged", {}, ["sample"], "both-json", "best.json is damaged: not valid JSON",
         "use another checkpoint or train again"),
    _row("empty stop string", {}, ["sample", "--stop", ""], "ok", "--stop must not be empty", "leave it out"),
    _row("--out is a file", {"c.txt": TEXT, "small.txt": "notes"}, ["train", "c.txt", "--out", "small.txt"], None,
         "--out small.txt is a file, not a directory", "choose a directory with --out"),
    _row("--resume --out a file", {"small.txt": "notes"}, ["train", "--resume", "--out", "small.txt"], None,
         "--out small.txt is a file, not a run directory", "pass the run's directory with --out"),
    _row("--out a folder of other files", {"c.txt": TEXT, "mine/notes.txt": "notes"},
         ["train", "c.txt", "--out", "mine"], None, "--out mine holds files charlm did not write (notes.txt)",
         "choose an empty or new directory"),
    _row("--config a directory", {"c.txt": TEXT, "confs": None}, ["train", "c.txt", "--config", "confs"], None,
         "--config confs is a directory", "give a TOML file"),
    _row("named corpus misspelt", {}, ["train", "tinyshakespear"], None, "corpus file tinyshakespear does not exist",
         "did you mean the named corpus tinyshakespeare?"),
    _row("gzip file", {"c.txt.gz": gzip.compress(TEXT.encode())}, ["train", "c.txt.gz"], None,
         "c.txt.gz is gzip-compressed, not UTF-8 text", "gunzip -k c.txt.gz"),
    _row("zip file", {"c.zip": _zipped("c.txt", TEXT)}, ["train", "c.zip"], None, "c.zip is a zip archive",
         "unzip c.zip"),
    _row("UTF-16 file", {"u.txt": TEXT.encode("utf-16")}, ["train", "u.txt"], None, "u.txt is UTF-16 text",
         "iconv -f UTF-16 -t UTF-8 u.txt"),
    _row("UTF-16 without a BOM", {"u.txt": TEXT.encode("utf-16-le")}, ["train", "u.txt"], None,
         "u.txt is UTF-16 text", "iconv -f UTF-16LE -t UTF-8 u.txt"),
    _row("UTF-16 in a directory", {"d/u.txt": TEXT.encode("utf-16")}, ["train", "d"], None,
         "skipped d/u.txt: it is UTF-16 text", "iconv -f UTF-16 -t UTF-8 d/u.txt"),
    _row("resume with a preset that changes the model", {"big.toml": "hidden_size = 64\n"},
         ["train", "--resume", "--out", "checkpoints/fox", "--config", "big.toml"], "ok",
         "hidden_size = 64 in big.toml differs from the run's 32", "resume without --config"),
    _row("config key without a value", {"c.txt": TEXT, "k.toml": "learning_rate =\n"},
         ["train", "c.txt", "--config", "k.toml"], None, "k.toml, line 1: learning_rate has no value",
         "the setting is called lr: e.g. lr = 0.002"),
    _row("another tool's name for a key", {"c.txt": TEXT, "k.toml": "learning_rate = 0.01\n"},
         ["train", "c.txt", "--config", "k.toml"], None, "unknown config key 'learning_rate'", "did you mean 'lr'?"),
    _row("prime out of vocabulary", {}, ["sample", "--seed", "the €"], "ok", "'€'",
         "use only characters of its training text"),
    _row("negative temperature", {}, ["sample", "--temperature", "-1"], "ok", "--temperature",
         "must be 0 (greedy) or positive"),
    _row("top-p zero", {}, ["sample", "--top-p", "0"], "ok", "--top-p", "must be in (0, 1]"),
    _row("top-p above one", {}, ["sample", "--top-p", "1.5"], "ok", "--top-p", "must be in (0, 1]"),
    _row("top-k zero", {}, ["sample", "--top-k", "0"], "ok", "--top-k", "must be at least 1"),
    _row("negative length", {}, ["sample", "--length", "-5"], "ok", "--length", "must be 0 or more"),
    _row("eval unknown characters", {"odd.txt": "the fox€"}, ["eval", "odd.txt"], "ok",
         "not in the model's vocabulary: '€'", "pass --skip-unknown"),
    _row("eval missing file", {}, ["eval", "gone.txt"], "ok", "text file gone.txt does not exist", "check the path"),
    _row("eval corpus gone", {}, ["eval"], "corpus-gone", "is gone", "charlm eval FILE"),
    _row("eval corpus changed", {}, ["eval"], "corpus-changed", "has changed", "charlm eval FILE"),
]
if not torch.cuda.is_available():
    BAD_INPUTS.append(_row("cuda without cuda", {"c.txt": TEXT}, ["train", "c.txt", "--device", "cuda"], None,
                           "no CUDA", "use --device cpu"))


def _snapshot(root: Path) -> dict:
    """Every file (size, mtime) and every directory under root: a command that fails must leave it as it was."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("files, argv, run_setup, problem, way_out", BAD_INPUTS)
def test_bad_input_gets_one_line_and_changes_nothing(files, argv, run_setup, problem, way_out, tmp_path, monkeypatch,
                                                     trained_run):
    monkeypatch.chdir(tmp_path)
    for rel, content in files.items():
        path = tmp_path / rel
        if content is None:
            path.mkdir(parents=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    if run_setup:
        _setup_run(trained_run, tmp_path, run_setup)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charlm: error: "), result.stderr
    assert problem in lines[0], lines[0]
    assert way_out is None or way_out in lines[0], f"no way out ({way_out!r}) in: {lines[0]}"
    assert "Traceback" not in result.output
    assert _snapshot(tmp_path) == before  # nothing written, overwritten or left behind, empty directories included


@pytest.mark.parametrize("argv, words", [
    (["train", "--hidden-size", "abc"], "--hidden-size"),
    pytest.param(["train", "--bogus"], "No such option: --bogus", marks=pytest.mark.slow),
    pytest.param(["sample", "--top-k"], "--top-k", marks=pytest.mark.slow),
    (["train", "--max-steps", "12x"], "'--max-steps': must be a whole number or none"),
])
def test_usage_errors_are_one_line_with_exit_code_2(argv, words, tmp_path):
    done = charlm(*argv, cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and words in lines[0], done.stderr


def test_disk_full_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    import charlm.files as checkpoint
    from charlm.runs import load_checkpoint

    monkeypatch.chdir(tmp_path)
    Path("fox.txt").write_text(TEXT)
    calls, real_fsync = [], os.fsync

    def fsync_until_full(fd):
        calls.append(fd)
        if len(calls) > 10:  # the first round of checkpoints (step 20) fits, the next does not
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync_until_full)
    result = CliRunner().invoke(app, ["train", "fox.txt", "--config", TINY, "--device", "cpu"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0]
    assert load_checkpoint(Path("checkpoints/fox")).record["step"] == 20
    assert not list(Path("checkpoints/fox").glob(".*partial"))


def test_unwritable_output_directory_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("fox.txt").write_text(TEXT)

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", denied)
    result = CliRunner().invoke(app, ["train", "fox.txt", "--config", TINY, "--out", "locked/run"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charlm: error: cannot create run directory locked/run: "
                                                   "Permission denied"), result.stderr


@pytest.mark.slow
def test_a_bound_set_by_a_preset_can_be_cleared_from_the_command_line(tmp_path, monkeypatch):
    (tmp_path / "fox.txt").write_text(TEXT)
    monkeypatch.chdir(tmp_path)
    # tiny.toml stops at 40 steps; without that bound, 3 epochs of this text take more
    result = CliRunner().invoke(app, ["train", "fox.txt", "--config", TINY, "--max-steps", "none", "--epochs", "3",
                                      "--sample-length", "0"])
    assert result.exit_code == 0, result.output
    assert "max_steps = \"none\"" in result.stdout  # the printed config is what ran, ready to paste
    assert "done: reached --epochs" in result.stdout, result.stdout


def test_training_on_a_folder_twice_does_not_read_the_first_runs_files(tmp_path, monkeypatch):
    folder = tmp_path / "mytexts"
    folder.mkdir()
    (folder / "fox.txt").write_text(TEXT)
    monkeypatch.chdir(folder)
    first = CliRunner().invoke(app, ["train", ".", "--config", TINY, "--sample-length", "0", "--out", "runs/a"])
    assert first.exit_code == 0, first.output
    record = json.loads((folder / "runs" / "a" / "best.json").read_text())
    second = CliRunner().invoke(app, ["train", ".", "--config", TINY, "--sample-length", "0"])
    assert second.exit_code == 0 and "warning" not in second.stderr, second.output
    again = json.loads((folder / "checkpoints" / "mytexts" / "best.json").read_text())  # named after the folder
    assert again["vocab"] == record["vocab"] and again["corpus"]["sha256"] == record["corpus"]["sha256"]
    third = CliRunner().invoke(app, ["train", ".", "--config", TINY, "--sample-length", "0", "--out", "runs/c"])
    assert third.exit_code == 0 and "warning" not in third.stderr, third.output
    assert json.loads((folder / "runs" / "c" / "best.json").read_text())["corpus"]["sha256"] == record["corpus"]["sha256"]


INTERRUPT_WHILE_IMPORTING = """
import builtins, os, signal, sys
real_import = builtins.__import__
def interrupting_import(name, *args, **kwargs):
    if name == "charlm.cli":  # Ctrl-C lands while the CLI (and torch) load
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupting_import
sys.argv = ["charlm", "train", "--help"]
from charlm.launch import main
main()
"""


def test_ctrl_c_while_torch_imports_is_noted_and_ends_the_command():
    done = subprocess.run([sys.executable, "-c", INTERRUPT_WHILE_IMPORTING], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 130 and done.stderr.strip() == "charlm: interrupted", done.stderr
    assert "Usage" not in done.stdout  # the command did not go on


@pytest.mark.parametrize("delay", [pytest.param(0.3, marks=pytest.mark.slow), 1.0, 2.5])
def test_ctrl_c_at_any_moment_of_startup_exits_130_with_one_line(tmp_path, delay):
    # From torch's import to the first steps, each moment has its own handler
    # (launch.py, Typer, user_errors, the stop flag); none may show a traceback.
    (tmp_path / "fox.txt").write_text(TEXT)
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "train", "fox.txt", "--config", TINY,
                             "--max-steps", "none", "--epochs", "1000", "--eval-every", "100000"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("charlm: ")] == [err.strip().splitlines()[-1]], err
