import math

import pytest
import torch

from charlm.modules.attention import Attention
from charlm.modules.encoder import SequenceEncoder, length_mask

V, E, H = 9, 5, 6


def _padded_batch(seqs, pad_value=0):
    lengths = torch.tensor([len(s) for s in seqs])
    x = torch.full((int(lengths.max()), len(seqs)), pad_value, dtype=torch.long)
    for b, s in enumerate(seqs):
        x[: len(s), b] = torch.tensor(s)
    return x, lengths


SEQS = [[1, 2, 3], [4, 5, 6, 7, 8, 1], [2], [3, 3, 4, 5]]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_encoder_batched_equals_each_sequence_alone(cell, bidirectional):
    # The oracle: each sequence run by itself, with no padding anywhere.
    torch.manual_seed(0)
    encoder = SequenceEncoder(V, E, cell, H, num_layers=2, bidirectional=bidirectional).eval()
    x, lengths = _padded_batch(SEQS)
    with torch.no_grad():
        batched = encoder(x, lengths)
        for b, seq in enumerate(SEQS):
            alone = encoder(torch.tensor(seq)[:, None], torch.tensor([len(seq)]))
            torch.testing.assert_close(batched.outputs[: len(seq), b], alone.outputs[:, 0])
            for part, part_alone in zip(_parts(batched.final), _parts(alone.final)):
                torch.testing.assert_close(part[:, b], part_alone[:, 0])
    assert batched.outputs.shape == (x.shape[0], len(SEQS), encoder.output_size)
    assert (batched.outputs[~batched.mask] == 0).all()  # padding positions come out as zeros


def _parts(final):
    return final if isinstance(final, tuple) else (final,)


def test_encoder_ignores_what_the_padding_holds():
    torch.manual_seed(0)
    encoder = SequenceEncoder(V, E, "gru", H, bidirectional=True).eval()
    x, lengths = _padded_batch(SEQS, pad_value=0)
    garbage = x.clone()
    garbage[~length_mask(lengths, x.shape[0])] = torch.randint(V, (int((~length_mask(lengths, x.shape[0])).sum()),))
    with torch.no_grad():
        a, b = encoder(x, lengths), encoder(garbage, lengths)
    torch.testing.assert_close(a.outputs, b.outputs)
    torch.testing.assert_close(a.final, b.final)


def test_top_layer_final_is_forward_last_and_backward_first_output():
    # The forward direction's final state is its output at the last real position,
    # the backward direction's is its output at position 0.
    torch.manual_seed(0)
    encoder = SequenceEncoder(V, E, "lstm", H, num_layers=2, bidirectional=True).eval()
    x, lengths = _padded_batch(SEQS)
    with torch.no_grad():
        encoded = encoder(x, lengths)
    final = encoder.top_layer_final(encoded.final)  # (B, 2H)
    last = encoded.outputs[lengths - 1, torch.arange(len(SEQS))]  # (B, 2H)
    torch.testing.assert_close(final[:, :H], last[:, :H])
    torch.testing.assert_close(final[:, H:], encoded.outputs[0, :, H:])


def test_encoder_refuses_empty_sequences():
    encoder = SequenceEncoder(V, E, "gru", H)
    with pytest.raises(ValueError, match="at least one"):
        encoder(torch.zeros(3, 2, dtype=torch.long), torch.tensor([3, 0]))


def test_length_mask():
    assert length_mask(torch.tensor([2, 0, 3]), 3).t().tolist() == [
        [True, True, False], [False, False, False], [True, True, True]]


# --- attention ---------------------------------------------------------------

KEYS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [5.0, 5.0]])  # (S=4, K=2); the last is padding
MASK = torch.tensor([True, True, True, False])


def _memory(attention, keys=KEYS, mask=MASK):
    return attention.remember(keys[:, None, :], mask[:, None])  # one source


def test_dot_attention_by_hand():
    attention = Attention("dot", 2, 2)
    context, weights = attention(torch.tensor([[1.0, 0.0]]), _memory(attention))
    # scores 1, 0, 2 (padding excluded): softmax by hand
    total = math.e + 1 + math.e ** 2
    expected = torch.tensor([[math.e / total, 1 / total, math.e ** 2 / total, 0.0]])
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(context, torch.tensor([[(math.e + 2 * math.e ** 2) / total, 1 / total]]))


def test_general_attention_by_hand():
    attention = Attention("general", 2, 2)
    with torch.no_grad():
        attention.key_layer.weight.copy_(torch.tensor([[0.0, 1.0], [0.0, 0.0]]))  # qᵀ W k = q0 * k1
    _, weights = attention(torch.tensor([[3.0, 7.0]]), _memory(attention))
    # scores 0, 3, 0 over the real positions
    total = 2 + math.e ** 3
    torch.testing.assert_close(weights, torch.tensor([[1 / total, math.e ** 3 / total, 1 / total, 0.0]]))


def test_additive_attention_by_hand():
    attention = Attention("additive", 2, 2, attention_size=1)
    with torch.no_grad():
        attention.query_layer.weight.copy_(torch.tensor([[1.0, 0.0]]))
        attention.query_layer.bias.fill_(0.5)
        attention.key_layer.weight.copy_(torch.tensor([[0.0, 1.0]]))
        attention.v.weight.fill_(2.0)
    _, weights = attention(torch.tensor([[0.25, 9.0]]), _memory(attention))
    # score = 2 * tanh(0.25 + 0.5 + k1) with k1 = 0, 1, 0
    scores = [2 * math.tanh(0.75), 2 * math.tanh(1.75), 2 * math.tanh(0.75)]
    total = sum(math.exp(s) for s in scores)
    torch.testing.assert_close(weights, torch.tensor([[math.exp(s) / total for s in scores] + [0.0]]))


@pytest.mark.parametrize("kind", ["additive", "dot", "general"])
def test_padding_gets_exactly_zero_weight_and_changes_nothing(kind):
    torch.manual_seed(0)
    attention = Attention(kind, 3, 3)
    keys = torch.randn(5, 2, 3)  # (S, B, K)
    mask = length_mask(torch.tensor([5, 2]), 5)  # (S, B)
    query = torch.randn(2, 3)
    context, weights = attention(query, attention.remember(keys, mask))
    assert (weights[1, 2:] == 0).all()  # exactly zero, not merely small
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    noisy = keys.clone()
    noisy[2:, 1] = 1e3 * torch.randn(3, 3)
    context_noisy, weights_noisy = attention(query, attention.remember(noisy, mask))
    torch.testing.assert_close(context_noisy, context)
    torch.testing.assert_close(weights_noisy, weights)


@pytest.mark.parametrize("kind", ["additive", "dot", "general"])
def test_grouped_queries_equal_copied_sources(kind):
    # Beam search asks G queries per source; the oracle repeats each source G times.
    torch.manual_seed(0)
    attention = Attention(kind, 4, 4)
    keys, mask = torch.randn(6, 3, 4), length_mask(torch.tensor([6, 3, 1]), 6)
    query = torch.randn(3 * 2, 4)  # rows 0-1 ask source 0, rows 2-3 source 1, rows 4-5 source 2
    grouped = attention(query, attention.remember(keys, mask))
    copied = attention(query, attention.remember(keys.repeat_interleave(2, dim=1), mask.repeat_interleave(2, dim=1)))
    for a, b in zip(grouped, copied):
        torch.testing.assert_close(a, b)


def test_dot_attention_needs_matching_sizes():
    with pytest.raises(ValueError, match="dot attention"):
        Attention("dot", 3, 4)
