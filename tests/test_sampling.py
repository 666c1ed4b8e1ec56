import pytest
import torch

from charlm.errors import CharlmError, VocabularyError
from charlm.tasks.lm.model import CharRNN, ModelSpec
from charlm.decode.sampling import SamplingOptions, filter_logits, pick_next
from charlm.tasks.lm.generate import generate
from charlm.text.vocab import Vocab


def _model(vocab_size=6, seed=0):
    torch.manual_seed(seed)
    return CharRNN(ModelSpec(vocab_size=vocab_size, hidden_size=8, num_layers=1, embedding_size=4)).eval()


def test_top_k_keeps_exactly_k():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_logits(logits, SamplingOptions(top_k=2)))
    assert kept.tolist() == [[False, True, False, True, False]]
    # k at or above the vocabulary size keeps everything
    assert torch.isfinite(filter_logits(logits, SamplingOptions(top_k=99))).all()


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = lambda p: torch.isfinite(filter_logits(logits, SamplingOptions(top_p=p))).tolist()[0]
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.6) == [True, True, False, False]
    assert kept(0.95) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]
    assert kept(0.01) == [True, False, False, False]  # the most likely always survives


def test_temperature_scales_and_zero_is_greedy():
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    # scaled logits are shifted so the best is 0: the distribution is softmax(logits / T)
    scaled = filter_logits(logits, SamplingOptions(temperature=0.5))
    torch.testing.assert_close(scaled, logits * 2 - 4)
    generator = torch.Generator().manual_seed(0)
    picks = {int(pick_next(logits, SamplingOptions(temperature=0), generator)) for _ in range(20)}
    assert picks == {1}


def test_low_temperature_concentrates_and_high_spreads():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    generator = torch.Generator().manual_seed(0)
    cold = [int(pick_next(logits, SamplingOptions(temperature=0.05), generator)) for _ in range(200)]
    hot = [int(pick_next(logits, SamplingOptions(temperature=5.0), generator)) for _ in range(200)]
    assert cold.count(0) == 200 and len(set(hot)) == 3


@pytest.mark.parametrize("temperature", [1e-20, 1e-40, 1e-50])
@pytest.mark.parametrize("options", [dict(), dict(top_k=2), dict(top_p=0.9)])
def test_a_tiny_temperature_is_greedy(temperature, options):
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.999]])
    scaled = filter_logits(logits, SamplingOptions(temperature=temperature, **options))
    assert not scaled.isnan().any()  # no inf - inf, no 0 / 0
    assert torch.softmax(scaled, dim=-1).tolist() == [[0.0, 1.0, 0.0, 0.0]]
    # and through generate, both the Gumbel path (no top-k/top-p) and pick_next
    vocab, model = Vocab.from_text("abcdef"), _model()
    run = lambda sampling: "".join(generate(model, vocab, "ab", 30, sampling, torch.Generator().manual_seed(0)))
    assert run(SamplingOptions(temperature=temperature, **options)) == run(SamplingOptions(temperature=0))


@pytest.mark.parametrize("options", [dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=0)])
def test_bad_options_are_refused(options):
    with pytest.raises(CharlmError):
        SamplingOptions(**options)


def test_fixed_seed_is_reproducible_and_seeds_differ():
    vocab, model = Vocab.from_text("abcdef"), _model()
    run = lambda seed: "".join(generate(model, vocab, "ab", 50, SamplingOptions(),
                                        torch.Generator().manual_seed(seed)))
    assert run(3) == run(3)
    assert run(3) != run(4)
    assert len(run(3)) == 50


def test_carried_state_equals_rerunning_the_prefix():
    vocab, model = Vocab.from_text("abcdef"), _model()
    text = "abc" + "".join(generate(model, vocab, "abc", 12, SamplingOptions(temperature=0), torch.Generator()))
    # greedy continuation: each character must be the argmax given the whole prefix
    ids, _ = vocab.encode(text)
    with torch.no_grad():
        logits, _ = model(ids.unsqueeze(1))
    assert logits[2:-1, 0].argmax(-1).tolist() == ids[3:].tolist()


