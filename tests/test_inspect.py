"""charlm inspect and what it stands on: surprisal per character, per-layer activations, units a pattern picks."""

import math
import random
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlm.cli.app import app
from charlm.config import build_config
from charlm.engine.checkpoint import save_checkpoint
from charlm.report.neurons import average_ranks, layer_activations, match_mask, parse_unit, rank_units
from charlm.report.surprisal import characters_of, surprisal_of
from charlm.tasks.lm.evaluate import evaluate_ids, score_ids
from charlm.tasks.lm.model import CharRNN, ModelSpec
from charlm.text.vocab import ByteVocab, Vocab
from charlm.errors import CharlmError

QUOTES = r'"[^"]*"'
PLANTED = (0, 5)  # layer index, unit: the constructed model's inside-quotes unit



@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine lose 4x to waiting."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# -- a constructed model whose unit 1:5 is +1 exactly inside quotes ---------------------------------

def quoted_text(seed: int = 0, words: int = 90) -> str:
    """Words with balanced double-quoted spans among them (a quote of one word, of several, an empty one)."""
    rng = random.Random(seed)
    vocabulary = ["he", "said", "abc", "the", "dog", "a", "cab", "bad", "ice", "fig"]
    out, inside = [], False
    for index in range(words):
        word = rng.choice(vocabulary)
        if not inside and rng.random() < 0.2:
            word, inside = '"' + word, True
        elif inside and rng.random() < 0.4:
            word, inside = word + '"', False
        out.append(word)
    text = " ".join(out) + ('"' if inside else "") + ' and "" then.\n'
    assert text.count('"') % 2 == 0
    return text


def planted_model(vocab: Vocab, gain: float = 20.0) -> CharRNN:
    """A 2-layer tanh RNN whose first layer tracks quotes exactly (hand-set weights, one-hot embeddings).

    Units of layer 1, as 0/1 truths b = (h + 1) / 2 after each character c:
      u = odd number of quotes so far, and c is not a quote; v = even before c, and c is a quote
      (so u + v = "an odd number of quotes so far", never both); s = 1 from the first step on;
      a (unit 5) = c is a quote, or an odd number of quotes before c: inside "...", both quotes included.
    Each is a threshold of the state before c and of c, so one tanh layer computes it; s removes the
    zero initial state's ambiguity. The other units and layer 2 have random weights and do not read u, v, a.
    """
    spec = ModelSpec(vocab_size=vocab.size, cell="rnn", hidden_size=8, num_layers=2, embedding_size=vocab.size)
    torch.manual_seed(0)
    model = CharRNN(spec).eval()
    quote = vocab.chars.index('"')
    u, v, s, a = 0, 1, 2, PLANTED[1]
    with torch.no_grad():
        model.embedding.weight.copy_(torch.eye(vocab.size))
        w_ih, w_hh = model.rnn.weight_ih_l0, model.rnn.weight_hh_l0
        b_ih, b_hh = model.rnn.bias_ih_l0, model.rnn.bias_hh_l0
        for row in (u, v, s, a):
            w_ih[row].zero_(), w_hh[row].zero_()
            b_ih[row] = 0
        w_ih[u, quote], w_hh[u, u], w_hh[u, v], w_hh[u, s], b_hh[u] = -gain, gain / 2, gain / 2, 10 * gain, -9.5 * gain
        w_ih[v, quote], w_hh[v, u], w_hh[v, v], w_hh[v, s], b_hh[v] = gain, -gain / 2, -gain / 2, -gain, -gain / 2
        w_ih[a, quote], w_hh[a, u], w_hh[a, v], w_hh[a, s], b_hh[a] = gain, gain / 2, gain / 2, gain, -gain / 2
        b_hh[s] = gain
        others = [row for row in range(8) if row not in (u, v, s, a)]
        w_hh[np.ix_(others, [u, v, a])] = 0  # only u, v and a carry the quotes: no other unit copies them
        model.rnn.weight_ih_l1[:, [u, v, a]] = 0
    return model


@pytest.fixture
def quote_run(tmp_path):
    """The planted model saved as a run directory, and its vocabulary."""
    vocab = Vocab.from_text(quoted_text() + quoted_text(1))
    model = planted_model(vocab)
    config = build_config({"cell": "rnn", "hidden_size": 8, "num_layers": 2, "embedding_size": vocab.size,
                           "device": "cpu"})
    run = tmp_path / "quotes"
    run.mkdir()
    save_checkpoint(run, "best", model.state_dict(), {"model": model.spec.to_dict(), "vocab": vocab.to_json(),
                                                      "config": config.to_dict(), "corpus": {"name": "quotes"}, "step": 0})
    return run, vocab, model


