"""The Python API, called as a notebook user would: the README's example runs as written."""

import math
import re

import pytest

import charlm
from conftest import REPO

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 60


def _readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Python\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(TEXT)
    exec(compile(_readme_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"step 100: \d\.\d{3} nats/char", out) and "bits/char, perplexity" in out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    (root / "corpus.txt").write_text(TEXT)
    events = list(charlm.train(root / "corpus.txt", out=root / "run", hidden_size=32, num_layers=1,
                               embedding_size=16, seq_len=16, batch_size=4, lr=0.01, max_steps=40,
                               time_budget=None, eval_every=40, sample_length=0, device="cpu", precision="fp32"))
    assert isinstance(events[0], charlm.RunStarted) and isinstance(events[-1], charlm.RunFinished)
    return root / "run"


def test_generate_is_reproducible_and_stream_yields_characters(run_dir):
    run = charlm.load(str(run_dir))
    assert run.task == "lm" and repr(run).startswith("charlm.Run(")
    first = run.generate("the", length=50, temperature=0.8, seed=7)
    assert first.startswith("the") and len(first) == 53 and first == run.generate("the", length=50,
                                                                                  temperature=0.8, seed=7)
    assert [len(c) for c in run.stream("the", length=10, seed=1)] == [1] * 10


def test_score_agrees_with_the_exact_evaluation_and_its_surprisal_adds_up(run_dir):
    from charlm.tasks.lm.evaluate import evaluate_ids

    run = charlm.load(run_dir)
    stats = run.score("the lazy dog jumps")
    assert [c for c, _ in stats.surprisal] == list("he lazy dog jumps")
    assert stats.nats_per_char == pytest.approx(sum(b for _, b in stats.surprisal) * math.log(2) / 17)
    ids, _ = run._checkpoint.vocab.encode("the lazy dog jumps")
    assert stats.nats_per_char == pytest.approx(evaluate_ids(run.model, ids, streams=1).nats_per_char, abs=1e-5)
    assert stats.perplexity == pytest.approx(math.exp(stats.nats_per_char))


def test_errors_are_charlms_own_with_the_cli_messages(run_dir, tmp_path):
    with pytest.raises(charlm.CheckpointError, match="does not exist; check the path"):
        charlm.load(tmp_path / "nowhere")
    with pytest.raises(charlm.CharlmError, match="is a lm run; records\\(\\) serves lines runs"):
        charlm.load(run_dir).records(3)
    with pytest.raises(charlm.ConfigError, match="unknown config key 'hiden_size'; did you mean 'hidden_size'"):
        charlm.train(tmp_path, hiden_size=3)
    with pytest.raises(charlm.VocabularyError, match="never saw"):
        charlm.load(run_dir).generate("€")


def test_records_of_a_lines_run(tmp_path):
    (tmp_path / "n.tsv").write_text("".join(f"{w}\t{c}\n" for c, words in (("a", "ab ba abb bab"), ("x", "xy yx xyy yxx"))
                                            for w in words.split() * 10))
    list(charlm.train(tmp_path / "n.tsv", task="lines", out=tmp_path / "run", hidden_size=16, num_layers=1,
                      batch_size=8, max_steps=20, time_budget=None, eval_every=20, sample_length=0, device="cpu"))
    records = charlm.load(tmp_path / "run").records(4, class_name="x", seed=0)
    assert len(records) == 4 and all(r["class"] == "x" for r in records)


def test_only_documented_names_are_public():
    assert dir(charlm) == sorted(charlm.__all__)
    with pytest.raises(AttributeError):
        charlm.train_run  # noqa: B018


def test_an_interrupted_run_resumes_through_the_api(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT)
    settings = dict(out=tmp_path / "run", hidden_size=16, num_layers=1, embedding_size=8, seq_len=16, batch_size=4,
                    max_steps=30, time_budget=None, eval_every=10, sample_length=0, device="cpu")
    events = charlm.train(tmp_path / "corpus.txt", **settings)
    for event in events:
        if isinstance(event, charlm.Evaluated) and event.step == 10:
            break  # a notebook user stops iterating: the step-10 checkpoint stays
    events.close()
    finished = list(charlm.train(resume=True, out=tmp_path / "run", max_steps=30))[-1]
    assert isinstance(finished, charlm.RunFinished) and finished.step == 30


def test_classify_through_the_api(tmp_path):
    (tmp_path / "n.tsv").write_text("".join(f"{w}\t{c}\n" for c, words in (("a", "ab ba abb bab aab"),
                                                                          ("x", "xy yx xyy yxx xxy"))
                                            for w in words.split()))
    list(charlm.train(tmp_path / "n.tsv", task="classify", out=tmp_path / "run", hidden_size=16, batch_size=4,
                      max_steps=30, time_budget=None, eval_every=30, sample_length=0, device="cpu", val_frac=0.2))
    answers = charlm.load(tmp_path / "run").classify(["abba", "", "yyx"], top_k=2)
    assert [len(a.get("top", [])) for a in answers] == [2, 0, 2] and "error" in answers[1]
    assert {a["class"] for a in answers if "class" in a} <= {"a", "x"}