def test_stop_string_ends_the_sample():
    vocab, model = Vocab.from_text("ab"), _model(vocab_size=2)
    out = "".join(generate(model, vocab, "a", 1000, SamplingOptions(), torch.Generator().manual_seed(1), stop="ab"))
    assert out.endswith("ab") or len(out) == 1000
    assert "ab" not in out[:-1] or out.index("ab") == len(out) - 2


def test_prime_errors_come_before_any_output():
    vocab, model = Vocab.from_text("abc"), _model(vocab_size=3)
    with pytest.raises(VocabularyError, match="'z'"):
        generate(model, vocab, "abz", 5, SamplingOptions(), torch.Generator())


def test_the_exponential_race_samples_the_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]])
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([pick_next(logits.expand(4000, 4), SamplingOptions(), generator) for _ in range(5)]).flatten()
    frequencies = torch.bincount(draws, minlength=4).float() / draws.numel()
    torch.testing.assert_close(frequencies, torch.softmax(logits[0], -1), atol=0.01, rtol=0)


def test_a_byte_level_model_streams_whole_characters():
    from charlm.text.vocab import ByteVocab

    model = _model(vocab_size=256)
    with torch.no_grad():  # make the head always prefer the bytes of "é" (0xC3 0xA9) in turn
        model.head.weight.zero_()
        model.head.bias.fill_(-1e4)
        model.head.bias[0xC3] = 0.0
        model.head.bias[0xA9] = 0.0
    chars = list(generate(model, ByteVocab(), "é", 40, SamplingOptions(), torch.Generator().manual_seed(0)))
    assert chars and all(len(c) == 1 for c in chars)
    assert set(chars) <= {"é", "\ufffd"}  # never half a character


def test_a_byte_level_sample_cut_mid_character_ends_in_a_replacement_character():
    from charlm.text.vocab import ByteVocab

    model = _model(vocab_size=256)
    with torch.no_grad():  # the head always prefers 0xC3, the first byte of "é": a sequence never completed
        model.head.weight.zero_()
        model.head.bias.fill_(-1e4)
        model.head.bias[0xC3] = 0.0
    sample = lambda length, stop=None: "".join(generate(model, ByteVocab(), "caf", length,
                                                        SamplingOptions(temperature=0), torch.Generator(), stop=stop))
    assert sample(1) == "\ufffd"  # --length counts bytes; the held-back byte is not lost
    assert sample(3) == "\ufffd" * 3
    assert sample(0) == ""
    # after a stop string nothing more comes out: the held-back byte follows the stop
    assert sample(5, stop="\ufffd") == "\ufffd"


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_plain_sampling_follows_the_tempered_distribution(temperature):
    vocab, model = Vocab.from_text("abcd"), _model(vocab_size=4)
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    with torch.no_grad():  # logits that ignore the state: every step draws from the same distribution
        model.head.weight.zero_()
        model.head.bias.copy_(probs.log())
    n = 12_000
    text = "".join(generate(model, vocab, "a", n, SamplingOptions(temperature=temperature),
                            torch.Generator().manual_seed(3)))
    expected = probs ** (1 / temperature) / (probs ** (1 / temperature)).sum()
    counts = torch.tensor([text.count(c) for c in "abcd"], dtype=torch.float)
    assert torch.allclose(counts / n, expected, atol=0.015), (counts / n, expected)


@pytest.mark.parametrize("line_start, model_reads", [(True, "\nabc"), (False, "abc")])
def test_the_seed_is_read_as_the_start_of_a_line(line_start, model_reads):
    vocab, model = Vocab.from_text("abc\n"), _model(vocab_size=4)
    reads = []
    forward = model.forward
    model.forward = lambda ids, *rest: reads.append(ids) or forward(ids, *rest)
    out = "".join(generate(model, vocab, "abc", 5, SamplingOptions(), torch.Generator().manual_seed(0),
                           line_start=line_start))
    assert len(out) == 5
    assert vocab.decode(reads[0].flatten().tolist()) == model_reads


