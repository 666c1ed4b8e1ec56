import pytest
import torch

from charlm.tasks.lm.model import CharRNN, ModelSpec, detach_hidden

torch.manual_seed(0)
I, H, T, B = 5, 7, 4, 3


def _run(module, x, h0):
    with torch.no_grad():
        return module(x, h0)


def test_rnn_matches_its_equation():
    rnn = torch.nn.RNN(I, H, nonlinearity="tanh")
    x, h = torch.randn(T, B, I), torch.randn(1, B, H)
    out, _ = _run(rnn, x, h)
    ht = h[0]
    for t in range(T):
        ht = torch.tanh(x[t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + ht @ rnn.weight_hh_l0.T + rnn.bias_hh_l0)
        torch.testing.assert_close(out[t], ht)


def test_lstm_matches_its_gate_equations():
    lstm = torch.nn.LSTM(I, H)
    x, h, c = torch.randn(T, B, I), torch.randn(1, B, H), torch.randn(1, B, H)
    out, (hn, cn) = _run(lstm, x, (h, c))
    ht, ct = h[0], c[0]
    for t in range(T):
        gates = x[t] @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + ht @ lstm.weight_hh_l0.T + lstm.bias_hh_l0
        i, f, g, o = gates.chunk(4, dim=1)
        ct = torch.sigmoid(f) * ct + torch.sigmoid(i) * torch.tanh(g)
        ht = torch.sigmoid(o) * torch.tanh(ct)
        torch.testing.assert_close(out[t], ht)
    torch.testing.assert_close(cn[0], ct)


def test_gru_matches_its_gate_equations():
    gru = torch.nn.GRU(I, H)
    x, h = torch.randn(T, B, I), torch.randn(1, B, H)
    out, _ = _run(gru, x, h)
    ht = h[0]
    for t in range(T):
        xr, xz, xn = (x[t] @ gru.weight_ih_l0.T + gru.bias_ih_l0).chunk(3, dim=1)
        hr, hz, hn = (ht @ gru.weight_hh_l0.T + gru.bias_hh_l0).chunk(3, dim=1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        ht = (1 - z) * n + z * ht
        torch.testing.assert_close(out[t], ht)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_forward_contract_and_carried_state(cell):
    model = CharRNN(ModelSpec(vocab_size=11, cell=cell, hidden_size=8, num_layers=2, embedding_size=4)).eval()
    x = torch.randint(11, (10, 2))
    with torch.no_grad():
        logits, hidden = model(x)
        assert logits.shape == (10, 2, 11)
        # two halves with the state carried give the same logits as one call
        first, h = model(x[:6])
        second, _ = model(x[6:], h)
    torch.testing.assert_close(torch.cat([first, second]), logits)


def test_detached_state_stops_gradients_at_the_window_boundary():
    model = CharRNN(ModelSpec(vocab_size=5, hidden_size=6, num_layers=1, embedding_size=3))
    x = torch.randint(5, (4, 2))
    _, hidden = model(x)
    carried = detach_hidden(hidden)
    assert all(not h.requires_grad for h in carried)
    torch.testing.assert_close(carried[0], hidden[0])
    logits, _ = model(x, carried)
    logits.sum().backward()  # would fail ("backward through the graph a second time") without the detach
    logits2, _ = model(x, carried)
    logits2.sum().backward()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_single_step_equals_forward(cell):
    model = CharRNN(ModelSpec(vocab_size=9, cell=cell, hidden_size=8, num_layers=3, embedding_size=4)).eval()
    x = torch.randint(9, (6, 2))
    with torch.no_grad():
        expected, expected_hidden = model(x)
        hidden = None
        for t in range(6):
            logits, hidden = model.step(x[t], hidden)
            torch.testing.assert_close(logits, expected[t])
    for got, want in zip(hidden if cell == "lstm" else [hidden], expected_hidden if cell == "lstm" else [expected_hidden]):
        torch.testing.assert_close(got, want)
