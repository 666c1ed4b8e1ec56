import itertools
import math
import zlib

import pytest
import torch

from charlm.decode.sampling import SamplingOptions
from charlm.decode.search import (BeamOptions, LengthLimit, beam_search, generate, iter_steps, length_penalty,
                                  max_output_lengths)
from charlm.errors import CharlmError

START, END = 9, 0  # the start id is fed, never produced; the end id is 0


class TableStep:
    """A step function over explicit prefix probabilities: state = the prefixes written so far (without START).

    It also returns, as the per-step extra, the token it was fed, so tests can
    see that beam search keeps extras with the right tokens.
    """

    def __init__(self, probs):
        self.probs, self.calls = probs, 0

    def __call__(self, tokens, state):
        self.calls += 1
        prefixes = [p + (int(t),) if int(t) != START else p for p, t in zip(state, tokens)]
        log_probs = torch.tensor([self.probs(p) for p in prefixes], dtype=torch.float64).log()
        return log_probs, prefixes, tokens.double()[:, None]

    def select(self, state, index):
        return [state[i] for i in index.tolist()]

    def for_inputs(self, index):
        return self  # the state holds everything an input has


def random_table(vocab_size=4, seed=0):
    """Prefix -> a fixed random distribution over the vocabulary (stable across calls)."""
    def probs(prefix):
        generator = torch.Generator().manual_seed(zlib.crc32(bytes([seed, *prefix])))
        return torch.softmax(3 * torch.randn(vocab_size, generator=generator, dtype=torch.float64), 0).tolist()
    return probs


def _start(batch):
    return [() for _ in range(batch)]


def _exhaustive(probs, max_len, vocab_size, alpha):
    """Every output a search could return, scored the long way round (the oracle)."""
    results = []
    for length in range(1, max_len + 1):
        for seq in itertools.product(range(vocab_size), repeat=length):
            if END in seq[:-1]:
                continue
            ended = seq[-1] == END
            if not ended and length < max_len:
                continue  # unfinished outputs exist only at the maximum length
            score = sum(math.log(probs(seq[:i])[seq[i]]) for i in range(length))
            tokens = list(seq[:-1]) if ended else list(seq)
            results.append((score / length_penalty(length, alpha), tokens, ended, score))
    return sorted(results, key=lambda r: -r[0])


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_wide_beam_finds_the_exhaustive_n_best(alpha):
    probs, max_len = random_table(seed=3), 4
    oracle = _exhaustive(probs, max_len, 4, alpha)
    found = beam_search(TableStep(probs), _start(1), START, END, torch.tensor([max_len]),
                        BeamOptions(beam_size=108, length_penalty=alpha, n_best=5))[0]
    assert [(h.tokens, h.ended) for h in found] == [(r[1], r[2]) for r in oracle[:5]]
    for h, r in zip(found, oracle):
        assert h.normalized_score == pytest.approx(r[0])
        assert h.score == pytest.approx(r[3])


def test_beam_finds_a_higher_scoring_output_than_greedy():
    # After "a" every continuation is mediocre; "b" is less likely first but then ends almost surely.
    def probs(prefix):
        if prefix == ():
            return [0.0, 0.6, 0.4]  # end, a, b
        if prefix[0] == 2:
            return [0.99, 0.005, 0.005]
        return [0.3, 0.36, 0.34]
    greedy = generate(TableStep(probs), _start(1), START, END, torch.tensor([6]))[0]
    beam = beam_search(TableStep(probs), _start(1), START, END, torch.tensor([6]),
                       BeamOptions(beam_size=2, length_penalty=0.0))[0][0]
    assert greedy.tokens[0] == 1
    assert beam.tokens == [2] and beam.ended
    assert beam.score == pytest.approx(math.log(0.4 * 0.99))
    assert beam.score > greedy.score + 1.0


@pytest.mark.parametrize("seed", range(4))
def test_beam_of_one_equals_greedy(seed):
    probs = random_table(vocab_size=5, seed=seed)
    max_lengths = torch.tensor([1, 3, 6, 8])
    greedy = generate(TableStep(probs), _start(4), START, END, max_lengths)
    beam = beam_search(TableStep(probs), _start(4), START, END, max_lengths, BeamOptions(beam_size=1))
    for g, [b] in zip(greedy, beam):
        assert (b.tokens, b.ended) == (g.tokens, g.ended)
        assert b.score == pytest.approx(g.score)
        torch.testing.assert_close(b.extras, g.extras)


def test_scores_are_the_sum_of_log_probs_and_extras_follow_the_tokens():
    probs = random_table(vocab_size=5, seed=7)
    for hypotheses in beam_search(TableStep(probs), _start(3), START, END, torch.tensor([5, 7, 9]),
                                  BeamOptions(beam_size=3, n_best=3)):
        assert len(hypotheses) == 3
        assert len({tuple(h.tokens) for h in hypotheses}) == 3  # n-best are distinct outputs
        assert [h.normalized_score for h in hypotheses] == sorted((h.normalized_score for h in hypotheses),
                                                                  reverse=True)
        for h in hypotheses:
            written = h.tokens + ([END] if h.ended else [])
            rescored = sum(math.log(probs(tuple(written[:i]))[written[i]]) for i in range(len(written)))
            assert h.score == pytest.approx(rescored)
            # the extra of each step is the token fed at that step: START, then the output so far
            assert h.extras[:, 0].tolist() == [START] + written[:-1]


