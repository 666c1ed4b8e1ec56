"""The task seq2seq: pair vocabularies, batches, padding, the split, training through the engine, decoding, scoring."""

import json
import os
import random

import numpy as np
import pytest
import torch

from charlm.config import build_config
from charlm.decode.search import BeamOptions
from charlm.engine.distributed import SINGLE
from charlm.engine.events import Evaluated
from charlm.engine.loop import train
from charlm.runs import load_checkpoint
from charlm.tasks.seq2seq import evaluate as evaluate_module
from charlm.tasks.seq2seq.data import END, PAD, START, EncodedPairs, PairEpoch, PairVocabs, pair_batch
from charlm.tasks.seq2seq.decode import Decoding, Translation, Candidate, split_unknown, stream_translation, translate
from charlm.tasks.seq2seq.evaluate import decode_references
from charlm.tasks.seq2seq.inference import evaluate_seq2seq
from charlm.tasks.seq2seq.task import Seq2SeqTask, decoded_subset
from charlm.text.pairs import Pair, read_pairs
from charlm.text.vocab import PairVocab, Vocab


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors on two shared, busy cores: a second thread only waits (measured 10x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(**changes):
    values = {"task": "seq2seq", "hidden_size": 32, "num_layers": 1, "embedding_size": 16, "batch_size": 16,
              "lr": 0.01, "warmup_steps": 5, "max_steps": 30, "time_budget": "none", "eval_every": 15,
              "log_every": 5, "sample_length": 1, "device": "cpu", "cell": "gru"}
    return build_config(values, changes)


def _strings(count, rng, alphabet="abcdef", shortest=3, longest=7, exclude=frozenset()):
    found = set()
    while len(found) < count:
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(shortest, longest)))
        if text not in exclude:
            found.add(text)
    return sorted(found)


def _pairs_file(tmp_path, lines, name="pairs.tsv"):
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def _reversal_file(tmp_path, count=600, seed=0, name="pairs.tsv", exclude=frozenset()):
    strings = _strings(count, random.Random(seed), exclude=exclude)
    return _pairs_file(tmp_path, [f"{s}\t{s[::-1]}" for s in strings], name), strings


def test_pair_vocabulary_reserves_pad_start_end_and_round_trips_through_json():
    vocab = PairVocab.from_texts(["ba", "c."])
    assert (vocab.PAD, vocab.START, vocab.END) == (0, 1, 2) and vocab.chars == (".", "a", "b", "c")
    ids, _ = vocab.encode("abc.")
    assert ids.tolist() == [4, 5, 6, 3] and vocab.size == 7
    assert vocab.decode([START, 4, PAD, 5, END, 6]) == "ab"  # up to the end symbol; reserved ids are not text
    assert Vocab.from_json(json.loads(json.dumps(vocab.to_json()))) == vocab
    with pytest.raises(ValueError, match="reserves"):
        Vocab.from_json({"chars": ["a"], "reserved": ["<pad>", "<end>"]})


def test_batches_read_start_then_target_and_expect_target_then_end():
    vocabs = PairVocabs.from_pairs([Pair("ab", "xyz"), Pair("c", "y")])
    pairs = EncodedPairs.encode([Pair("ab", "xyz"), Pair("c", "y")], vocabs)
    src, src_lengths, tgt_in, tgt_out = pair_batch(pairs, np.array([0, 1]))
    a, b, c = (vocabs.source.encode(ch)[0].item() for ch in "abc")
    x, y, z = (vocabs.target.encode(ch)[0].item() for ch in "xyz")
    assert src.T.tolist() == [[a, b], [c, PAD]] and src_lengths.tolist() == [2, 1]  # (B, S)
    assert tgt_in.T.tolist() == [[START, x, y, z], [START, y, PAD, PAD]]
    assert tgt_out.T.tolist() == [[x, y, z, END], [y, END, PAD, PAD]]
    assert pairs.targets == 4 + 2  # characters and one end symbol each


def test_padding_never_reaches_the_loss_or_the_gradients(tmp_path):
    path, _ = _reversal_file(tmp_path, 200)
    task = Seq2SeqTask(read_pairs(path), _config(attention="additive"))
    task.prepare(SINGLE, None)
    torch.manual_seed(0)
    model = task.build_model()
    rows = np.arange(16)
    assert len(set(task.train.source.lengths[rows].tolist())) > 1  # the batch really has padding
    losses, grads = [], []
    for pad_id in (PAD, task.vocabs.source.size - 1, START):
        batch = type("B", (), {"tensors": pair_batch(task.train, rows, pad_id=pad_id)})
        model.zero_grad()
        loss, _ = task.loss(model, batch, None, torch.device("cpu"))
        loss.backward()
        losses.append(loss.item())
        grads.append([p.grad.clone() for p in model.parameters()])
    assert losses[0] == losses[1] == losses[2]
    for other in grads[1:]:
        assert all(torch.equal(g, h) for g, h in zip(grads[0], other))


