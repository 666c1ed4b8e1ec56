"""charlm train --task classify, charlm classify, charlm eval and charlm report on a classifier; bad input."""

import json
import os
import select
import subprocess
import sys
import threading
from html.parser import HTMLParser

import pytest
import torch
from typer.testing import CliRunner

from charlm.cli.app import app
from charlm.runs import load_checkpoint
from charlm.tasks.classify.inference import Classifier
from conftest import REPO
from test_classify_task import MARKERS, marker_tsv

ENV = dict(os.environ, OMP_NUM_THREADS="1")  # tiny models on two shared cores: a second thread only waits
FLAGS = ["--task", "classify", "--hidden-size", "16", "--embedding-size", "8", "--batch-size", "16", "--lr", "0.02",
         "--warmup-steps", "5", "--time-budget", "none", "--val-frac", "0.2", "--device", "cpu",
         "--precision", "fp32"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _charlm(cwd, *args, input=None):
    """The command in-process (a new process costs seconds of imports), run from cwd."""
    before = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, list(args), input=input)
    finally:
        os.chdir(before)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A trained classifier (checkpoints/markers) and a tiny language model (checkpoints/lm)."""
    root = tmp_path_factory.mktemp("classify")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    (root / "fox.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 30)
    lm = _charlm(root, "train", "fox.txt", "--config", str(REPO / "configs" / "tiny.toml"), "--max-steps", "2",
                 "--out", "checkpoints/lm", "--device", "cpu")
    assert lm.returncode == 0, lm.stderr
    marker_tsv(root / "markers.tsv")  # trained last: the newest run, which commands use by default
    done = _charlm(root, "train", "markers.tsv", *FLAGS, "--max-steps", "120", "--eval-every", "40")
    assert done.returncode == 0, done.stderr
    torch.set_num_threads(threads)
    return root


def test_training_reports_its_data_and_shows_predictions(root):
    record = json.loads((root / "checkpoints" / "markers" / "best.json").read_text())
    assert record["task"] == "classify" and record["classes"] == sorted(MARKERS.values())
    assert record["model"]["bidirectional"] and record["model"]["cell"] == "gru"  # the task's defaults
    lines = [json.loads(line) for line in (root / "checkpoints" / "markers" / "metrics.jsonl").read_text().splitlines()]
    previews = [line["preview"] for line in lines if "preview" in line]
    for preview in previews:  # one validation text of each class (at most six), its truth and the prediction
        shown = [line.split(": ")[1].split(" -> ")[0] for line in preview.splitlines()]
        assert sorted(shown) == sorted(MARKERS.values())


def test_classify_prints_the_top_classes_of_each_text(root):
    done = _charlm(root, "classify", "abxab", "hyh", "--top-k", "2")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [row[0] for row in rows] == ["abxab", "hyh"] and all(len(row) == 3 for row in rows)
    assert rows[0][1].startswith("ex ") and rows[1][1].startswith("why ")
    probabilities = [[float(cell.split()[1]) for cell in row[1:]] for row in rows]
    assert all(p[0] >= p[1] and sum(p) <= 1.0001 for p in probabilities)


def test_unknown_characters_are_skipped_with_one_warning_or_with_strict_are_an_error(root):
    done = _charlm(root, "classify", "ab!x", "h!y!", "--json")
    assert done.returncode == 0
    assert done.stderr.count("\n") == 1 and "'!'" in done.stderr and "--strict" in done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["class"] for a in answers] == ["ex", "why"] and answers[0]["skipped_characters"] == ["!"]
    loaded = load_checkpoint(root / "checkpoints" / "markers")
    alone = Classifier(loaded).classify(["abx"], top_k=3)[0]  # skipping '!' reads exactly the rest
    assert answers[0]["top"][0]["probability"] == pytest.approx(alone.top[0][1], abs=1e-6)
    strict = _charlm(root, "classify", "ab!x", "hyh", "--strict")
    assert strict.returncode == 1 and strict.stdout.startswith("hyh\twhy")  # the other text is answered
    assert strict.stderr.count("\n") == 1 and "never saw: '!'" in strict.stderr


def test_a_text_with_no_known_character_is_an_error_for_that_text_alone(root):
    done = _charlm(root, "classify", "-", "--json", input="abxab\n!!!\n\nhyh\n")
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1 and [a["text"] for a in answers] == ["abxab", "!!!", "", "hyh"]
    assert "error" in answers[1] and "error" in answers[2] and answers[3]["class"] == "why"
    assert done.stderr.count("charlm: error:") == 2


def _read_line(stream, timeout=60):
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no answer arrived"
    return stream.readline()


def test_stdin_is_answered_line_by_line_as_it_arrives(root):
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "classify", "--json"], cwd=root, env=ENV,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for text, label in (("abxab", "ex"), ("zzhh", "zed")):
            proc.stdin.write(text + "\n")
            proc.stdin.flush()  # the input stays open: the answer must come anyway
            assert json.loads(_read_line(proc.stdout))["class"] == label
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0 and proc.stdout.read() == ""
    finally:
        proc.kill()


def test_lines_that_arrive_together_are_read_in_batches(monkeypatch):
    from charlm.cli import classify

    read, write = os.pipe()
    with os.fdopen(read, "rb") as reader, os.fdopen(write, "wb", buffering=0) as writer:
        monkeypatch.setattr(sys, "stdin", reader)
        batches = classify._stdin_batches()
        writer.write(b"one\n")
        assert next(batches) == ["one"]  # alone: answered at once
        writer.write("".join(f"n{i}\r\n" for i in range(1000)).encode())
        assert [len(b) for b in (next(batches), next(batches))] == [512, 488]  # what arrived together
        writer.write(b"last without newline")
        writer.close()
        assert list(batches) == [["last without newline"]]


def test_a_reader_that_leaves_early_is_not_an_error(root):
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "classify", "-"], cwd=root, env=ENV,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    feeder = threading.Thread(target=_feed, args=(proc.stdin, b"abxab\n" * 200_000))
    feeder.start()
    assert proc.stdout.readline().startswith(b"abxab\tex")
    proc.stdout.close()  # like `| head -1`
    feeder.join(timeout=120)
    assert proc.wait(timeout=120) == 0
    assert b"Traceback" not in proc.stderr.read()


def _feed(stream, data):
    try:
        stream.write(data)
        stream.close()
    except BrokenPipeError:
        pass


def test_eval_rebuilds_the_validation_figures_of_the_best_checkpoint(root):
    done = _charlm(root, "eval", "--json", "--precision", "fp32")
    assert done.returncode == 0, done.stderr
    scored = json.loads(done.stdout)
    record = json.loads((root / "checkpoints" / "markers" / "best.json").read_text())
    assert scored["accuracy"] == record["metrics"]["val_accuracy"]
    assert scored["macro_f1"] == record["metrics"]["val_macro_f1"]
    assert scored["loss"] == pytest.approx(record["metrics"]["val_loss"], abs=1e-6)
    assert scored["confusion"] == record["validation"]["confusion"]
    assert scored["texts"] == record["split"]["val_texts"] == sum(c["support"] for c in scored["per_class"].values())


def test_eval_of_a_labelled_file_agrees_with_classify_and_shows_the_matrix(root):
    names = ["abxab", "hyh", "ggzd", "xx", "yay", "zed"]
    truth = ["ex", "why", "zed", "why", "why", "zed"]  # "xx" is filed under the wrong class on purpose
    (root / "other.tsv").write_text("".join(f"{n}\t{t}\n" for n, t in zip(names, truth)))
    scored = json.loads(_charlm(root, "eval", "other.tsv", "--json").stdout)
    predicted = [json.loads(line)["class"] for line in _charlm(root, "classify", *names, "--json").stdout.splitlines()]
    assert scored["texts"] == 6
    assert scored["accuracy"] == pytest.approx(sum(p == t for p, t in zip(predicted, truth)) / 6)
    table = _charlm(root, "eval", "other.tsv")
    assert table.returncode == 0 and "confusion matrix (rows: true class" in table.stdout
    assert "macro-F1" in table.stdout and "\x1b[" not in table.stdout  # no colour codes into a pipe


def test_the_report_shows_the_recorded_confusion_matrix(root, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(root / "checkpoints" / "markers"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    cells = _confusion_cells(out.read_text())
    record = json.loads((root / "checkpoints" / "markers" / "best.json").read_text())
    assert cells == record["validation"]["confusion"]
    model = load_checkpoint(root / "checkpoints" / "markers").model
    assert f'data-value="{sum(p.numel() for p in model.parameters())}"' in out.read_text()  # the runs table


def _confusion_cells(html: str) -> list[list[int]]:
    class Cells(HTMLParser):
        rows, inside = [], False

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "table":
                self.inside = "confusion" in attrs.get("class", "")
            elif tag == "tr" and self.inside:
                self.rows.append([])
            elif tag == "td" and self.inside:
                self.rows[-1].append(int(attrs["data-value"]))

    parser = Cells()
    parser.feed(html)
    return [row for row in parser.rows if row]


# -- bad input: one line, exit 1, nothing written --------------------------------------------------------

def _write_bad_inputs(root):
    (root / "one").mkdir(exist_ok=True)
    (root / "one" / "Only.txt").write_text("abc\n")
    (root / "holes").mkdir(exist_ok=True)
    (root / "holes" / "A.txt").write_text("abc\n")
    (root / "holes" / "B.txt").write_text("")
    (root / "notab.tsv").write_text("ab\tex\nno tab here\n")
    (root / "nolabel.tsv").write_text("ab\tex\ncd\t\n")
    (root / "notext.tsv").write_text("ab\tex\n \twhy\n")
    (root / "plain.txt").write_text("abc\ndef\n")
    (root / "unknown.tsv").write_text("abx\tex\nhyh\tnope\n")


BAD = [
    (["train", "one", "--task", "classify"], "holds one class file (Only.txt)"),
    (["train", "holes", "--task", "classify"], "B.txt is empty"),
    (["train", "notab.tsv", "--task", "classify"], "notab.tsv:2 has no tab"),
    (["train", "nolabel.tsv", "--task", "classify"], "nolabel.tsv:2 has an empty label"),
    (["train", "notext.tsv", "--task", "classify"], "notext.tsv:2 has an empty text"),
    (["train", "plain.txt", "--task", "classify"], "--task classify needs labelled records"),
    (["train", "markers.tsv", "--task", "classify", "--select-by", "best"], "select_by (--select-by) must be one of"),
    (["train", "markers.tsv", "--task", "lines", "--class-weights", "balanced"],
     "class_weights (--class-weights) applies to --task classify"),
    (["train", "fox.txt", "--unidirectional"], "bidirectional (--bidirectional) applies to --task classify"),
    (["train", "--resume", "--out", "checkpoints/markers", "--select-by", "loss"],
     "select_by cannot change when resuming (the run uses 'macro-f1')"),
    (["classify", "--checkpoint", "checkpoints/lm", "abc"],
     "is a lm run, which charlm classify does not serve; use charlm sample"),
    (["classify", "--checkpoint", "checkpoints/markers", ""], "'': empty text"),
    (["classify", "--checkpoint", "checkpoints/markers", "--top-k", "0", "abc"], "--top-k must be at least 1"),
    (["classify", "--checkpoint", "checkpoints/markers", "-", "abc"], "cannot be mixed with texts"),
    (["sample", "--checkpoint", "checkpoints/markers"],
     "is a classify run, which charlm sample does not serve; use charlm classify"),
    (["eval", "--checkpoint", "checkpoints/markers", "--exact"], "--exact applies to language-model runs"),
    (["eval", "--checkpoint", "checkpoints/markers", "unknown.tsv"], "class(es) the model does not know: nope"),
]


def _tree(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in (root / "checkpoints").rglob("*"))


@pytest.mark.parametrize("argv, words", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_input_is_one_line_and_writes_nothing(root, argv, words, monkeypatch):
    _write_bad_inputs(root)
    monkeypatch.chdir(root)
    before = _tree(root)
    result = CliRunner().invoke(app, argv)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and words in lines[0], result.stderr
    assert isinstance(result.exception, SystemExit)  # a handled error, not a traceback
    assert lines[0].startswith("charlm: error: ") and result.stdout == ""
    assert _tree(root) == before


def test_a_class_too_small_for_both_splits_is_a_warning_and_trains(tmp_path, monkeypatch):
    marker_tsv(tmp_path / "m.tsv")
    with open(tmp_path / "m.tsv", "a") as file:
        file.write("hhhh\tlonely\nhhhh\tlonely\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "m.tsv", *FLAGS, "--max-steps", "2", "--eval-every", "2"])
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("charlm: warning:")]
    assert len(warnings) == 1 and "lonely (1)" in warnings[0] and "train only" in warnings[0]
    record = json.loads((tmp_path / "checkpoints" / "m" / "best.json").read_text())
    assert "lonely" in record["classes"] and record["data"]["warnings"] == [warnings[0][len("charlm: warning: "):]]