def test_maximum_length_stops_a_model_that_never_ends():
    never_ends = lambda prefix: [0.0, 0.5, 0.5]
    max_lengths = max_output_lengths(torch.tensor([1, 4]), LengthLimit(ratio=1.5, offset=1))
    assert max_lengths.tolist() == [3, 7]  # ceil(1.5 * length + 1)
    for h, limit in zip(generate(TableStep(never_ends), _start(2), START, END, max_lengths), [3, 7]):
        assert len(h.tokens) == limit and not h.ended
    for [h], limit in zip(beam_search(TableStep(never_ends), _start(2), START, END, max_lengths,
                                      BeamOptions(beam_size=3)), [3, 7]):
        assert len(h.tokens) == limit and not h.ended


def test_greedy_streams_one_step_at_a_time_and_stops_when_all_ended():
    step = TableStep(random_table(vocab_size=5, seed=1))
    steps = iter_steps(step, _start(2), START, END, torch.tensor([50, 50]))
    first = next(steps)
    assert step.calls == 1 and first.tokens.shape == (2,) and first.live.all()
    rest = list(steps)
    tokens = torch.stack([s.tokens for s in [first] + rest])  # (steps, B)
    first_end = [int((tokens[:, b] == END).nonzero()[0]) for b in range(2)]
    assert len(rest) + 1 == max(first_end) + 1 < 50  # it stopped as soon as both had ended
    assert step.calls == len(rest) + 1


class ContextStep(TableStep):
    """A step function whose inputs each have their own context (as a source's encoder memory): for_inputs
    must hand on the contexts of the inputs it is given, in the order given."""

    def __init__(self, contexts, sizes=None):
        super().__init__(None)
        self.contexts, self.sizes = contexts, [] if sizes is None else sizes

    def __call__(self, tokens, state):
        self.sizes.append(len(tokens))
        prefixes = [p + (int(t),) if int(t) != START else p for p, t in zip(state, tokens)]
        log_probs = torch.tensor([random_table(vocab_size=5, seed=c)(p) for c, p in zip(self.contexts, prefixes)],
                                 dtype=torch.float64).log()
        return log_probs, prefixes, torch.tensor(self.contexts, dtype=torch.float64)[:, None]

    def for_inputs(self, index):
        return ContextStep([self.contexts[i] for i in index.tolist()], self.sizes)


def test_inputs_that_are_done_leave_the_batch_and_the_others_go_on_as_if_alone():
    contexts, limits = list(range(12)), torch.tensor([9, 2, 30, 30, 1, 30, 5, 30, 30, 0, 30, 30])
    step = ContextStep(contexts)
    together = generate(step, _start(12), START, END, limits)
    alone = [generate(ContextStep([c]), _start(1), START, END, limits[i:i + 1])[0] for i, c in enumerate(contexts)]
    for got, expected in zip(together, alone):
        assert (got.tokens, got.ended, got.score) == (expected.tokens, expected.ended, expected.score)
        if expected.extras is None:  # a limit of 0: nothing written
            assert got.tokens == [] and got.extras.numel() == 0
        else:
            assert torch.equal(got.extras, expected.extras)
    assert step.sizes[0] == 11 and step.sizes == sorted(step.sizes, reverse=True) and step.sizes[-1] < 11
    assert len({len(h.tokens) for h in together}) >= 4  # ends and limits at many lengths


def test_sampling_follows_the_distribution_and_its_seed():
    one_step = lambda prefix: [0.3, 0.7] if prefix == () else [1.0, 0.0]
    options = SamplingOptions(temperature=1.0)
    draw = lambda seed: generate(TableStep(one_step), _start(4000), START, END, torch.full((4000,), 3), options,
                                 torch.Generator().manual_seed(seed))
    first = draw(0)
    share = sum(h.tokens == [1] for h in first) / 4000
    assert abs(share - 0.7) < 0.03  # 4 standard deviations
    assert [h.tokens for h in draw(0)] == [h.tokens for h in first]
    # top-k 1 is greedy
    greedy = generate(TableStep(one_step), _start(3), START, END, torch.full((3,), 3),
                      SamplingOptions(top_k=1), torch.Generator().manual_seed(0))
    assert all(h.tokens == [1] and h.ended for h in greedy)


def test_options_name_the_bad_flag():
    with pytest.raises(CharlmError, match="--beam-size"):
        BeamOptions(beam_size=0)
    with pytest.raises(CharlmError, match="--n-best"):
        BeamOptions(beam_size=2, n_best=3)
    with pytest.raises(CharlmError, match="--length-penalty"):
        BeamOptions(length_penalty=-1)
    with pytest.raises(CharlmError, match="maximum output length"):
        LengthLimit(ratio=0, offset=0)
