"""Records (`--task lines`): training throughput against a lean padded loop, and batched generation.

    python bench/lines_throughput.py [--out bench/results/lines_throughput.json] [--rounds 5]

Training: charlm's real loop (`charlm.engine.loop.train` over the lines
task: bucketed batches built per step, the per-class start state, the
engine's step) against a lean loop over the same model shape (nn.Embedding
-> nn.LSTM -> nn.Linear, F.cross_entropy with ignore_index, clipping, fused
AdamW) on the same padded batches made in advance. Characters are counted
without padding (each record's characters and its end symbol). The two
alternate in rounds; the paired per-round ratio is the figure.

Generation: characters per second of `generate_records` for N = 64 records
side by side against N = 1 (LSTM 256 x 2), each record ending at its end
symbol or 64 characters.

Data: ../shared/data/makemore-names.txt (32k names), or synthetic names.
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
from charlm.decode.sampling import SamplingOptions  # noqa: E402
from charlm.engine.events import StepProgress  # noqa: E402
from charlm.engine.loop import train  # noqa: E402
from charlm.tasks.lines.data import RecordEpoch, pad_batch  # noqa: E402
from charlm.tasks.lines.generate import generate_records  # noqa: E402
from charlm.tasks.lines.model import RecordModelSpec, RecordRNN  # noqa: E402
from charlm.tasks.lines.task import RecordsTask  # noqa: E402
from charlm.engine.distributed import SINGLE  # noqa: E402
from charlm.text.records import read_records  # noqa: E402
from charlm.text.vocab import RecordVocab  # noqa: E402

NAMES = REPO.parent / "shared" / "data" / "makemore-names.txt"
REPORTS_PER_ROUND = 3
LOG_EVERY = 20


def names_file() -> Path:
    if NAMES.is_file():
        return NAMES
    path = Path(tempfile.mkdtemp()) / "names.txt"
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    path.write_text("\n".join("".join(rng.choice(letters, rng.integers(3, 12))) for _ in range(32000)) + "\n")
    return path


def config_for(hidden: int, layers: int, batch: int, precision: str):
    return build_config({"task": "lines", "hidden_size": hidden, "num_layers": layers, "batch_size": batch,
                         "max_steps": 10**9, "time_budget": "none", "eval_every": 10**9, "log_every": LOG_EVERY,
                         "sample_length": 0, "device": "cpu", "precision": precision})


class CharlmSide:
    def __init__(self, path: Path, config):
        self.events = train(RecordsTask(read_records(path), config), Path(tempfile.mkdtemp()) / "run")
        self.advance(2)

    def advance(self, reports: int = REPORTS_PER_ROUND) -> float:
        """Characters (no padding) per second over `reports` progress reports, as the loop measures them.

        The first report after the generator resumes is dropped: its interval spans the time the
        generator sat suspended while the lean side ran.
        """
        rates, skipped = [], False
        while len(rates) < reports:
            event = next(self.events)
            if isinstance(event, StepProgress):
                if skipped:
                    rates.append(event.tokens_per_second)
                skipped = True
        return float(np.mean(rates))


class LeanSide:
    """The same model shape and batches, and nothing else."""

    def __init__(self, path: Path, config):
        task = RecordsTask(read_records(path), config)
        task.prepare(SINGLE, None)
        vocab = task.vocab.size
        self.amp = torch.bfloat16 if config.precision == "bf16" else None
        self.embedding = nn.Embedding(vocab, config.embedding_size)
        self.rnn = nn.LSTM(config.embedding_size, config.hidden_size, config.num_layers)
        self.head = nn.Linear(config.hidden_size, vocab)
        self.params = [*self.embedding.parameters(), *self.rnn.parameters(), *self.head.parameters()]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-3, fused=True)
        epoch = RecordEpoch(task.train, config.batch_size, 0, 1, 0, 0)
        self.batches = []
        for rows in epoch.batches:
            inputs, targets, _ = pad_batch(task.train, rows)
            self.batches.append((inputs, targets, int(task.train.lengths[rows].sum()) + len(rows)))
        self.vocab, self.next = vocab, 0
        self.advance(1)

    def step(self, inputs, targets) -> None:
        with torch.autocast("cpu", dtype=self.amp, enabled=self.amp is not None):
            out, _ = self.rnn(self.embedding(inputs))
            logits = self.head(out)  # (T, B, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()

    def advance(self, reports: int = REPORTS_PER_ROUND) -> float:
        chars, start = 0, time.perf_counter()
        for _ in range(reports * LOG_EVERY):
            inputs, targets, count = self.batches[self.next % len(self.batches)]
            self.next += 1
            self.step(inputs, targets)
            chars += count
        return chars / (time.perf_counter() - start)


def generation_rates(rounds: int) -> dict:
    torch.manual_seed(0)
    vocab = RecordVocab(tuple("abcdefghijklmnopqrstuvwxyz"))
    model = RecordRNN(RecordModelSpec(vocab_size=vocab.size, hidden_size=256, num_layers=2)).eval()
    generator = torch.Generator().manual_seed(0)

    def rate(count: int) -> float:
        chars, start = 0, time.perf_counter()
        while time.perf_counter() - start < 1.0:
            records = generate_records(model, vocab, count, SamplingOptions(), generator, max_length=64)
            chars += sum(len(r) + 1 for r in records)
        return chars / (time.perf_counter() - start)

    rates = interleaved({"batch_64": lambda: rate(64), "batch_1": lambda: rate(1)}, rounds)
    return {"chars_per_second": {k: round(v["median"]) for k, v in rates.items()},
            "speedup_64_over_1": paired_ratio(rates, "batch_64", "batch_1"), "rounds": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()
    path = names_file()
    results = {"benchmark": "lines_throughput", "machine": machine_facts(), "data": str(path), "training": []}
    for hidden, layers, batch, precision in [(256, 2, 64, "fp32"), (256, 2, 64, "bf16"), (512, 2, 128, "bf16")]:
        config = config_for(hidden, layers, batch, precision)
        charlm, lean = CharlmSide(path, config), LeanSide(path, config)
        rates = interleaved({"charlm": charlm.advance, "lean": lean.advance}, args.rounds)
        entry = {"config": f"lstm {hidden}x{layers}, batch {batch} records, {precision}",
                 "chars_per_second": {k: round(v["median"]) for k, v in rates.items()},
                 "ratio_to_lean": paired_ratio(rates, "charlm", "lean"), "rounds": rates}
        results["training"].append(entry)
        print(f"{entry['config']}: {entry['chars_per_second']} ratio {entry['ratio_to_lean']}", file=sys.stderr)
    results["generation"] = generation_rates(args.rounds)
    emit(results, args.out)


if __name__ == "__main__":
    main()
