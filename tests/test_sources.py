import pytest

from charlm.errors import CorpusError
from charlm.text.sources import select_files


def _tree(root, files):
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def test_directories_walk_in_sorted_order_and_skip_vcs_hidden_and_binary(tmp_path, monkeypatch):
    _tree(tmp_path, {"src/b.py": "b", "src/a.py": "a", "src/sub/c.py": "c", "src/.git/config": "x",
                     "src/__pycache__/a.pyc": b"\0\1", "src/.hidden.py": "h", "src/logo.png": b"\x89PNG\0\0",
                     "src/notes.md": "n"})
    monkeypatch.chdir(tmp_path)
    selection = select_files(["src"])
    assert [f.path.as_posix() for f in selection.files] == ["src/a.py", "src/b.py", "src/notes.md", "src/sub/c.py"]
    assert selection.warnings == ["skipped src/logo.png: it looks binary"]
    only_py = select_files(["src"], include=["*.py"])
    assert [f.path.name for f in only_py.files] == ["a.py", "b.py", "c.py"]
    assert not any(f.named for f in only_py.files)


def test_strict_refuses_what_would_be_skipped(tmp_path, monkeypatch):
    _tree(tmp_path, {"d/a.txt": "a", "d/blob.bin": b"\0\0\0"})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CorpusError, match="blob.bin looks binary"):
        select_files(["d"], strict=True)


def test_files_and_globs_keep_argument_order_without_duplicates(tmp_path, monkeypatch):
    _tree(tmp_path, {"z.txt": "z", "docs/b.txt": "b", "docs/a.txt": "a"})
    monkeypatch.chdir(tmp_path)
    selection = select_files(["z.txt", "docs/*.txt", "docs/a.txt"])
    assert [f.path.as_posix() for f in selection.files] == ["z.txt", "docs/a.txt", "docs/b.txt"]
    assert [f.named for f in selection.files] == [True, False, False]


@pytest.mark.parametrize("arguments, words", [(["missing.txt"], "does not exist"), (["*.nothing"], "no files match"),
                                              (["empty_dir"], "has no files")])
def test_nothing_to_read_is_an_error(tmp_path, monkeypatch, arguments, words):
    (tmp_path / "empty_dir").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CorpusError, match=words):
        select_files(arguments)


def test_a_walk_leaves_out_charlms_own_folders(tmp_path, monkeypatch):
    _tree(tmp_path, {"a.txt": "a", "checkpoints/run/best.json": "{}", "corpora/cache/x.json": "{}",
                     "elsewhere/metrics.jsonl": "{}", "notes/b.txt": "b"})
    monkeypatch.chdir(tmp_path)
    leave_out = [tmp_path / "checkpoints", tmp_path / "corpora" / "cache", tmp_path / "elsewhere"]
    selection = select_files(["."], leave_out=leave_out)
    assert [f.path.as_posix() for f in selection.files] == ["a.txt", "notes/b.txt"]
    # a folder the user names is theirs, even if charlm writes there
    assert [f.path.as_posix() for f in select_files(["checkpoints"], leave_out=leave_out).files] == \
        ["checkpoints/run/best.json"]


def test_a_walk_leaves_out_any_earlier_run_directory_but_not_a_users_best_json(tmp_path, monkeypatch):
    # a large vocabulary puts the format marker far into the file, as charlm writes it
    record = '{"vocab": [%s], "format": "charlm-checkpoint", "step": 3}' % ", ".join(['"x"'] * 5000)
    _tree(tmp_path, {"a.txt": "a", "runs/old/last.json": record,
                     "runs/old/metrics.jsonl": "{}", "site/best.json": '{"name": "my best page"}'})
    monkeypatch.chdir(tmp_path)
    assert [f.path.as_posix() for f in select_files(["."]).files] == ["a.txt", "site/best.json"]
