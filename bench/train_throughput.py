"""Training throughput: charlm's real training loop against the leanest possible loop.

    python bench/train_throughput.py [--out bench/results/train.json] [--quick] [--regularised]

charlm's side is `charlm.engine.loop.train()` itself (data layout, model, loss,
backward, clipping, AdamW, schedule, progress accounting), timed between its
progress events. The lean side is nn.Embedding -> nn.LSTM/GRU/RNN ->
nn.Linear, F.cross_entropy, clip_grad_norm_ and Adam on pre-made tensors. The
two alternate in rounds in one process, and each config reports the median
characters/second of both, their ratio, and achieved GFLOP/s as a fraction of
this machine's fp32 matmul peak measured in the same run.

Both sides run in fp32, and (with --precision both, the default) also both
under bf16 autocast, so the bf16 speed-up that `--precision auto` relies on is
measured in the same run.

--regularised adds, per config, charlm with the AWD-LSTM regularisers on
(weight drop 0.25 on W_hh, locked dropout 0.1, in fp32) and reports its
paired ratio to charlm without them: what weight drop and locked dropout cost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE, emit, interleaved, machine_facts, matmul_peak_gflops, paired_ratio  # noqa: E402

from charlm.config import build_config  # noqa: E402
from charlm.text.corpus import read_corpus  # noqa: E402
from charlm.text.encoding import EncodedCorpus  # noqa: E402
from charlm.engine.events import StepProgress  # noqa: E402
from charlm.engine.loop import train  # noqa: E402
from charlm.tasks.lm.task import LanguageModelTask  # noqa: E402

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
EMBEDDING = 64


def forward_flops_per_char(cell: str, hidden: int, layers: int, vocab: int) -> int:
    """2·G·H·(I+H) per layer (input and recurrent matmuls) + 2·H·V for the head."""
    flops, inputs = 0, EMBEDDING
    for _ in range(layers):
        flops += 2 * GATES[cell] * hidden * (inputs + hidden)
        inputs = hidden
    return flops + 2 * hidden * vocab


def load_corpus() -> EncodedCorpus:
    if SHAKESPEARE.is_file():
        return read_corpus(SHAKESPEARE)
    path = Path(tempfile.mkdtemp()) / "synthetic.txt"
    generator = torch.Generator().manual_seed(0)
    letters = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,;:!?'\n-&$3"
    ids = torch.randint(len(letters), (1_100_000,), generator=generator).tolist()
    path.write_text("".join(letters[i] for i in ids))
    return read_corpus(path)


class CharlmSide:
    """charlm's training generator, advanced a few progress events at a time."""

    def __init__(self, corpus: EncodedCorpus, cell: str, hidden: int, layers: int, batch: int, seq: int,
                 precision: str = "fp32", **settings):
        self.config = build_config({"cell": cell, "hidden_size": hidden, "num_layers": layers,
                                    "embedding_size": EMBEDDING, "batch_size": batch, "seq_len": seq,
                                    "max_steps": 10**9, "time_budget": "none", "eval_every": 10**9,
                                    "log_every": 10, "sample_length": 0, "device": "cpu",
                                    "precision": precision, **settings})
        self.run_dir = Path(tempfile.mkdtemp()) / "run"
        self.events = train(LanguageModelTask(corpus, self.config), self.run_dir)
        self.chars_per_step = batch * seq
        self.advance(2)  # start-up and the first steps are not timed

    def advance(self, reports: int) -> float:
        """Run `reports` x log_every steps; return characters/second."""
        start, done = time.perf_counter(), 0
        while done < reports:
            if isinstance(next(self.events), StepProgress):
                done += 1
        return reports * self.config.log_every * self.chars_per_step / (time.perf_counter() - start)


