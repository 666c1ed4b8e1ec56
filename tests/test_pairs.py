import pytest

from charlm.errors import CharlmError
from charlm.text.pairs import Pair, group_references, read_pairs, split_by_source


def _write(tmp_path, text, name="pairs.tsv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def test_reads_pairs_ignoring_and_counting_extra_columns(tmp_path):
    path = _write(tmp_path, "Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272\r\n"
                            "Hi.\tSalut !\n\nRun!\tCours\u202f!\t#906328\t#906331\n")
    result = read_pairs(path)
    assert result.pairs == [Pair("Go.", "Va !"), Pair("Hi.", "Salut !"), Pair("Run!", "Cours\u202f!")]
    assert result.extra_column_lines == 2
    assert result.empty_lines == 2  # the blank line and the one after the final newline


def test_reverse_swaps_the_direction(tmp_path):
    path = _write(tmp_path, "\ufeffGo.\tVa !\nHi.\tSalut !\n")  # the BOM is not part of the first source
    assert read_pairs(path, reverse=True).pairs == [Pair("Va !", "Go."), Pair("Salut !", "Hi.")]


def test_length_limits_skip_and_count(tmp_path):
    path = _write(tmp_path, "ab\txyz\nabcd\tx\na\twxyz\n")
    result = read_pairs(path, max_source_length=3, max_target_length=3)
    assert result.pairs == [Pair("ab", "xyz")] and result.too_long == 2
    # with --reverse the limits apply to the new source and target
    assert read_pairs(path, reverse=True, max_source_length=2).pairs == [Pair("x", "abcd")]


def test_nothing_left_is_one_line_error(tmp_path):
    path = _write(tmp_path, "abcd\tx\n")
    with pytest.raises(CharlmError, match=r"all 1 pairs are longer .*--max-source-length 2.*; raise the limits"):
        read_pairs(path, max_source_length=2)


@pytest.mark.parametrize("text, line, problem", [
    ("a\tb\nno tab here\n", 2, "no tab between source and target"),
    ("a\tb\n\tb\n", 2, r"empty source \(first column\)"),
    ("a\tb\nc\td\ne\t\n", 3, r"empty target \(second column\)"),
    ("a\tb\nc\t\td\n", 2, r"empty target"),
])
def test_bad_lines_name_file_and_line(tmp_path, text, line, problem):
    path = _write(tmp_path, text)
    with pytest.raises(CharlmError) as error:
        read_pairs(path)
    message = str(error.value)
    assert message.startswith(f"{path}:{line}: ")
    assert "\n" not in message
    assert __import__("re").search(problem, message)


def test_empty_source_named_by_role_under_reverse(tmp_path):
    with pytest.raises(CharlmError, match=r":1: empty source \(second column\)"):
        read_pairs(_write(tmp_path, "a\t\n"), reverse=True)


def test_bad_utf8_and_missing_and_empty_files(tmp_path):
    with pytest.raises(CharlmError, match=r"bad\.tsv:2: not valid UTF-8"):
        read_pairs(_write(tmp_path, b"a\tb\nc\t\xff\n", name="bad.tsv"))
    with pytest.raises(CharlmError, match="no such file"):
        read_pairs(tmp_path / "missing.tsv")
    with pytest.raises(CharlmError, match="no pairs"):
        read_pairs(_write(tmp_path, "\n\n", name="empty.tsv"))


def _pairs():
    # 20 distinct sources, some with several translations
    return [Pair(f"s{i}", f"t{i}.{j}") for i in range(20) for j in range(1 + i % 3)]


def test_split_keeps_every_translation_of_a_source_on_one_side():
    pairs = _pairs()
    train, valid = split_by_source(pairs, 0.25, seed=1)
    train_sources, valid_sources = {p.source for p in train}, {p.source for p in valid}
    assert not train_sources & valid_sources
    assert len(valid_sources) == 5  # a quarter of the 20 distinct sources
    assert sorted(train + valid, key=pairs.index) == pairs  # nothing lost or duplicated
    assert train == [p for p in pairs if p in train]  # file order kept


def test_split_is_seeded():
    pairs = _pairs()
    assert split_by_source(pairs, 0.25, seed=1) == split_by_source(pairs, 0.25, seed=1)
    assert split_by_source(pairs, 0.25, seed=1) != split_by_source(pairs, 0.25, seed=2)


def test_split_edges():
    two = [Pair("a", "x"), Pair("b", "y")]
    assert [len(side) for side in split_by_source(two, 0.01, seed=0)] == [1, 1]  # at least one each side
    assert split_by_source(two, 0.0, seed=0) == (two, [])
    with pytest.raises(CharlmError, match="only 1 distinct source"):
        split_by_source([Pair("a", "x"), Pair("a", "y")], 0.5, seed=0)


def test_group_references():
    pairs = [Pair("Run!", "Cours !"), Pair("Hi.", "Salut !"), Pair("Run!", "Courez !"), Pair("Run!", "Cours !")]
    assert group_references(pairs) == [("Run!", ["Cours !", "Courez !"]), ("Hi.", ["Salut !"])]
