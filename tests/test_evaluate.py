import math

import pytest
import torch

from charlm.tasks.lm import evaluate
from charlm.tasks.lm.data import lay_out_eval_streams
from charlm.tasks.lm.evaluate import EvalStats, evaluate_ids
from charlm.tasks.lm.model import CharRNN, ModelSpec


def _model():
    torch.manual_seed(0)
    return CharRNN(ModelSpec(vocab_size=5, hidden_size=6, num_layers=2, embedding_size=3))


def test_bits_per_char_is_nats_over_ln2_and_perplexity_is_exp():
    stats = EvalStats(characters=10, nats_per_char=1.2)
    assert stats.bits_per_char == 1.2 / math.log(2)
    assert stats.perplexity == math.exp(1.2)
    assert stats.to_dict()["bits_per_char"] == stats.bits_per_char


def test_exact_pass_matches_a_hand_computation():
    model, ids = _model(), torch.randint(5, (37,))
    with torch.no_grad():
        logits, _ = model.eval()(ids[:-1].unsqueeze(1))
        probs = torch.softmax(logits[:, 0], dim=-1)
    by_hand = -sum(math.log(probs[t, ids[t + 1]]) for t in range(36)) / 36
    stats = evaluate_ids(model, ids, streams=1)
    assert stats.characters == 36 and stats.streams == 1
    assert abs(stats.nats_per_char - by_hand) < 1e-5


def test_exact_pass_ignores_chunk_length(monkeypatch):
    model, ids = _model(), torch.randint(5, (500,))
    reference = evaluate_ids(model, ids, streams=1).nats_per_char
    monkeypatch.setattr(evaluate, "EVAL_CHUNK_LEN", 7)
    assert abs(evaluate_ids(model, ids, streams=1).nats_per_char - reference) < 1e-6


def test_eval_layout_scores_every_character_once_with_real_burn_in():
    ids = torch.arange(1, 1002)  # 1000 targets
    layout = lay_out_eval_streams(ids, streams=3, burn_in=50)
    span = 334
    # rows come in chunks of any size; together they are the whole layout
    chunks = [layout.rows(start, start + 100) for start in range(0, span, 100)]
    inputs, targets = torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])
    assert inputs.shape == targets.shape == (span, 3)
    scored = targets.t().flatten()
    assert scored[scored >= 0].tolist() == list(range(2, 1002))
    assert torch.equal(targets[targets >= 0], inputs[targets >= 0] + 1)
    assert layout.burn_in.shape == (50, 2)
    assert layout.burn_in[:, 0].tolist() == list(range(span + 1 - 50, span + 1))  # the 50 ids before stream 1
    assert layout.burn_in[-1, 1] + 1 == inputs[0, 2]


@pytest.mark.slow
def test_batched_pass_agrees_with_the_exact_pass_on_a_trained_model(text_file, tiny_config, tmp_path):
    from charlm.runs import load_checkpoint
    from charlm.text.corpus import read_corpus
    from charlm.engine.loop import train
    from charlm.tasks.lm.task import LanguageModelTask

    text = "".join(f"{i} bottles of beer on the wall, {i} bottles of beer.\n" for i in range(400, 0, -1))
    for _ in train(LanguageModelTask(read_corpus(text_file(text)), tiny_config.replace(max_steps=150, eval_every=150)),
                   tmp_path / "r"):
        pass
    model = load_checkpoint(tmp_path / "r").model
    ids, _ = load_checkpoint(tmp_path / "r").vocab.encode(text)
    exact = evaluate_ids(model, ids, streams=1)
    batched = evaluate_ids(model, ids)
    assert batched.streams > 1 and batched.characters == exact.characters
    assert abs(batched.nats_per_char - exact.nats_per_char) < 2e-3
    bf16 = evaluate_ids(model, ids, amp_dtype=torch.bfloat16)
    assert bf16.precision == "bf16" and abs(bf16.nats_per_char - batched.nats_per_char) < 2e-3


def test_evaluation_restores_training_mode():
    model = _model().train()
    evaluate_ids(model, torch.randint(5, (20,)))
    assert model.training
