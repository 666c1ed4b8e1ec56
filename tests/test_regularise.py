"""Regularising the recurrence: masks constant where they should be, off in evaluation, exact resume, tied weights."""

import json

import pytest
import torch

from charlm.tasks.lm.model import CharRNN, ModelSpec
from charlm.tasks.lm.regularise import embedded_dropout, locked_dropout, regularised_forward


def _model(**regularisation):
    torch.manual_seed(0)
    return CharRNN(ModelSpec(vocab_size=11, cell=regularisation.pop("cell", "lstm"), hidden_size=16, num_layers=2,
                             embedding_size=8, **regularisation))


def test_locked_dropout_keeps_one_mask_per_sequence_for_every_step():
    torch.manual_seed(1)
    out = locked_dropout(torch.ones(50, 4, 32), 0.5)  # (T, B, F)
    assert torch.equal(out, out[:1].expand_as(out))  # the same at every step
    assert not torch.equal(out[:, 0], out[:, 1])  # but each sequence its own
    assert set(out.unique().tolist()) == {0.0, 2.0}  # kept ones scaled by 1 / (1 - p)


def test_embedding_dropout_drops_whole_characters():
    torch.manual_seed(2)
    weight = embedded_dropout(torch.ones(100, 6), 0.3)  # (V, E)
    kept = weight.sum(dim=1) > 0  # (V,)
    assert torch.allclose(weight[kept], torch.full_like(weight[kept], 1 / 0.7))  # whole rows kept, scaled
    assert torch.equal(weight[~kept], torch.zeros_like(weight[~kept])) and 10 < int((~kept).sum()) < 50


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_the_per_layer_kernels_equal_the_module_with_nothing_dropped(cell):
    model = _model(cell=cell)
    x = torch.randint(11, (9, 3))
    hidden = model(x)[1]  # a non-zero carried state
    expected, expected_hidden = model(x, hidden)
    got, got_hidden = regularised_forward(model, x, hidden)  # every p is 0: only the kernels differ
    torch.testing.assert_close(got, expected)
    for a, b in zip(got_hidden if cell == "lstm" else [got_hidden], expected_hidden if cell == "lstm"
                    else [expected_hidden]):
        torch.testing.assert_close(a, b)


def test_weight_drop_uses_one_mask_for_the_whole_window():
    model = _model(weight_drop=0.5).train()
    torch.manual_seed(3)
    logits, _ = model(torch.randint(11, (30, 4)))
    logits.sum().backward()
    grad = model.rnn.weight_hh_l0.grad  # (4H, H): zero exactly where the window's mask dropped a weight
    zeros = (grad == 0).float().mean().item()
    assert 0.4 < zeros < 0.6


@pytest.mark.parametrize("regularisation", [{"weight_drop": 0.3}, {"embedding_dropout": 0.3}])
def test_plain_dropout_between_layers_stays_on_beside_weight_or_embedding_dropout(regularisation):
    # --dropout acts between layers (nn.LSTM's own) and before the head; with weight drop or embedding
    # dropout the regularised path runs instead, and it must still drop between layers. The head's
    # dropout is switched off here, so only the between-layer mask can make the two passes differ.
    x = torch.randint(11, (12, 3))
    differs = {}
    for name, extra in (("plain", {}), ("regularised", regularisation)):
        model = _model(dropout=0.5, **extra).train()
        model.dropout.p = 0.0
        with torch.no_grad():  # zero what weight drop and embedding dropout mask: their masks change nothing
            for weight in (model.embedding.weight, model.rnn.weight_hh_l0, model.rnn.weight_hh_l1):
                weight.zero_()
        torch.manual_seed(4)
        first, _ = model(x)
        torch.manual_seed(5)
        second, _ = model(x)
        differs[name] = not torch.equal(first, second)
    assert differs == {"plain": True, "regularised": True}


def test_regularisation_is_off_in_evaluation():
    plain, regularised = _model(), _model(weight_drop=0.5, locked_dropout=0.3, embedding_dropout=0.2)
    regularised.load_state_dict(plain.state_dict())
    x = torch.randint(11, (12, 2))
    plain.eval(), regularised.eval()
    assert torch.equal(plain(x)[0], regularised(x)[0])
    regularised.train()
    assert not torch.equal(plain(x)[0], regularised(x)[0])


def test_tied_weights_share_the_embedding_and_save_its_size():
    untied, tied = _model(), _model(tie_weights=True)
    saved = untied.num_parameters() - tied.num_parameters()
    assert saved == 11 * 16 + 11 - (16 * 8 + 11)  # the V x H head (and its bias) for an E x H projection and a bias
    x = torch.randint(11, (5, 2))
    logits, _ = tied(x)
    logits.sum().backward()
    assert tied.embedding.weight.grad[x.unique()].abs().sum() > 0
    tied.eval()
    step_logits, _ = tied.step(x[0])  # the sampler's single step reads the tied matrix too
    torch.testing.assert_close(step_logits, tied(x[:1])[0][0])


def test_a_regularised_run_resumes_bitwise(tmp_path, text_file, tiny_config):
    from charlm.engine.checkpoint import read_tensors
    from charlm.engine.loop import train
    from charlm.tasks.lm.task import LanguageModelTask
    from charlm.text.corpus import read_corpus

    config = tiny_config.replace(num_layers=2, weight_drop=0.3, locked_dropout=0.2, embedding_dropout=0.1,
                                 tie_weights=True, max_steps=40, eval_every=10)
    corpus = text_file()

    def run(out, **kwargs):
        return list(train(LanguageModelTask(read_corpus(corpus), config), tmp_path / out, **kwargs))

    run("straight")
    polls = iter(range(10**6))
    assert run("resumed", stop_requested=lambda: next(polls) >= 17)[-1].reason == "interrupted"
    run("resumed", resume=True)
    weights = {}
    for name in ("straight", "resumed"):
        record = json.loads((tmp_path / name / "last.json").read_text())
        weights[name] = read_tensors(tmp_path / name / record["weights"])
        assert record["model"]["tie_weights"] and record["step"] == 40
    assert all(torch.equal(weights["straight"][k], weights["resumed"][k]) for k in weights["straight"])
