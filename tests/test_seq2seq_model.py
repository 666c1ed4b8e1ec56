import pytest
import torch

from charlm.decode.search import BeamOptions, beam_search, generate, max_output_lengths
from charlm.modules.encoder import length_mask
from charlm.tasks.seq2seq.batch import pad_batch, teacher_forcing_pair
from charlm.tasks.seq2seq.metrics import exact_match
from charlm.tasks.seq2seq.model import Seq2Seq, Seq2SeqSpec, target_nll

PAD, START, END, FIRST = 0, 1, 2, 3  # reserved ids of these tests' vocabularies; characters from 3
ATTENTIONS = ["additive", "dot", "general", "none"]


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: with two OpenMP threads on two shared, busy cores, each op
    # waits for the other thread to be scheduled (measured 20-40x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(attention, cell="gru", layers=1, seed=0, vocab=9):
    torch.manual_seed(seed)
    return Seq2Seq(Seq2SeqSpec(vocab, vocab, cell=cell, hidden_size=8, num_layers=layers, embedding_size=6,
                               attention=attention)).eval()


SOURCES = [[3, 4, 5, 6], [7], [8, 3, 3, 4, 5, 6]]
TARGETS = [[4, 5], [6, 7, 8, 3], [3]]


def _batch(sources=SOURCES, targets=TARGETS):
    src, src_lengths = pad_batch([torch.tensor(s) for s in sources], PAD)
    tgt_in, tgt_out = teacher_forcing_pair([torch.tensor(t, dtype=torch.long) for t in targets], START, END, PAD)
    return src, src_lengths, tgt_in, tgt_out


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("cell, layers", [("lstm", 2), ("gru", 1), ("rnn", 2)])
def test_teacher_forcing_equals_stepping_the_decoder(attention, cell, layers):
    # Two code paths: one call over the target window (or the input-feeding loop)
    # against step() one character at a time, as decoding uses it.
    model = _model(attention, cell, layers)
    src, src_lengths, tgt_in, _ = _batch()
    with torch.no_grad():
        logits, weights = model.teacher_forced(src, src_lengths, tgt_in)
        assert logits.shape == (tgt_in.shape[0], 3, 9)
        memory, state = model.encode(src, src_lengths)
        for t in range(tgt_in.shape[0]):
            log_probs, state, step_weights = model.step(tgt_in[t], state, memory)
            torch.testing.assert_close(log_probs, torch.log_softmax(logits[t], -1))
            if weights is not None:
                torch.testing.assert_close(step_weights, weights[t])


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_batched_pairs_give_the_logits_of_each_pair_alone(attention):
    model = _model(attention, "lstm", 2)
    src, src_lengths, tgt_in, _ = _batch()
    with torch.no_grad():
        batched = model(src, src_lengths, tgt_in)
        for b, (source, target) in enumerate(zip(SOURCES, TARGETS)):  # the oracle: no padding anywhere
            alone = model(*_batch([source], [target])[:3])
            torch.testing.assert_close(alone[:, 0], batched[: len(target) + 1, b])


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_what_the_padding_holds_changes_nothing(attention):
    model = _model(attention, "gru", 1)
    src, src_lengths, tgt_in, tgt_out = _batch()
    with torch.no_grad():
        logits, weights = model.teacher_forced(src, src_lengths, tgt_in)
        loss, count = target_nll(logits, tgt_out, PAD)
        noisy_src, noisy_in = src.clone(), tgt_in.clone()
        noisy_src[src == PAD] = 7
        noisy_in[tgt_in == PAD] = 5
        noisy_logits, noisy_weights = model.teacher_forced(noisy_src, src_lengths, noisy_in)
        noisy_loss, _ = target_nll(noisy_logits, tgt_out, PAD)
    assert count == sum(len(t) + 1 for t in TARGETS)  # every target character and the end symbol
    torch.testing.assert_close(noisy_loss, loss)
    if weights is not None:
        real = tgt_out != PAD  # (T, B): target steps that exist (later ones read padding, and are ignored)
        torch.testing.assert_close(noisy_weights[real], weights[real])
        padding = ~length_mask(src_lengths, src.shape[0]).t()  # (B, S)
        assert (weights[:, padding] == 0).all()  # exactly zero, at every target step


def test_bridge_reads_each_layers_forward_end_and_backward_start():
    # The encoder's per-position outputs are an independent view of its final
    # states: forward after the last real character, backward after the first.
    model = _model("general", "lstm", 2)
    src, src_lengths, _, _ = _batch()
    with torch.no_grad():
        encoded = model.encoder(src, src_lengths)
        _, state = model.encode(src, src_lengths)
    half = model.spec.hidden_size // 2
    last = encoded.outputs[src_lengths - 1, torch.arange(len(SOURCES))]  # (B, H) top layer at each last position
    top_final = torch.cat((last[:, :half], encoded.outputs[0, :, half:]), dim=-1)  # (B, H)
    torch.testing.assert_close(state.hidden[0][-1], torch.tanh(model.bridge_h[-1](top_final)))


