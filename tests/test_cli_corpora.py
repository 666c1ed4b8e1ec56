"""Corpora from the command line: directories, byte mode, named corpora with standard splits."""

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlm.text import named
from charlm.cli import app
from conftest import REPO
from test_named import _Server

TINY = str(REPO / "configs" / "tiny.toml")
TEXT = "the quick brown fox jumps over the lazy dog.\n" * 40


def run(*argv):
    return CliRunner().invoke(app, [str(a) for a in argv])


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "a.py").write_text("def add(a, b):\n    return a + b\n" * 40)
    (src / "pkg" / "b.py").write_text("class Fox:\n    def jump(self):\n        pass\n" * 40)
    (src / "README.md").write_text("# notes\n" * 40)
    (src / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    return tmp_path


def test_a_directory_trains_with_include_and_resumes_from_its_record(project):
    trained = run("train", "src", "--include", "*.py", "--config", TINY, "--max-steps", "4", "--device", "cpu")
    assert trained.exit_code == 0, trained.output
    assert "warning" not in trained.stderr  # the image was never a candidate
    record = json.loads(Path("checkpoints/src/last.json").read_text())
    assert [Path(f["path"]).name for f in record["corpus"]["files"]] == ["a.py", "b.py"]
    resumed = run("train", "--resume", "--out", "checkpoints/src", "--max-steps", "6", "--device", "cpu")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(Path("checkpoints/src/last.json").read_text())["step"] == 6


def test_binary_files_found_by_walking_are_skipped_with_a_warning(project):
    trained = run("train", "src", "--config", TINY, "--max-steps", "2", "--device", "cpu", "--out", "runs/all")
    assert trained.exit_code == 0, trained.output
    assert "charlm: warning: skipped src/logo.png: it looks binary" in trained.stderr
    strict = run("train", "src", "--strict", "--config", TINY, "--out", "runs/strict")
    assert strict.exit_code == 1 and "logo.png looks binary" in strict.stderr


def test_byte_mode_trains_samples_and_reports_bits_per_byte(project):
    Path("fox.txt").write_text(TEXT.replace("fox", "foxé"))
    trained = run("train", "fox.txt", "--tokenizer", "bytes", "--config", TINY, "--max-steps", "20", "--device", "cpu")
    assert trained.exit_code == 0, trained.output
    assert "bytes" in trained.stdout and "bpb" in trained.stdout
    figures = json.loads(run("eval", "--json").stdout)
    assert figures["unit"] == "byte" and figures["bits_per_byte"] == figures["bits_per_char"]
    sampled = run("sample", "--seed", "the é", "--length", "50", "--rng-seed", "1")
    assert sampled.exit_code == 0 and sampled.stdout.startswith("the é")
    assert "bits per byte" in run("eval").stdout


@pytest.fixture
def fixture_corpus(monkeypatch):
    server = _Server()
    body = ("".join(f"line {i}: to be or not to be\n" for i in range(600))).encode()
    server.files["/fixture.txt"] = body
    n = len(body)
    corpus = named.NamedCorpus(name="fixture", description="a served test corpus", filename="fixture.txt",
                               url=server.url("/fixture.txt"), sha256=hashlib.sha256(body).hexdigest(),
                               size_bytes=n, standard_splits=(n - 2000, n - 1000))
    monkeypatch.setitem(named.REGISTRY, "fixture", corpus)
    yield server, n
    server.close()


def test_named_corpus_is_fetched_once_trained_and_scored_on_its_standard_splits(tmp_path, monkeypatch,
                                                                                fixture_corpus):
    server, n = fixture_corpus
    monkeypatch.chdir(tmp_path)
    listed = run("corpus", "list")
    assert listed.exit_code == 0 and "fixture" in listed.stdout and "fetched on first use" in listed.stdout
    assert "enwik8" in listed.stdout and "text8" in listed.stdout and "tinyshakespeare" in listed.stdout
    got = run("corpus", "get", "fixture")
    assert got.exit_code == 0, got.output
    assert Path("corpora/fixture.txt").stat().st_size == n and "standard splits" in got.stdout
    trained = run("train", "fixture", "--config", TINY, "--max-steps", "3", "--device", "cpu")
    assert trained.exit_code == 0, trained.output
    assert server.requests == ["/fixture.txt"]  # train reused the verified file
    assert "standard split" in trained.stdout
    val = json.loads(run("eval", "--json").stdout)
    test = json.loads(run("eval", "--split", "test", "--json").stdout)
    assert val["characters"] == 999 and test["characters"] == 999
    assert "ready" in run("corpus", "list").stdout


def test_unknown_corpus_name_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("corpus", "get", "nope")
    assert result.exit_code == 1 and result.stderr.strip() == \
        "charlm: error: no corpus named 'nope'; see: charlm corpus list"