def test_planted_unit_is_inside_quotes_exactly(quote_run):
    _, vocab, model = quote_run
    text = quoted_text(1)
    activations = layer_activations(model, vocab.encode(text)[0])  # (T, L, H)
    inside = match_mask(text, QUOTES)
    assert np.all(activations[inside, 0, PLANTED[1]] > 0.99) and np.all(activations[~inside, 0, PLANTED[1]] < -0.99)


def test_find_neurons_ranks_the_planted_unit_first(quote_run):
    _, vocab, model = quote_run
    text = quoted_text(1)
    scores = rank_units(layer_activations(model, vocab.encode(text)[0]), match_mask(text, QUOTES))
    assert (scores[0].layer, scores[0].unit) == PLANTED and scores[0].name == "1:5"
    assert scores[0].separation == pytest.approx(1.0) and scores[0].mean_inside > 0.99
    assert scores[1].separation < 0.99


def test_inspect_find_neurons_cli_shows_the_planted_unit(quote_run, monkeypatch):
    run, _, _ = quote_run
    monkeypatch.setenv("NO_COLOR", "1")
    result = CliRunner().invoke(app, ["inspect", "--checkpoint", str(run), "--text", quoted_text(1),
                                      "--find-neurons", QUOTES, "--top", "1", "--length", "80"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if re.match(r"^\d+:\d+ ", line)]
    assert rows[0][:2] == ["1:5", "1.000"]
    assert "unit 1:5: separation 1.000, higher inside matches (marked ^)" in result.output
    # Plain marks: '#' (above 0.6) under every character inside quotes, '=' (below -0.6) under the rest.
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("unit 1:5")) + 2
    text_line, marks, matches = lines[start], lines[start + 1], lines[start + 2]
    assert '"' in text_line and "\x1b" not in result.output
    for char, mark, match in zip(text_line, marks.ljust(len(text_line)), matches.ljust(len(text_line))):
        assert mark == ("#" if match == "^" else "=")


def test_inspect_neuron_colours_with_a_terminal_and_not_without(quote_run, monkeypatch):
    run, _, _ = quote_run
    argv = ["inspect", "--checkpoint", str(run), "--text", quoted_text(1), "--neuron", "1:5", "--length", "60"]
    monkeypatch.setenv("FORCE_COLOR", "1")
    coloured = CliRunner().invoke(app, argv)
    monkeypatch.setenv("NO_COLOR", "1")
    plain = CliRunner().invoke(app, argv)
    assert coloured.exit_code == plain.exit_code == 0
    assert "\x1b[" in coloured.output and "\x1b[" not in plain.output
    assert "unit 1:5: mean" in plain.output and "activation: = below -0.6" in plain.output


# -- surprisal against charlm eval ----------------------------------------------------------------

def test_surprisal_of_each_character_is_what_eval_scores(quote_run):
    _, vocab, model = quote_run
    ids = vocab.encode(quoted_text(2)[:60])[0]
    scored = surprisal_of(model, ids, vocab)
    # Oracle: charlm eval's own summed cross-entropy of each prefix; a character's surprisal is the growth.
    totals = [0.0] + [float(score_ids(model, ids[:n], streams=1)) for n in range(2, len(ids) + 1)]
    assert math.isnan(scored.nats[0])
    np.testing.assert_allclose(scored.nats[1:], np.diff(totals), atol=2e-5)
    assert scored.mean_nats == pytest.approx(evaluate_ids(model, ids, streams=1).nats_per_char, abs=1e-6)
    probs = scored.top_probs[1:]
    assert np.all(np.diff(probs, axis=1) <= 0) and np.all(probs.sum(axis=1) <= 1 + 1e-6)
    # The first prediction is the most likely token, and a token the model gave p has -ln p nats.
    hit = scored.top_ids[1:, 0] == ids[1:].numpy()
    np.testing.assert_allclose(scored.nats[1:][hit], -np.log(probs[hit, 0]), rtol=1e-4)