def test_batches_group_similar_source_lengths_and_an_epoch_plan_is_rebuilt_exactly():
    rng = random.Random(1)
    pairs = [Pair("x" * rng.randint(1, 40), "y" * rng.randint(1, 40)) for _ in range(2000)]
    encoded = EncodedPairs.encode(pairs, PairVocabs.from_pairs(pairs))
    epoch = PairEpoch(encoded, batch_size=10, world_rank=0, world_size=1, seed=3, epoch=2)
    spreads = [np.ptp(encoded.source.lengths[rows]) for rows in epoch.batches]
    assert np.mean(spreads) < 3  # vs ~30 for random batches of these lengths
    assert np.array_equal(epoch.batches, PairEpoch(encoded, 10, 0, 1, 3, 2).batches)
    assert not np.array_equal(epoch.batches, PairEpoch(encoded, 10, 0, 1, 3, 3).batches)
    # two ranks of 5 read the two halves of the same global batches
    halves = [PairEpoch(encoded, 5, rank, 2, 3, 2).batch(7) for rank in (0, 1)]
    whole = epoch.batch(7)
    assert torch.equal(torch.cat([h.tensors[1] for h in halves]), whole.tensors[1])
    assert halves[0].units == halves[1].units == whole.units == whole.normaliser


def test_the_split_keeps_every_translation_of_a_source_on_one_side(tmp_path):
    lines = [f"s{i}\tt{i}-{k}" for i in range(60) for k in range(1 + i % 3)] + ["\t".join(["s0", "extra", "x"])]
    task = Seq2SeqTask(read_pairs(_pairs_file(tmp_path, lines)), _config(batch_size=4, val_frac=0.2))
    task.prepare(SINGLE, None)
    val_sources = {source for source, _ in task.references}
    assert task.split_counts["val_sources"] == len(val_sources) == 12
    train_sources = {task.data.pairs[i].source for i in range(len(task.data.pairs))} - val_sources
    assert task.split_counts["train_sources"] == len(train_sources)
    for source, targets in task.references:  # all of its targets, in file order
        i = int(source[1:])
        assert targets == [f"t{i}-{k}" for k in range(1 + i % 3)] + (["extra"] if i == 0 else [])
    assert "1 lines had more than two columns; the extra ones are ignored" in task.data_summary()


def test_outputs_are_scored_against_every_target_of_their_source(monkeypatch):
    # The decoder is replaced by one that writes each source's *last* target: scored against
    # all targets it is an exact match everywhere; against the first target alone, nowhere.
    references = [("a", ["x", "y"]), ("b", ["u", "v", "w"]), ("c", ["z"])]
    written = {"a": "y", "b": "w", "c": "z"}
    monkeypatch.setattr(evaluate_module, "translate", lambda model, vocabs, sources, decoding: [
        Translation(s, [Candidate(written[s], 0.0, 0.0, True)]) for s in sources])
    scores, _ = decode_references(None, None, references, Decoding())
    assert scores["exact_match"] == 1.0 and scores["chrf"] == pytest.approx(100.0)
    first_only, _ = decode_references(None, None, [(s, t[:1]) for s, t in references], Decoding())
    assert first_only["exact_match"] == pytest.approx(1 / 3)


def test_a_streamed_translation_equals_the_batched_greedy_one():
    # Batch 1, unpadded, one character at a time against padded batches of different lengths.
    pairs = [Pair(s, s[::-1]) for s in _strings(40, random.Random(2), longest=12)]
    vocabs = PairVocabs.from_pairs(pairs)
    torch.manual_seed(4)
    task = Seq2SeqTask(None, _config(attention="general", cell="lstm"))
    task.vocabs = vocabs
    model = task.build_model()
    sources = [p.source for p in pairs]
    batched = translate(model, vocabs, sources + [""])
    assert [t.source for t in batched] == sources + [""] and batched[-1].text == ""
    for source, translation in zip(sources[:12], batched):
        assert "".join(stream_translation(model, vocabs, source)) == translation.text
    beam_one = translate(model, vocabs, sources, Decoding(beam=BeamOptions(beam_size=1)))
    assert [t.text for t in beam_one] == [t.text for t in batched[:-1]]
    n_best = translate(model, vocabs, sources[:5], Decoding(beam=BeamOptions(beam_size=4, n_best=3)))
    for translation in n_best:
        scores = [c.normalized_score for c in translation.candidates]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert translation.candidates[0].attention.shape[1] == len(translation.source)


def test_unknown_source_characters_are_found_and_left_out():
    vocabs = PairVocabs(PairVocab(tuple("abc")), PairVocab(tuple("xyz")))
    assert split_unknown(["abzc", "a€"], vocabs) == (["abc", "a"], ["z", "€"])


def test_decoded_subset_spreads_over_the_list():
    assert decoded_subset(list(range(10)), 4) == [1, 3, 6, 8]  # the middles of 0-2.5, 2.5-5, 5-7.5, 7.5-10
    assert decoded_subset([1, 2], 5) == [1, 2]