def test_no_extra_newline_when_the_seed_has_one_or_the_model_knows_none():
    from charlm.tasks.lm.generate import line_start_context
    assert line_start_context(Vocab.from_text("ab\n"), "\nab") == ""
    assert line_start_context(Vocab.from_text("ab"), "ab") == ""
    assert line_start_context(Vocab.from_text("ab\n"), "ab") == "\n"


def test_samples_side_by_side_match_one_stream_when_greedy_and_differ_when_sampled():
    from charlm.tasks.lm.generate import generate_many

    vocab = Vocab(tuple("\nabcde"))
    model = _model(vocab_size=vocab.size, seed=3)
    one = "".join(generate(model, vocab, "ab", 40, SamplingOptions(temperature=0), torch.Generator()))
    many = generate_many(model, vocab, "ab", 40, 5, SamplingOptions(temperature=0), torch.Generator())
    assert many == [one] * 5  # the batched step is the single stream's, column by column
    drawn = generate_many(model, vocab, "ab", 40, 5, SamplingOptions(), torch.Generator().manual_seed(0))
    assert len(set(drawn)) == 5 and all(len(s) == 40 for s in drawn)
    stopped = generate_many(model, vocab, "ab", 40, 5, SamplingOptions(), torch.Generator().manual_seed(0), stop="e")
    assert [s if "e" not in s else s[:s.index("e") + 1] for s in drawn] == stopped
    with pytest.raises(CharlmError, match="--num-samples must be at least 1"):
        generate_many(model, vocab, "ab", 10, 0, SamplingOptions(), torch.Generator())


# Ranked by logit: ids 0 (9.0), 6, 4, 2, 3, 5, 1, 7 (0.0).
PEAKED = torch.tensor([9.0, 1.0, 5.0, 3.0, 7.0, 2.0, 8.0, 0.0])


@pytest.mark.parametrize("temperature", [float("inf"), 1e300, 1e35])
@pytest.mark.parametrize("options, kept", [
    (dict(), [0, 1, 2, 3, 4, 5, 6, 7]),
    (dict(top_k=3), [0, 6, 4]),
    (dict(top_p=0.5), [0, 6, 4, 2]),  # uniform: each of the best holds 1/8 until half is reached
    (dict(top_k=6, top_p=0.5), [0, 6, 4]),
])
def test_an_infinite_temperature_is_uniform_over_what_top_k_and_top_p_keep(temperature, options, kept):
    draws = 16_000
    generator = torch.Generator().manual_seed(0)
    picks = pick_next(PEAKED.expand(draws, -1), SamplingOptions(temperature=temperature, **options), generator)
    frequency = torch.bincount(picks, minlength=8).double() / draws
    expected = torch.zeros(8, dtype=torch.double)
    expected[kept] = 1 / len(kept)
    assert (frequency - expected).abs().max() < 0.025, frequency.tolist()  # ~8 standard deviations at 1/8


@pytest.mark.parametrize("options, kept", [(dict(), "\nabcdefg"), (dict(top_k=2), "ag")])
def test_generate_at_an_infinite_temperature_draws_uniformly(options, kept):
    vocab = Vocab.from_text("\nabcdefg")
    model = _model(vocab_size=8)
    with torch.no_grad():  # the model's logits become its head bias: "a" then "g" the likeliest, "\n" the least
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([-9.0, 9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 8.0]))
    text = "".join(generate(model, vocab, "a", 4000, SamplingOptions(temperature=float("inf"), **options),
                            torch.Generator().manual_seed(1)))
    counts = {char: text.count(char) / len(text) for char in vocab.chars}
    for char in vocab.chars:  # the 64% newlines of the Gumbel shortcut at infinity are gone
        assert abs(counts[char] - (1 / len(kept) if char in kept else 0)) < 0.04, counts
