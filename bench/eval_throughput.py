"""Evaluation speed: characters/second of `charlm eval` on a 1 MB text, against training.

    python bench/eval_throughput.py [--out bench/results/eval.json]

Times charlm's evaluation (the default batched pass and the exact single
pass) on 1 MB of text and charlm's own training loop at the same config, in
one process, and reports the ratios and how far apart the passes' losses
are. Training and the batched pass are timed in fp32 and in bf16 (the
precision `auto` picks for the LSTM on a CPU with AMX), each against
the other in the same precision. The model is trained for a few hundred steps
first, so the hidden state carries real information and the batched pass's
burn-in is really tested.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, interleaved, machine_facts, paired_ratio  # noqa: E402
from train_throughput import CharlmSide, load_corpus  # noqa: E402

from charlm.runs import load_checkpoint  # noqa: E402
from charlm.tasks.lm.evaluate import evaluate_ids  # noqa: E402
from charlm.engine.loop import train  # noqa: E402
from charlm.tasks.lm.task import LanguageModelTask  # noqa: E402


def trained_model(corpus, config):
    """A model that has learnt something, so its hidden state carries real information."""
    run_dir = Path(tempfile.mkdtemp()) / "run"
    for _ in train(LanguageModelTask(corpus, config), run_dir):
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
    sides = {p: CharlmSide(corpus, "lstm", args.hidden_size, 2, 32, 128, p) for p in ("fp32", "bf16")}
    model = trained_model(corpus, sides["fp32"].config.replace(max_steps=args.train_steps,
                                                               eval_every=args.train_steps))
    ids = np.concatenate([corpus.ids, corpus.ids])[:1_000_000]  # 1 MB of text

    losses = {}

    def eval_rate(name, streams, amp_dtype=None):
        start = time.perf_counter()
        stats = evaluate_ids(model, ids, streams=streams, amp_dtype=amp_dtype)
        losses[name], losses["batched_streams"] = stats.nats_per_char, max(stats.streams, losses.get("batched_streams", 1))
        return stats.characters / (time.perf_counter() - start)

    rates = interleaved({"eval_batched_fp32": lambda: eval_rate("batched_fp32", None),
                         "eval_batched_bf16": lambda: eval_rate("batched_bf16", None, torch.bfloat16),
                         "eval_exact_fp32": lambda: eval_rate("exact_fp32", 1),
                         "train_fp32": lambda: sides["fp32"].advance(3),
                         "train_bf16": lambda: sides["bf16"].advance(3)}, args.rounds)
    medians = {k: round(v["median"]) for k, v in rates.items()}
    emit({"benchmark": "eval_throughput", "machine": machine_facts(),
          "config": {"cell": "lstm", "hidden_size": args.hidden_size, "num_layers": 2, "batch_size": 32,
                     "seq_len": 128, "text_chars": len(ids)},
          "chars_per_second": medians, "rounds": {k: v["rounds"] for k, v in rates.items()},
          "paired_ratio_eval_to_train_fp32": paired_ratio(rates, "eval_batched_fp32", "train_fp32"),
          "paired_ratio_eval_to_train_bf16": paired_ratio(rates, "eval_batched_bf16", "train_bf16"),
          "paired_ratio_exact_eval_to_train_fp32": paired_ratio(rates, "eval_exact_fp32", "train_fp32"),
          "nats_per_char": {k: round(v, 5) for k, v in losses.items() if k != "batched_streams"},
          "batched_minus_exact_fp32": round(losses["batched_fp32"] - losses["exact_fp32"], 5),
          "bf16_minus_fp32_batched": round(losses["batched_bf16"] - losses["batched_fp32"], 5),
          "batched_streams": losses["batched_streams"]}, args.out)


if __name__ == "__main__":
    main()
