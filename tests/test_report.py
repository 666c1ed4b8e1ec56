"""charlm report: one self-contained HTML page whose figures are the run's own, readable in a real browser."""

import io
import json
import math
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from charlm.cli.app import app
from charlm.runs import load_checkpoint
from charlm.report.runs import read_run, settings_table
from charlm.tasks.lm.evaluate import score_ids

pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs" / "tiny.toml")
FOX = ("The quick brown fox jumps over the lazy dog.\nA lazy dog sleeps; the fox runs (far) away.\n"
       "\"Quick!\" said the dog, but the fox was gone.\n") * 12



@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine lose 4x to waiting."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

class Page(HTMLParser):
    """The parts of a report the tests read: ids, link-like attributes, tables and the surprisal spans."""

    def __init__(self, html: str):
        super().__init__()
        self.ids, self.links, self.tags, self.tables, self.spans = set(), [], set(), [], []
        self._cell = self._span = None
        self._in_view = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        self.links += [(tag, key, value) for key, value in attrs.items() if key in ("src", "href", "xlink:href")]
        if tag == "table":
            self.tables.append({"attrs": attrs, "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = {"attrs": attrs, "text": ""}
            self.tables[-1]["rows"][-1].append(self._cell)
        elif tag == "div" and "sv" in attrs.get("class", "").split():
            self._in_view = 1
        elif tag == "div" and self._in_view:
            self._in_view += 1
        elif tag == "span" and self._in_view:
            self._span = {"attrs": attrs, "text": ""}
            self.spans.append(self._span)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = None
        elif tag == "span":
            self._span = None
        elif tag == "div" and self._in_view:
            self._in_view -= 1

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._span is not None:
            self._span["text"] += data

    def table(self, **attrs) -> dict:
        return next(t for t in self.tables if all(t["attrs"].get(k) == v for k, v in attrs.items()))


def train_tiny(root: Path, name: str = "fox") -> Path:
    text = root / "fox.txt"
    text.write_text(FOX, encoding="utf-8")
    result = CliRunner().invoke(app, ["train", str(text), "--config", TINY, "--out", str(root / name),
                                      "--max-steps", "20", "--eval-every", "5", "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    return root / name


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("runs"))


def make_report(tmp_path: Path, *args: str) -> tuple[Path, str]:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", *args, "-o", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    assert result.stdout.startswith(f"wrote {out}: ") and " KB, in " in result.stdout
    return out, out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_report(tiny_run, tmp_path_factory) -> tuple[Path, str]:
    return make_report(tmp_path_factory.mktemp("report"), str(tiny_run))


def metrics_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- the page -----------------------------------------------------------------------------------------

def test_report_has_every_section_and_references_nothing_outside(tiny_report):
    out, html = tiny_report
    page = Page(html)
    assert {"curves", "runs", "evaluations", "surprisal", "best-figures", "settings"} <= page.ids
    assert {"plot-loss-step", "plot-loss-time", "plot-lr", "plot-throughput"} <= page.ids
    assert page.links and all(value.startswith("#") for _, _, value in page.links)  # the nav and SVG's own refs
    assert "http" not in html and "//" not in html and "@import" not in html and "script" not in page.tags
    assert "url(" not in html.replace("url(#", "")
    assert out.stat().st_size < 2_000_000


def test_report_numbers_are_the_metrics_files(tiny_run, tiny_report):
    page = Page(tiny_report[1])
    evaluations = [row for row in metrics_lines(tiny_run) if "val_loss" in row]
    table = page.table(**{"class": "evals"})
    header = [cell["text"] for cell in table["rows"][0]]
    assert header[:4] == ["step", "time", "val_loss", "val_bits_per_char"]
    rows = table["rows"][1:]
    assert len(rows) == len(evaluations) >= 3
    for row, line in zip(rows, evaluations):
        assert int(row[0]["attrs"]["data-value"]) == line["step"]
        assert float(row[2]["attrs"]["data-value"]) == line["val_loss"]
        assert float(row[3]["attrs"]["data-value"]) == line["val_bits_per_char"]
        assert row[2]["text"] == f"{line['val_loss']:,.4f}"
    best = min(evaluations, key=lambda line: line["val_loss"])
    figures = page.table(id="best-figures")["rows"][1]
    assert float(figures[6]["attrs"]["data-value"]) == best["val_loss"]
    assert int(figures[8]["attrs"]["data-value"]) == best["step"]
    assert int(figures[4]["attrs"]["data-value"]) == metrics_lines(tiny_run)[-1]["step"]


def test_surprisal_view_is_what_eval_computes_for_each_character(tiny_run, tmp_path):
    text = tmp_path / "excerpt.txt"
    text.write_text("The lazy fox (far) said \"quick\".\nThe dog runs.\n", encoding="utf-8")
    _, html = make_report(tmp_path, str(tiny_run), "--text", str(text))
    spans = Page(html).spans
    assert "".join(s["text"] for s in spans).replace("↵", "\n") == text.read_text()
    checkpoint = load_checkpoint(tiny_run)
    ids = checkpoint.vocab.encode(text.read_text())[0]
    # charlm eval's own sum over each prefix of the text: a character's surprisal is what it adds.
    totals = [0.0] + [float(score_ids(checkpoint.model, ids[:n], streams=1)) for n in range(2, len(ids) + 1)]
    expected_bits = np.diff(totals) / math.log(2)
    assert "data-bits" not in spans[0]["attrs"]
    shown = np.array([float(s["attrs"]["data-bits"]) for s in spans[1:]])
    np.testing.assert_allclose(shown, expected_bits, atol=1e-4)
    tip = spans[5]["attrs"]["data-tip"]
    assert "top 5 predictions:" in tip and tip.count("%") == 6  # its own probability and five predictions


def test_report_of_the_validation_split_starts_at_a_line(tiny_report):
    spans = Page(tiny_report[1]).spans
    assert spans and len(spans) <= 1500
    assert "the validation split of fox" in tiny_report[1]


def test_runs_are_compared_with_their_differences_highlighted(tiny_run, tmp_path):
    other = tmp_path / "elsewhere" / "fox"
    shutil.copytree(tiny_run, other)
    for name in ("best.json", "last.json"):
        record = json.loads((other / name).read_text())
        record["config"]["lr"] = 0.5
        (other / name).write_text(json.dumps(record))
    runs = [read_run(tiny_run), read_run(other)]
    differing = [key for key, _, differs in settings_table(runs) if differs]
    assert differing == ["lr"]
    _, html = make_report(tmp_path, str(tiny_run), str(other))
    assert "Settings that differ (highlighted): lr." in html
    assert f"{tiny_run.parent.name}/fox" in html and "elsewhere/fox" in html  # two runs named fox, told apart
    assert html.count('<div class="sv"') == 2


def test_newer_fields_are_drawn_and_other_tasks_plot_their_own_metrics(tiny_run, tmp_path):
    run = tmp_path / "classify"
    shutil.copytree(tiny_run, run)
    lines = []
    for line in metrics_lines(tiny_run):
        if "train_loss" in line:
            line.update(tokens_per_second=1234.5, grad_norm=0.75)
        else:
            line.update(preview=f"preview at step {line['step']}", val_accuracy=0.5 + line["step"] / 1000)
        lines.append(json.dumps(line))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n{\"step\": 3, \"trai")  # cut off mid-line
    for name in ("best.json", "last.json"):
        record = json.loads((run / name).read_text())
        record["task"] = "classify"
        (run / name).write_text(json.dumps(record))
    _, html = make_report(tmp_path, str(run))
    page = Page(html)
    assert {"plot-grad-norm", "plot-metric-val_accuracy", "task-views"} <= page.ids
    assert "preview at step 15" in html and "Estimated from" not in html
    assert "surprisal" not in page.ids  # a classifier has no surprisal view
    assert "1 line(s) of metrics.jsonl could not be read" in html


# -- in a browser ---------------------------------------------------------------------------------------

def test_report_renders_in_headless_chromium_without_errors(tiny_report):
    from charlm.errors import CharlmError
    from charlm.report.browser import find_chromium, render_page
    if not find_chromium():
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    out, _ = tiny_report
    try:
        result = render_page(out, width=1100)
    except CharlmError as exc:
        pytest.skip(f"Chromium is installed but could not be run here: {exc}")
    assert result.errors == []
    assert result.requests == [out.resolve().as_uri()]  # the page itself, and nothing else
    import matplotlib.image
    pixels = matplotlib.image.imread(io.BytesIO(result.png))  # (H, W, 4) floats
    assert pixels.shape[1] == 1100 and pixels.shape[0] == result.height > 1000
    inked = (pixels[..., :3] < 0.9).any(axis=-1).mean()
    assert inked > 0.03 and len(np.unique(pixels[::7, ::7, :3].reshape(-1, 3), axis=0)) > 50


# -- data reading, errors -------------------------------------------------------------------------------

def test_reading_runs_and_writing_the_page_does_not_import_torch(tiny_run):
    code = ("import sys; from charlm.report import runs, html, plots; r = runs.read_run(sys.argv[1]); "
            "page = html.render_report([r], plots.make_figures([r]), []); "
            "assert 'torch' not in sys.modules and 'Curves' in page")
    subprocess.run([sys.executable, "-c", code, str(tiny_run)], check=True, cwd=REPO)


@pytest.mark.parametrize("make_args, message", [
    (lambda tmp: [str(tmp / "nope")], "does not exist"),
    (lambda tmp: [str(tmp)], "holds no checkpoint (no best.json or last.json)"),
    (lambda tmp: [str(tmp / "run"), str(tmp / "run")], "is given twice"),
    (lambda tmp: [str(tmp / "run"), "--length", "0"], "--length must be 1 or more"),
    (lambda tmp: [str(tmp / "run"), "--text", str(tmp / "none.txt")], "is not a file"),
])
def test_report_bad_input_is_one_line(tiny_run, tmp_path, make_args, message):
    shutil.copytree(tiny_run, tmp_path / "run")
    result = CliRunner().invoke(app, ["report", *make_args(tmp_path), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("charlm: error: ") and message in result.stderr
    assert not (tmp_path / "r.html").exists()


def test_report_without_matplotlib_says_how_to_install_it(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    result = CliRunner().invoke(app, ["report", str(tiny_run), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "pip install 'charlm-rnn[report]'" in result.stderr


def test_a_run_whose_corpus_is_gone_still_gets_its_curves(tiny_run, tmp_path):
    run = tmp_path / "fox"
    shutil.copytree(tiny_run, run)
    for name in ("best.json", "last.json"):
        record = json.loads((run / name).read_text())
        for entry in record["corpus"].get("files", []):
            entry["path"] = str(tmp_path / "gone.txt")
        (run / name).write_text(json.dumps(record))
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(run), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("charlm: warning: fox: no surprisal view: ")
    assert "plot-loss-step" in out.read_text() and "No surprisal view" in out.read_text()


def test_a_resumed_runs_abandoned_lines_are_dropped(tmp_path):
    from charlm.report.runs import read_metrics
    lines = [{"step": 10, "train_loss": 3.0}, {"step": 20, "train_loss": 2.5}, {"step": 20, "val_loss": 2.6},
             {"step": 30, "train_loss": 2.4}, {"step": 40, "train_loss": 2.3},  # interrupted here; resumed from 20
             {"step": 30, "train_loss": 2.2}, {"step": 40, "val_loss": 2.1}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    train, evals, damaged = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["train_loss"]) for r in train] == [(10, 3.0), (20, 2.5), (30, 2.2)]
    assert [(r["step"], r["val_loss"]) for r in evals] == [(20, 2.6), (40, 2.1)] and damaged == 0