class LeanSide:
    def __init__(self, vocab: int, cell: str, hidden: int, layers: int, batch: int, seq: int,
                 precision: str = "fp32"):
        self.amp_dtype = torch.bfloat16 if precision == "bf16" else None
        self.embedding = nn.Embedding(vocab, EMBEDDING)
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](EMBEDDING, hidden, layers)
        self.head = nn.Linear(hidden, vocab)
        self.params = [*self.embedding.parameters(), *self.rnn.parameters(), *self.head.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=1e-3)
        self.x = torch.randint(vocab, (seq, batch))
        self.y = torch.randint(vocab, (seq, batch))
        self.vocab, self.chars_per_step = vocab, batch * seq
        self.advance(2)

    def step(self) -> None:
        with torch.autocast("cpu", dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            out, _ = self.rnn(self.embedding(self.x))
            logits = self.head(out)
        loss = F.cross_entropy(logits.view(-1, self.vocab).float(), self.y.view(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()

    def advance(self, reports: int) -> float:
        start = time.perf_counter()
        for _ in range(reports * 10):
            self.step()
        return reports * 10 * self.chars_per_step / (time.perf_counter() - start)


AWD = {"weight_drop": 0.25, "locked_dropout": 0.1}
CONFIGS = [("lstm", 128, 2, 32), ("lstm", 256, 2, 16), ("lstm", 256, 2, 32), ("lstm", 256, 2, 64),
           ("lstm", 512, 2, 32), ("gru", 256, 2, 32), ("rnn", 256, 2, 32)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="two configs, two rounds")
    parser.add_argument("--precision", choices=("fp32", "bf16", "both"), default="both")
    parser.add_argument("--regularised", action="store_true",
                        help="also charlm with weight drop 0.25 and locked dropout 0.1 (fp32), as a ratio to without")
    args = parser.parse_args()
    if args.regularised and args.precision == "bf16":
        parser.error("--regularised is measured in fp32 against charlm in fp32: use --precision fp32 or both")
    precisions = ("fp32", "bf16") if args.precision == "both" else (args.precision,)
    configs = CONFIGS[2:3] + CONFIGS[4:5] if args.quick else CONFIGS
    rounds = 2 if args.quick else args.rounds
    corpus = load_corpus()
    vocab = corpus.vocab.size
    peak = matmul_peak_gflops()
    results = []
    for cell, hidden, layers, batch in configs:
        seq = 128
        reports = 3 if hidden <= 256 else 2
        candidates = {}
        for precision in precisions:
            charlm_side = CharlmSide(corpus, cell, hidden, layers, batch, seq, precision)
            lean_side = LeanSide(vocab, cell, hidden, layers, batch, seq, precision)
            candidates[f"charlm_{precision}"] = lambda side=charlm_side: side.advance(reports)
            candidates[f"lean_{precision}"] = lambda side=lean_side: side.advance(reports)
        if args.regularised:
            awd_side = CharlmSide(corpus, cell, hidden, layers, batch, seq, "fp32", **AWD)
            candidates["charlm_awd_fp32"] = lambda side=awd_side: side.advance(reports)
        rates = interleaved(candidates, rounds)
        train_flops = 3 * forward_flops_per_char(cell, hidden, layers, vocab)
        entry = {"config": {"cell": cell, "hidden_size": hidden, "num_layers": layers, "batch_size": batch,
                            "seq_len": seq, "embedding_size": EMBEDDING, "vocab_size": vocab},
                 "chars_per_second": {k: round(v["median"]) for k, v in rates.items()},
                 "rounds": {k: v["rounds"] for k, v in rates.items()}}
        for precision in precisions:
            entry[f"ratio_charlm_to_lean_{precision}"] = round(
                rates[f"charlm_{precision}"]["median"] / rates[f"lean_{precision}"]["median"], 3)
            entry[f"paired_ratio_charlm_to_lean_{precision}"] = paired_ratio(rates, f"charlm_{precision}",
                                                                              f"lean_{precision}")
        if args.regularised:
            entry["regularised"] = AWD
            entry["paired_ratio_awd_to_plain_fp32"] = paired_ratio(rates, "charlm_awd_fp32", "charlm_fp32")
        if len(precisions) == 2:
            entry["paired_speedup_charlm_bf16_over_fp32"] = paired_ratio(rates, "charlm_bf16", "charlm_fp32")
        entry["gflops"] = {k: round(v["median"] * train_flops / 1e9, 1) for k, v in rates.items()}
        entry["fraction_of_fp32_matmul_peak"] = {k: round(v / peak, 3) for k, v in entry["gflops"].items()}
        results.append(entry)
        print(f"{cell} {hidden}x{layers} batch {batch}: {entry['chars_per_second']} "
              + " ".join(f"{k}={v}" for k, v in entry.items() if k.startswith("paired")),
              file=sys.stderr, flush=True)
    emit({"benchmark": "train_throughput", "machine": machine_facts(), "matmul_peak_gflops": round(peak, 1),
          "results": results}, args.out)


if __name__ == "__main__":
    main()
