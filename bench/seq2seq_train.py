"""Pairs (`--task seq2seq`): training throughput against a lean teacher-forced loop, and decoding speed.

    python bench/seq2seq_train.py [--out bench/results/seq2seq_train.json] [--rounds 5] [--pairs 20000]
                                  [--train-seconds 180] [--decode-sources 512]

Training: target characters per second (each target's characters and its
end symbol, no padding) of charlm's real loop (`charlm.engine.loop.train`
over the seq2seq task: bucketed batches built per step, the engine's step
with clipping and fused AdamW) against a lean loop over the same model
(`Seq2Seq`, teacher-forced, F.cross_entropy ignoring padding, clipping,
fused AdamW) on the same padded batches made in advance. The two alternate
in rounds; the paired per-round ratio is the figure (goal: >= 0.9).

Decoding: a model trained first for --train-seconds (so outputs have real
lengths and end by themselves) translates --decode-sources validation
sources: sentences per second of greedy decoding with 64 sources side by
side against one at a time (goal: >= 10x), and of beam search (beam 5) at 64
against greedy at 64 (its cost).

Data: the first --pairs pairs of ../shared/data/eng-fra.txt.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit, interleaved, machine_facts, paired_ratio  # noqa: E402

from charlm.config import build_config  # noqa: E402
from charlm.decode.search import BeamOptions  # noqa: E402
from charlm.engine.distributed import SINGLE  # noqa: E402
from charlm.engine.events import StepProgress  # noqa: E402
from charlm.engine.loop import train  # noqa: E402
from charlm.runs import load_checkpoint  # noqa: E402
from charlm.tasks.seq2seq.data import PAD, PairEpoch  # noqa: E402
from charlm.tasks.seq2seq.decode import Decoding, translate  # noqa: E402
from charlm.tasks.seq2seq.task import Seq2SeqTask  # noqa: E402
from charlm.text.pairs import read_pairs  # noqa: E402

ENG_FRA = REPO.parent / "shared" / "data" / "eng-fra.txt"
REPORTS_PER_ROUND = 3
LOG_EVERY = 10


def first_pairs(count: int) -> Path:
    lines = ENG_FRA.read_text(encoding="utf-8").splitlines()[:count]
    path = Path(tempfile.mkdtemp()) / f"eng-fra-{count}.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def config_for(attention: str, **changes):
    return build_config({"task": "seq2seq", "attention": attention, "max_steps": 10**9, "time_budget": "none",
                         "eval_every": 10**9, "log_every": LOG_EVERY, "sample_length": 0, "device": "cpu"}, changes)


class CharlmSide:
    def __init__(self, path: Path, config):
        self.events = train(Seq2SeqTask(read_pairs(path), config), Path(tempfile.mkdtemp()) / "run")
        self.advance(1)

    def advance(self, reports: int = REPORTS_PER_ROUND) -> float:
        """Target characters per second over `reports` progress reports, as the loop measures them.

        The first report after the loop resumes is dropped: the loop is a generator, and that report's
        interval also spans the time it sat suspended while the other side ran.
        """
        rates = []
        while len(rates) < reports + 1:
            event = next(self.events)
            if isinstance(event, StepProgress):
                rates.append(event.tokens_per_second)
        return float(np.mean(rates[1:]))


class LeanSide:
    """The same model and batches; a plain teacher-forced loop and nothing else."""

    def __init__(self, path: Path, config):
        task = Seq2SeqTask(read_pairs(path), config)
        task.prepare(SINGLE, None)
        torch.manual_seed(0)
        self.model = task.build_model()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, fused=True)
        epoch = PairEpoch(task.train, config.batch_size, 0, 1, 0, 0)
        self.batches = [(epoch.batch(i).tensors, epoch.batch(i).units) for i in range(len(epoch))]
        self.next = 0
        self.advance(1)

    def step(self, src, src_lengths, tgt_in, tgt_out) -> None:
        logits = self.model(src, src_lengths, tgt_in)  # (T, B, V)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()

    def advance(self, reports: int = REPORTS_PER_ROUND) -> float:
        chars, start = 0, time.perf_counter()
        for _ in range(reports * LOG_EVERY):
            tensors, units = self.batches[self.next % len(self.batches)]
            self.next += 1
            self.step(*tensors)
            chars += units
        return chars / (time.perf_counter() - start)


def training_rates(path: Path, rounds: int) -> list[dict]:
    results = []
    for attention, cell in [("additive", "lstm"), ("none", "lstm"), ("dot", "gru")]:
        config = config_for(attention, cell=cell)
        charlm, lean = CharlmSide(path, config), LeanSide(path, config)
        rates = interleaved({"charlm": charlm.advance, "lean": lean.advance}, rounds)
        entry = {"config": f"{cell} 1x256, {attention} attention, batch {config.batch_size} pairs, fp32",
                 "target_chars_per_second": {k: round(v["median"]) for k, v in rates.items()},
                 "ratio_to_lean": paired_ratio(rates, "charlm", "lean"), "rounds": rates}
        results.append(entry)
        print(f"{entry['config']}: {entry['target_chars_per_second']} ratio {entry['ratio_to_lean']}",
              file=sys.stderr)
    return results


def decoding_rates(path: Path, train_seconds: float, sources: int, rounds: int) -> dict:
    run = Path(tempfile.mkdtemp()) / "run"
    config = build_config({"task": "seq2seq", "time_budget": f"{train_seconds}s", "sample_length": 0,
                           "device": "cpu", "eval_every": 10**9})
    task = Seq2SeqTask(read_pairs(path), config)
    for _ in train(task, run):
        pass
    loaded = load_checkpoint(run, kind="last")
    texts = [source for source, _ in task.references][:sources]
    model, vocabs = loaded.model, loaded.vocab
    beam = Decoding(beam=BeamOptions(beam_size=5))

    def rate(decoding: Decoding, batch_size: int, count: int):
        def run_once() -> float:
            start = time.perf_counter()
            translate(model, vocabs, texts[:count], decoding, batch_size=batch_size)
            return count / (time.perf_counter() - start)
        return run_once

    one_at_a_time = max(16, sources // 8)  # fewer sources at batch 1: the same sentences, a shorter wait
    rates = interleaved({"greedy_batch_64": rate(Decoding(), 64, sources),
                         "greedy_batch_1": rate(Decoding(), 1, one_at_a_time),
                         "beam_5_batch_64": rate(beam, 64, sources)}, rounds)
    outputs = translate(model, vocabs, texts, Decoding())
    return {"model": f"charlm's default seq2seq trained {train_seconds:g} s on {path.name}",
            "sources": len(texts), "mean_output_chars": round(float(np.mean([len(t.text) for t in outputs])), 1),
            "sentences_per_second": {k: round(v["median"], 1) for k, v in rates.items()},
            "greedy_speedup_64_over_1": paired_ratio(rates, "greedy_batch_64", "greedy_batch_1"),
            "beam_5_cost_relative_to_greedy": paired_ratio(rates, "greedy_batch_64", "beam_5_batch_64"),
            "rounds": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--train-seconds", type=float, default=180)
    parser.add_argument("--decode-sources", type=int, default=512)
    parser.add_argument("--skip-training", action="store_true", help="decoding only")
    parser.add_argument("--out")
    args = parser.parse_args()
    path = first_pairs(args.pairs)
    results = {"benchmark": "seq2seq_train", "machine": machine_facts(), "data": f"first {args.pairs} pairs of "
               f"{ENG_FRA}"}
    if not args.skip_training:
        results["training"] = training_rates(path, args.rounds)
    results["decoding"] = decoding_rates(path, args.train_seconds, args.decode_sources, args.rounds)
    emit(results, args.out)


if __name__ == "__main__":
    main()
