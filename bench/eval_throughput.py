"""Evaluation speed: characters/second of `charlm eval` on a 1 MB text, against training.

    python bench/eval_throughput.py [--out bench/results/eval.json]

Times charlm's evaluation (the default batched pass and the exact single
pass) on 1 MB of text and charlm's own training loop at the same config, in
one process, and reports the ratios and how far apart the two passes' losses
are. The model is trained for a few hundred steps first, so the hidden state
carries real information and the batched pass's burn-in is really tested.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, interleaved, machine_facts, paired_ratio  # noqa: E402
from train_throughput import CharlmSide, load_corpus  # noqa: E402

from charlm.checkpoint import load_checkpoint  # noqa: E402
from charlm.evaluate import evaluate_ids  # noqa: E402
from charlm.train import train  # noqa: E402


def trained_model(corpus, config):
    """A model that has learnt something, so its hidden state carries real information."""
    run_dir = Path(tempfile.mkdtemp()) / "run"
    for _ in train(corpus, config, run_dir):
        pass
    return load_checkpoint(run_dir).model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--train-steps", type=int, default=300, help="steps of training before timing eval")
    args = parser.parse_args()
    corpus = load_corpus()
    side = CharlmSide(corpus, "lstm", args.hidden_size, 2, 32, 128)
    model = trained_model(corpus, side.config.replace(max_steps=args.train_steps, eval_every=args.train_steps))
    ids = np.concatenate([corpus.ids, corpus.ids])[:1_000_000]  # 1 MB of text

    losses = {}

    def eval_rate(streams):
        start = time.perf_counter()
        stats = evaluate_ids(model, ids, streams=streams)
        losses["exact" if streams == 1 else "batched"] = stats.nats_per_char
        losses["batched_streams"] = stats.streams if streams is None else losses.get("batched_streams")
        return stats.characters / (time.perf_counter() - start)

    rates = interleaved({"eval_batched": lambda: eval_rate(None), "eval_exact": lambda: eval_rate(1),
                         "train": lambda: side.advance(3)}, args.rounds)
    medians = {k: round(v["median"]) for k, v in rates.items()}
    emit({"benchmark": "eval_throughput", "machine": machine_facts(),
          "config": {"cell": "lstm", "hidden_size": args.hidden_size, "num_layers": 2, "batch_size": 32,
                     "seq_len": 128, "text_chars": len(ids)},
          "chars_per_second": medians, "rounds": {k: v["rounds"] for k, v in rates.items()},
          "ratio_eval_batched_to_train": round(medians["eval_batched"] / medians["train"], 2),
          "ratio_eval_exact_to_train": round(medians["eval_exact"] / medians["train"], 2),
          "paired_ratio_eval_batched_to_train": paired_ratio(rates, "eval_batched", "train"),
          "nats_per_char": {"batched": round(losses["batched"], 5), "exact": round(losses["exact"], 5),
                            "difference": round(losses["batched"] - losses["exact"], 5),
                            "batched_streams": losses["batched_streams"]}}, args.out)


if __name__ == "__main__":
    main()