def test_byte_model_shows_a_multibyte_character_once_with_its_bytes_bits():
    torch.manual_seed(1)
    model = CharRNN(ModelSpec(vocab_size=256, hidden_size=8, num_layers=1, embedding_size=4)).eval()
    vocab = ByteVocab()
    ids, _ = vocab.encode("né.")
    characters = characters_of(vocab, ids.numpy())
    assert [c.text for c in characters] == ["n", "é", "."] and characters[1].count == 2
    scored = surprisal_of(model, ids, vocab)
    shown = scored.characters()
    assert shown[1][1] == pytest.approx(scored.bits[1] + scored.bits[2])


# -- activations, one layer at a time ----------------------------------------------------------------

@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_layer_by_layer_activations_end_in_the_stacks_output(cell):
    torch.manual_seed(0)
    model = CharRNN(ModelSpec(vocab_size=7, cell=cell, hidden_size=6, num_layers=3, embedding_size=5)).eval()
    ids = torch.randint(0, 7, (40,))
    activations = layer_activations(model, ids)
    with torch.no_grad():
        stacked, _ = model.rnn(model.embedding(ids[:, None]))  # (T, 1, H)
    assert activations.shape == (40, 3, 6)
    np.testing.assert_allclose(activations[:, -1], stacked[:, 0].numpy(), atol=1e-6)


def test_first_layer_activations_follow_the_tanh_rnn_equation():
    torch.manual_seed(0)
    model = CharRNN(ModelSpec(vocab_size=5, cell="rnn", hidden_size=4, num_layers=2, embedding_size=3)).eval()
    ids = torch.randint(0, 5, (12,))
    p = {name: t.detach().numpy().astype(np.float64) for name, t in model.named_parameters()}
    h, expected = np.zeros(4), []
    for i in ids.tolist():  # by hand: h = tanh(W_ih x + b_ih + W_hh h + b_hh)
        h = np.tanh(p["rnn.weight_ih_l0"] @ p["embedding.weight"][i] + p["rnn.bias_ih_l0"]
                    + p["rnn.weight_hh_l0"] @ h + p["rnn.bias_hh_l0"])
        expected.append(h)
    np.testing.assert_allclose(layer_activations(model, ids)[:, 0], np.array(expected), atol=1e-6)


def test_average_ranks_share_ties():
    values = np.array([[3.0, 1.0, 1.0, 2.0, 1.0]]).T
    assert average_ranks(values)[:, 0].tolist() == [5.0, 2.0, 2.0, 4.0, 2.0]


def test_a_unit_lower_inside_scores_the_same_separation():
    activations = np.array([[1.0], [-1.0], [-1.0], [1.0]])[:, None, :]  # (T, 1, 1)
    score = rank_units(activations, np.array([False, True, True, False]))[0]
    assert score.auc == 0.0 and score.separation == 1.0


# -- bad input: one line, exit 1 ----------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--neuron", "x"], "--neuron takes LAYER:UNIT, e.g. 1:37, got 'x' (this model has layers 1..2, units 0..7)"),
    (["--neuron", "3:0"], "--neuron 3:0 is outside the model (layers 1..2, units 0..7)"),
    (["--neuron", "1:8"], "--neuron 1:8 is outside the model"),
    (["--find-neurons", "zzz"], "the pattern 'zzz' matches nothing in the text"),
    (["--find-neurons", "(unclosed"], "'(unclosed' is not a valid regular expression"),
    (["--find-neurons", "."], "matches the whole text"),
    (["--neuron", "1:1", "--find-neurons", "a"], "give one of them"),
    (["--length", "0"], "--length must be 1 or more"),
])
def test_inspect_bad_input_is_one_line(quote_run, flags, message):
    run, _, _ = quote_run
    result = CliRunner().invoke(app, ["inspect", "--checkpoint", str(run), "--text", 'he said "a b".', *flags])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("charlm: error: ")
    assert message in result.stderr


def test_inspect_unknown_run_and_unknown_characters(tmp_path, quote_run):
    run, _, _ = quote_run
    missing = CliRunner().invoke(app, ["inspect", "--checkpoint", str(tmp_path / "nope")])
    unknown = CliRunner().invoke(app, ["inspect", "--checkpoint", str(run), "--text", "XYZ"])
    for result in (missing, unknown):
        assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "does not exist" in missing.stderr and "not in the model's vocabulary" in unknown.stderr


def test_parse_unit_counts_layers_from_one():
    assert parse_unit("2:0", 2, 4) == (1, 0)
    with pytest.raises(CharlmError):
        parse_unit("0:1", 2, 4)