def test_beam_of_one_equals_greedy_with_the_model():
    model = _model("additive", "lstm", 2, seed=3)
    src, src_lengths, _, _ = _batch()
    max_lengths = max_output_lengths(src_lengths)
    with torch.no_grad():
        memory, state = model.encode(src, src_lengths)
        greedy = generate(model.step_function(memory), state, START, END, max_lengths)
        beam = beam_search(model.step_function(memory), state, START, END, max_lengths, BeamOptions(beam_size=1))
    for g, [b] in zip(greedy, beam):
        assert (b.tokens, b.ended) == (g.tokens, g.ended)
        assert b.score == pytest.approx(g.score, abs=1e-4)
        torch.testing.assert_close(b.extras, g.extras)  # the attention weights of each step


@pytest.mark.parametrize("attention", ["general", "none"])
def test_beam_scores_match_teacher_forced_rescoring(attention):
    # Beam search reorders states and asks K queries per source; rescoring each
    # output by teacher forcing, one pair at a time, is an independent path.
    model = _model(attention, "lstm", 1, seed=5)
    src, src_lengths, _, _ = _batch()
    with torch.no_grad():
        memory, state = model.encode(src, src_lengths)
        results = beam_search(model.step_function(memory), state, START, END, torch.tensor([6, 6, 6]),
                              BeamOptions(beam_size=3, n_best=3))
        for source, hypotheses in zip(SOURCES, results):
            for h in hypotheses:
                src1, len1, tgt_in, tgt_out = _batch([source], [h.tokens])
                if not h.ended:
                    tgt_in, tgt_out = tgt_in[:-1], tgt_out[:-1]  # no end symbol was written
                log_probs = torch.log_softmax(model(src1, len1, tgt_in), -1)  # (T, 1, V)
                # gathered, not target_nll: an untrained model may write the padding id
                rescored = log_probs.gather(2, tgt_out.unsqueeze(-1)).sum()
                assert h.score == pytest.approx(float(rescored), abs=1e-4)


def test_banned_ids_are_never_written():
    model = _model("dot", "gru", 1, seed=5)
    src, src_lengths, _, _ = _batch()
    with torch.no_grad():
        memory, state = model.encode(src, src_lengths)
        free = generate(model.step_function(memory), state, START, END, torch.tensor([12, 12, 12]))
        banned = generate(model.step_function(memory, banned_ids=(PAD, START)), state, START, END,
                          torch.tensor([12, 12, 12]))
        log_probs, _, _ = model.step_function(memory, banned_ids=(PAD, START))(torch.full((3,), START), state)
    assert any(PAD in h.tokens or START in h.tokens for h in free)  # an untrained model does write them
    assert not any(PAD in h.tokens or START in h.tokens for h in banned)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3))  # still a distribution


def _strings(count, generator, exclude=frozenset(), alphabet=6, shortest=3, longest=7):
    found = []
    while len(found) < count:
        length = int(torch.randint(shortest, longest + 1, (1,), generator=generator))
        string = tuple(torch.randint(FIRST, FIRST + alphabet, (length,), generator=generator).tolist())
        if string not in exclude and string not in found:
            found.append(string)
    return found


@pytest.mark.parametrize("task, attention", [("copy", "general"), ("reverse", "additive")])
def test_learns_copy_and_reverse_to_full_exact_match_on_held_out_strings(task, attention):
    transform = (lambda s: s) if task == "copy" else (lambda s: s[::-1])
    generator = torch.Generator().manual_seed(0)
    held_out = _strings(200, generator)
    torch.manual_seed(0)
    steps = 250
    model = Seq2Seq(Seq2SeqSpec(FIRST + 6, FIRST + 6, cell="gru", hidden_size=64, embedding_size=16,
                                attention=attention))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    for _ in range(steps):
        batch = _strings(64, generator, exclude=set(held_out))  # fresh strings, never a held-out one
        src, src_lengths, tgt_in, tgt_out = _batch(batch, [transform(s) for s in batch])
        total, count = target_nll(model(src, src_lengths, tgt_in), tgt_out, PAD)
        optimizer.zero_grad()
        (total / count).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    src, src_lengths = pad_batch([torch.tensor(s) for s in held_out], PAD)
    with torch.no_grad():
        memory, state = model.encode(src, src_lengths)
        outputs = generate(model.step_function(memory), state, START, END, max_output_lengths(src_lengths))
    as_text = lambda ids: "".join(chr(ord("a") + i - FIRST) for i in ids)
    hypotheses = [as_text(h.tokens) if h.ended else "<cut>" for h in outputs]
    assert exact_match(hypotheses, [[as_text(transform(s))] for s in held_out]) == 1.0
