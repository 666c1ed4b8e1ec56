import pytest

from charlm.errors import CorpusError
from charlm.text.records import read_records, split_records
from charlm.text.vocab import RecordVocab, Vocab


def test_a_lines_file_skips_blank_lines_accepts_crlf_and_drops_a_bom(tmp_path):
    path = tmp_path / "names.txt"
    path.write_bytes("\ufeffanna\r\n\r\nbob\n  \nanna\ncy".encode())
    records = read_records(path)
    assert records.texts == ["anna", "bob", "anna", "cy"] and records.labels is None
    assert records.blank_lines == 2 and records.distinct_texts() == 3
    assert records.line_numbers[1] == f"{path}:3"


def test_a_folder_of_class_files_and_a_tsv_give_the_same_labelled_records(tmp_path):
    folder = tmp_path / "langs"
    folder.mkdir()
    (folder / "French.txt").write_text("Dupont\nMartin\n")
    (folder / "Irish.txt").write_text("Murphy\nMartin\n")
    (tmp_path / "langs.tsv").write_text("Dupont\tFrench\nMartin\tFrench\nMurphy\tIrish\tcc-by\nMartin\tIrish\n")
    by_folder, by_tsv = read_records(folder), read_records(tmp_path / "langs.tsv")
    assert sorted(zip(by_folder.texts, by_folder.labels)) == sorted(zip(by_tsv.texts, by_tsv.labels))
    assert by_folder.classes == by_tsv.classes == ("French", "Irish")
    facts = by_folder.facts()
    assert facts["class_counts"] == {"French": 2, "Irish": 2} and facts["multi_label_texts"] == 1
    assert by_tsv.extra_columns == 1


@pytest.mark.parametrize("files, target, words", [
    ({"empty.txt": ""}, "empty.txt", "holds no records"),
    ({"blank.txt": "\n \n\n"}, "blank.txt", "holds no records"),
    ({"d/Only.txt": "a\n"}, "d", r"one class file \(Only.txt\)"),
    ({"d/A.txt": "a\n", "d/B.txt": ""}, "d", "class file .*B.txt is empty"),
    ({"x.tsv": "ab\tone\nno tab here\n"}, "x.tsv", r"x.tsv:2 has no tab"),
    ({"x.tsv": "ab\tone\n\ttwo\n"}, "x.tsv", r"x.tsv:2 has an empty text"),
    ({"x.tsv": "ab\tone\ncd\t \n"}, "x.tsv", r"x.tsv:2 has an empty label"),
    ({"x.tsv": "ab\tone\ncd\tone\n"}, "x.tsv", "only one label"),
    ({"bad.txt": b"ok\n\xff\n"}, "bad.txt", "not UTF-8"),
])
def test_bad_records_are_one_line_naming_the_file(tmp_path, files, target, words):
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CorpusError, match=words) as raised:
        read_records(tmp_path / target)
    assert "\n" not in str(raised.value)


def test_the_split_is_seeded_disjoint_by_text_and_keeps_every_occurrence_together(tmp_path):
    path = tmp_path / "r.txt"
    texts = [f"name{i % 37}" for i in range(400)]  # every text repeats
    path.write_text("\n".join(texts) + "\n")
    records = read_records(path)
    split = split_records(records, 0.2, seed=7)
    train = {records.texts[i] for i in split.train}
    val = {records.texts[i] for i in split.val}
    assert not train & val and len(train) + len(val) == 37 and len(val) == round(37 * 0.2)
    assert sorted(split.train + split.val) == list(range(400))  # every occurrence is on one side or the other
    assert split_records(records, 0.2, seed=7) == split
    assert split_records(records, 0.2, seed=8) != split


def test_the_record_vocabulary_reserves_id_0_for_the_end_of_a_record():
    vocab = RecordVocab.from_texts(["a.b", "ba"])
    assert vocab.chars == (".", "a", "b") and vocab.size == 4
    ids, _ = vocab.encode("b.a")
    assert ids.tolist() == [3, 1, 2] and vocab.decode([3, 1, 2, RecordVocab.END, 1]) == "b.a"
    assert Vocab.from_json(vocab.to_json()) == vocab
