import math

import torch

from charlm.evaluate import EvalStats, evaluate_ids
from charlm.model import CharRNN, ModelSpec


def _model():
    torch.manual_seed(0)
    return CharRNN(ModelSpec(vocab_size=5, hidden_size=6, num_layers=2, embedding_size=3))


def test_bits_per_char_is_nats_over_ln2_and_perplexity_is_exp():
    stats = EvalStats(characters=10, nats_per_char=1.2)
    assert stats.bits_per_char == 1.2 / math.log(2)
    assert stats.perplexity == math.exp(1.2)
    assert stats.to_dict()["bits_per_char"] == stats.bits_per_char


def test_matches_a_hand_computation_and_ignores_chunk_length():
    model, ids = _model(), torch.randint(5, (37,))
    with torch.no_grad():
        logits, _ = model.eval()(ids[:-1].unsqueeze(1))
        probs = torch.softmax(logits[:, 0], dim=-1)
    by_hand = -sum(math.log(probs[t, ids[t + 1]]) for t in range(36)) / 36
    for chunk in (1, 5, 36, 4096):
        stats = evaluate_ids(model, ids, chunk_len=chunk)
        assert stats.characters == 36
        assert abs(stats.nats_per_char - by_hand) < 1e-5


def test_evaluation_restores_training_mode():
    model = _model().train()
    evaluate_ids(model, torch.randint(5, (20,)))
    assert model.training
