"""Classification (`--task classify`): training examples/s of charlm's loop against a lean packed-sequence loop.

    python bench/classify_train.py [--out bench/results/classify_train.json] [--rounds 5] [--threads N]

charlm: the real loop (`charlm.engine.loop.train` over the classify task on
../shared/data/names/: deduplicated pairs, bucketed batches built per step,
the engine's step with AdamW, clipping and NaN checks), its examples/s as its
own progress reports measure them (evaluation is pushed past the bench).
Lean: the same model shape written out (nn.Embedding -> bidirectional
nn.GRU/LSTM over pack_padded_sequence -> the final states -> nn.Linear,
F.cross_entropy, clipping, fused AdamW) on the same batches made in advance,
and nothing else. The two alternate in rounds; the paired per-round ratio
is the figure (issue 13's target: >= 0.95).
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
from torch.nn.utils.rnn import pack_padded_sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit, interleaved, machine_facts, paired_ratio  # noqa: E402

from charlm.config import build_config  # noqa: E402
from charlm.engine.distributed import SINGLE  # noqa: E402
from charlm.engine.events import StepProgress  # noqa: E402
from charlm.engine.loop import train  # noqa: E402
from charlm.tasks.classify.task import ClassifyTask  # noqa: E402
from charlm.text.records import read_records  # noqa: E402

NAMES = REPO.parent / "shared" / "data" / "names"
LOG_EVERY = 20
REPORTS_PER_ROUND = 6
WARMUP_REPORTS = 2
CONFIGS = [("gru", 128, 64), ("gru", 128, 256), ("lstm", 256, 64)]  # cell, hidden per direction, batch


def config_for(cell: str, hidden: int, batch: int):
    return build_config({"task": "classify", "cell": cell, "hidden_size": hidden, "batch_size": batch,
                         "max_steps": 10**9, "time_budget": "none", "eval_every": 10**9, "log_every": LOG_EVERY,
                         "sample_length": 0, "device": "cpu", "precision": "fp32"})


class CharlmSide:
    def __init__(self, config):
        self.events = train(ClassifyTask(read_records(NAMES), config), Path(tempfile.mkdtemp()) / "run")
        self.batch_size = config.batch_size
        self.advance(WARMUP_REPORTS)  # warm-up: the first steps allocate and pick kernels

    def advance(self, reports: int = REPORTS_PER_ROUND) -> float:
        """Examples per second of `reports` x LOG_EVERY steps, timed here.

        Not the loop's own rates: its first report of a round would span the
        time the loop sat paused at a yield while the lean side ran.
        """
        start, done = time.perf_counter(), 0
        while done < reports:
            if isinstance(next(self.events), StepProgress):
                done += 1
        return reports * LOG_EVERY * self.batch_size / (time.perf_counter() - start)


class LeanModel(nn.Module):
    def __init__(self, vocab: int, classes: int, config):
        super().__init__()
        self.embedding = nn.Embedding(vocab, config.embedding_size)
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[config.cell]
        self.rnn = rnn(config.embedding_size, config.hidden_size, 1, bidirectional=True)
        self.head = nn.Linear(2 * config.hidden_size, classes)

    def forward(self, ids, lengths):
        packed = pack_padded_sequence(self.embedding(ids), lengths, enforce_sorted=False)  # (T, B, E) packed
        _, final = self.rnn(packed)  # (2, B, H), or (h, c)
        h = final[0] if isinstance(final, tuple) else final
        return self.head(torch.cat([h[0], h[1]], dim=-1))  # (B, C)


class LeanSide:
    """The same model shape and batches, and nothing else."""

    def __init__(self, config, rounds: int):
        task = ClassifyTask(read_records(NAMES), config)
        task.prepare(SINGLE, None)
        self.model = LeanModel(task.vocab.size, len(task.classes), config)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, fused=True)
        # The batches charlm's loop takes, in its order, epoch after epoch: every round both sides train on
        # the same batches (names of the same lengths), so the paired ratio compares like with like.
        self.batches, epoch = [], 0
        while len(self.batches) < (WARMUP_REPORTS + rounds * REPORTS_PER_ROUND) * LOG_EVERY:
            plan = task.epoch(epoch, SINGLE)
            self.batches += [plan.batch(i).tensors[:3] for i in range(len(plan))]
            epoch += 1
        self.batch_size, self.next = config.batch_size, 0
        self.advance(WARMUP_REPORTS)

    def advance(self, reports: int = REPORTS_PER_ROUND) -> float:
        start = time.perf_counter()
        for _ in range(reports * LOG_EVERY):
            ids, lengths, labels = self.batches[self.next]
            self.next += 1
            loss = F.cross_entropy(self.model(ids, lengths), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
        return reports * LOG_EVERY * self.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--configs", type=int, default=len(CONFIGS), help="how many of the configs to run")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"benchmark": "classify_train", "machine": machine_facts(), "data": str(NAMES), "unit": "examples/s",
               "training": []}
    for cell, hidden, batch in CONFIGS[:args.configs]:
        config = config_for(cell, hidden, batch)
        charlm, lean = CharlmSide(config), LeanSide(config, args.rounds)
        rates = interleaved({"charlm": charlm.advance, "lean": lean.advance}, args.rounds)
        entry = {"config": f"bidirectional {cell} 1x{hidden}, batch {batch}, fp32",
                 "examples_per_second": {k: round(v["median"]) for k, v in rates.items()},
                 "ratio_to_lean": paired_ratio(rates, "charlm", "lean"), "rounds": rates}
        results["training"].append(entry)
        print(f"{entry['config']}: {entry['examples_per_second']} ratio {entry['ratio_to_lean']}", file=sys.stderr)
    emit(results, args.out)


if __name__ == "__main__":
    main()
