"""Sampling speed: charlm's streaming generate() against a plain per-step nn.LSTM loop.

    python bench/sampling.py [--out bench/results/sampling.json]

charlm's path is the real one: `generate()` with its per-step cell kernels and
sampler, each character written and flushed to a stream (os.devnull). The
reference is what a user would write: a `for` loop calling the same
`nn.LSTM` one step at a time, then softmax and torch.multinomial; it is timed
with oneDNN on (PyTorch's default) and off.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, interleaved, machine_facts, paired_ratio, rate  # noqa: E402

from charlm.tasks.lm.model import CharRNN, ModelSpec  # noqa: E402
from charlm.decode.sampling import SamplingOptions  # noqa: E402
from charlm.tasks.lm.generate import generate  # noqa: E402
from charlm.text.vocab import Vocab  # noqa: E402

VOCAB = Vocab(tuple(sorted(set("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))))


def charlm_rate(model: CharRNN, chars: int) -> float:
    generator = torch.Generator().manual_seed(0)
    with open(os.devnull, "w") as sink:
        def run() -> None:
            for char in generate(model, VOCAB, "\n", chars, SamplingOptions(), generator):
                sink.write(char)
                sink.flush()
        return rate(chars, run)


def plain_loop_rate(model: CharRNN, chars: int, onednn: bool) -> float:
    generator = torch.Generator().manual_seed(0)

    @torch.inference_mode()
    def run() -> None:
        x, hidden = torch.zeros(1, 1, dtype=torch.long), None
        for _ in range(chars):
            out, hidden = model.rnn(model.embedding(x), hidden)
            probs = torch.softmax(model.head(out[0]), dim=-1)
            x = torch.multinomial(probs, 1, generator=generator).view(1, 1)
            int(x)

    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = onednn
    try:
        return rate(chars, run)
    finally:
        torch.backends.mkldnn.enabled = previous


def matmuls_only_rate(model: CharRNN, chars: int) -> float:
    """Only the weight products one character needs (every layer's two, and the head), nothing else.

    An upper bound for any batch-1 sampler on this machine built on PyTorch's
    kernels: what is left between this and charlm's rate is the cells'
    pointwise math, the draw and the per-op dispatch.
    """
    weights = [w for layer in model.rnn.all_weights for w in layer[:2]] + [model.head.weight]
    vectors = [torch.zeros(1, w.shape[1]) for w in weights]

    @torch.inference_mode()
    def run() -> None:
        for _ in range(chars):
            for w, v in zip(weights, vectors):
                torch.mm(v, w.t())
    return rate(chars, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--chars", type=int, default=3000, help="characters per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = []
    for hidden_size in (256, 512):
        torch.manual_seed(0)
        model = CharRNN(ModelSpec(vocab_size=VOCAB.size, cell="lstm", hidden_size=hidden_size, num_layers=2,
                                  embedding_size=64)).eval()
        chars = args.chars if hidden_size <= 256 else args.chars // 3
        rates = interleaved({
            "charlm": lambda: charlm_rate(model, chars),
            "plain_loop_onednn_off": lambda: plain_loop_rate(model, chars, onednn=False),
            "plain_loop_onednn_on": lambda: plain_loop_rate(model, chars // 5, onednn=True),
            "matmuls_only_bound": lambda: matmuls_only_rate(model, chars),
        }, args.rounds)
        best_reference = max(rates["plain_loop_onednn_off"]["median"], rates["plain_loop_onednn_on"]["median"])
        results.append({
            "config": {"cell": "lstm", "hidden_size": hidden_size, "num_layers": 2, "embedding_size": 64,
                       "vocab_size": VOCAB.size, "batch_size": 1},
            "chars_per_second": {k: round(v["median"]) for k, v in rates.items()},
            "rounds": {k: v["rounds"] for k, v in rates.items()},
            "speedup_vs_plain_loop_onednn_off": round(rates["charlm"]["median"] / rates["plain_loop_onednn_off"]["median"], 2),
            "speedup_vs_best_plain_loop": round(rates["charlm"]["median"] / best_reference, 2),
            "paired_speedup_vs_plain_loop_onednn_off": paired_ratio(rates, "charlm", "plain_loop_onednn_off"),
            "paired_speedup_vs_plain_loop_onednn_on": paired_ratio(rates, "charlm", "plain_loop_onednn_on"),
            # bytes of weights that one step must read: what bounds batch-1 speed on a CPU
            "weight_megabytes_per_char": round(sum(p.numel() for n, p in model.named_parameters()
                                                   if not n.startswith("embedding")) * 4 / 1e6, 2),
        })
    emit({"benchmark": "sampling", "machine": machine_facts(), "results": results}, args.out)


if __name__ == "__main__":
    main()