def test_a_run_trains_and_eval_rebuilds_its_validation_figures(tmp_path):
    path, _ = _reversal_file(tmp_path, 400)
    run = tmp_path / "run"
    events = list(train(Seq2SeqTask(read_pairs(path), _config(max_steps=60, eval_every=30)), run))
    evals = [e for e in events if isinstance(e, Evaluated)]
    assert evals[-1].metrics["val_loss"] < evals[0].metrics["val_loss"] < 3.0
    assert set(evals[0].metrics) == {"val_loss", "val_bits_per_char", "val_chrf", "val_exact_match", "val_bleu"}
    assert " -> " in evals[0].preview and "(reference: " in evals[0].preview
    loaded = load_checkpoint(run)
    assert loaded.task == "seq2seq" and isinstance(loaded.vocab, PairVocabs)
    stats, translations = evaluate_seq2seq(loaded)
    best = max(evals, key=lambda e: e.metrics["val_chrf"]).metrics  # the best checkpoint is picked by chrF
    assert stats.nats_per_char == pytest.approx(best["val_loss"], abs=1e-6)
    assert stats.chrf == pytest.approx(best["val_chrf"]) and stats.sources == 40 == len(translations)


@pytest.mark.slow
@pytest.mark.parametrize("attention, transform", [("general", "copy"), ("additive", "reverse")])
def test_copy_and_reverse_are_learned_to_full_exact_match_on_held_out_strings(tmp_path, attention, transform):
    flip = (lambda s: s) if transform == "copy" else (lambda s: s[::-1])
    rng = random.Random(0)
    held_out = _strings(200, rng)
    training = _strings(6000, rng, exclude=set(held_out))
    path = _pairs_file(tmp_path, [f"{s}\t{flip(s)}" for s in training])
    test_path = _pairs_file(tmp_path, [f"{s}\t{flip(s)}" for s in held_out], "held-out.tsv")
    config = _config(attention=attention, hidden_size=64, batch_size=64, max_steps=300, eval_every=300,
                     warmup_steps=20, val_frac=0.02, sample_length=0)
    list(train(Seq2SeqTask(read_pairs(path), config), tmp_path / "run"))
    stats, translations = evaluate_seq2seq(load_checkpoint(tmp_path / "run"), test_path)
    assert stats.sources == 200
    assert stats.exact_match == 1.0, [(t.source, t.text) for t in translations if t.text != flip(t.source)][:5]


MEASURE_STEP = """
import sys, torch
torch.set_num_threads(1)
from charlm.config import build_config
from charlm.engine.distributed import SINGLE
from charlm.tasks.seq2seq.task import Seq2SeqTask
from charlm.text.pairs import read_pairs

def status(key):  # kB in /proc/self/status
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024

task = Seq2SeqTask(read_pairs(sys.argv[1]), build_config({"task": "seq2seq", "cell": "gru", "hidden_size": 128,
                                                          "batch_size": 64, "attention": sys.argv[2]}))
task.prepare(SINGLE, None)
model, batch = task.build_model(), task.epoch(0, SINGLE).batch(0)
open("/proc/self/clear_refs", "w").write("5")  # the peak starts again from what is resident now
before = status("VmRSS:")
loss, _ = task.loss(model, batch, None, torch.device("cpu"))
loss.backward()
print(status("VmHWM:") - before, task.estimate_activation_bytes(SINGLE, 4))
"""


@pytest.mark.parametrize("attention", ["additive", "dot"])
def test_the_memory_estimate_of_a_batch_is_close_to_what_its_step_takes(tmp_path, attention):
    import subprocess

    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident memory")
    import sys

    rng = random.Random(0)  # 80 pairs of 90 characters each side: one batch of 64, all of the longest length
    path = _pairs_file(tmp_path, ["".join(rng.choice("abcdefgh") for _ in range(90)) + "\t"
                                  + "".join(rng.choice("stuvwxyz") for _ in range(90)) for _ in range(80)])
    done = subprocess.run([sys.executable, "-c", MEASURE_STEP, str(path), attention], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    measured, estimated = map(int, done.stdout.split())
    assert 0.75 < measured / estimated < 1.3, (measured, estimated)


def test_select_by_picks_chrf_by_default_or_the_loss_and_is_checked_per_task():
    from charlm.errors import ConfigError

    assert _config().select_by == "chrf" and Seq2SeqTask(None, _config()).main_metric == "val_chrf"
    by_loss = Seq2SeqTask(None, _config(select_by="loss"))
    assert (by_loss.main_metric, by_loss.higher_is_better) == ("val_loss", False)
    with pytest.raises(ConfigError, match="select_by .--select-by. accuracy does not apply to --task seq2seq; "
                                          "use loss or chrf"):
        _config(select_by="accuracy")
    with pytest.raises(ConfigError, match="does not apply to --task classify"):
        build_config({"task": "classify", "select_by": "chrf"})
