import pytest
from sacrebleu.metrics import BLEU, CHRF

from charlm.tasks.seq2seq.metrics import bleu, chrf, exact_match, reference_streams, translation_scores

HYPOTHESES = ["the cat", "a dog ran in the park", "hello there"]
REFERENCES = [["the cat sat on the mat today"],  # one reference, much longer than the output
              ["the dog ran in the park", "a dog ran in the park"],  # matches the second reference
              ["hi there", "hello there friend", "hello there"]]


def test_exact_match_counts_any_reference():
    assert exact_match(HYPOTHESES, REFERENCES) == pytest.approx(2 / 3)
    assert exact_match(["x"], [["y", "x"]]) == 1.0
    assert exact_match(["x "], [["x"]]) == 0.0  # exact means exact


def test_reference_streams_pad_with_none():
    assert reference_streams([["a"], ["b", "c"]]) == [["a", "b"], [None, "c"]]


@pytest.mark.parametrize("metric, sacrebleu_metric", [(chrf, CHRF), (bleu, BLEU)])
def test_multi_reference_equals_padding_with_a_repeated_reference(metric, sacrebleu_metric):
    # The oracle: both scores take, per segment, the best match over its references,
    # so repeating a segment's own reference cannot change its score; padding with
    # None (a missing reference) must therefore give the same as padding with repeats.
    repeated = [[refs[j] if j < len(refs) else refs[0] for refs in REFERENCES] for j in range(3)]
    assert metric(HYPOTHESES, REFERENCES) == pytest.approx(sacrebleu_metric().corpus_score(HYPOTHESES, repeated).score)
    # padding with '' is not the same: the empty reference counts (BLEU's brevity penalty is waived here)
    blank = [[refs[j] if j < len(refs) else "" for refs in REFERENCES] for j in range(3)]
    if metric is bleu:
        assert BLEU().corpus_score(HYPOTHESES, blank).score > metric(HYPOTHESES, REFERENCES)


def test_a_matching_reference_scores_full_marks_and_order_does_not_matter():
    hypotheses = ["le chat est noir", "il pleut beaucoup"]
    references = [["un chat noir", "le chat est noir"], ["il pleut beaucoup"]]
    scores = translation_scores(hypotheses, references)
    assert scores == {"exact_match": 1.0, "chrf": pytest.approx(100.0), "bleu": pytest.approx(100.0)}
    swapped = [list(reversed(refs)) for refs in references]
    assert chrf(hypotheses, swapped) == pytest.approx(scores["chrf"])
    # a worse extra reference never lowers the score
    assert chrf(HYPOTHESES[:1], [["the cat sat"]]) <= chrf(HYPOTHESES[:1], [["the cat sat", "zzz"]]) + 1e-9


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="no hypotheses"):
        exact_match([], [])
    with pytest.raises(ValueError, match="at least one reference"):
        chrf(["a"], [[]])
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        bleu(["a", "b"], [["a"]])
