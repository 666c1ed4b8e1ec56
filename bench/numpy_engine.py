"""Training speed of the numpy engine (charlm.numpy_rnn) against the torch engine, fp32, and where numpy's time goes.

    python bench/numpy_engine.py [--out bench/results/numpy_engine.json] [--rounds 3] [--threads 1] [--quick]

One training step each side: forward over a (128, 32) window, mean cross-entropy, backward
(BPTT through the window, the carried state detached), global-norm clipping and AdamW with
charlm's two parameter groups. The torch side is charlm's CharRNN with charlm's
make_optimizer (fused AdamW); the numpy side is NumpyCharRNN.train_step. Both carry their
hidden state from step to step and run on pre-made batches. They alternate in rounds in one
process; the result holds characters/second of both and their paired ratios.

Where the numpy time goes, measured once per config outside the timed rounds:
- phases: forward, loss, backward, clip + AdamW, timed around the functions of one step;
- matmuls: the same matrix products, shapes and order replayed alone on random arrays;
- dispatch floor: the whole step at hidden 8, batch 1 (same window, layers and vocabulary),
  where arithmetic is negligible and what is left is Python and numpy's per-call overhead.
  What the matmuls and the floor do not explain is elementwise arithmetic (gates, tanh, σ)
  and memory traffic.

--threads (default 1) sets torch's intra-op threads and OpenBLAS's (numpy's) threads alike,
before either library starts. On a shared 2-core machine single-threaded figures are the only
steady ones: with two threads per side, other people's processes stall the thread pools.
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="training steps per side per round")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenBLAS threads")
    parser.add_argument("--quick", action="store_true", help="lstm at hidden 128 only, two rounds")
    return parser.parse_args()


ARGS = _parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # OpenBLAS reads its thread count once, when numpy loads it
    os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.threads)

import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, interleaved, machine_facts, paired_ratio  # noqa: E402

from charlm.config import build_config  # noqa: E402
from charlm.engine.step import make_optimizer  # noqa: E402
from charlm.numpy_rnn import NumpyCharRNN  # noqa: E402
from charlm.numpy_rnn.cells import GATES  # noqa: E402
from charlm.numpy_rnn.network import backward, cross_entropy, forward  # noqa: E402
from charlm.numpy_rnn.optim import clip_grad_norm  # noqa: E402
from charlm.tasks.lm.model import CharRNN, ModelSpec, detach_hidden  # noqa: E402

SEQ_LEN, BATCH, LAYERS, EMBEDDING, VOCAB = 128, 32, 2, 64, 65  # 65: Tiny Shakespeare's characters
CLIP, WEIGHT_DECAY, LR = 1.0, 0.01, 2e-3


def make_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(VOCAB, size=(SEQ_LEN, BATCH)), rng.integers(VOCAB, size=(SEQ_LEN, BATCH))


class NumpySide:
    def __init__(self, spec: ModelSpec):
        self.model = NumpyCharRNN(spec, weight_decay=WEIGHT_DECAY, clip=CLIP)
        self.x, self.y = make_batch()
        self.state = None
        self.advance(1)

    def advance(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.state = self.model.train_step(self.x, self.y, self.state, LR).state
        return steps * SEQ_LEN * BATCH / (time.perf_counter() - start)


class TorchSide:
    def __init__(self, spec: ModelSpec):
        self.model = CharRNN(spec)
        self.params = list(self.model.parameters())
        config = build_config({"cell": spec.cell, "hidden_size": spec.hidden_size, "num_layers": LAYERS,
                               "embedding_size": EMBEDDING, "weight_decay": WEIGHT_DECAY, "lr": LR,
                               "device": "cpu"})
        self.optimizer = make_optimizer(self.model, config)
        x, y = make_batch()
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.hidden = None
        self.advance(1)

    def advance(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            logits, hidden = self.model(self.x, self.hidden)  # (T, B, V)
            loss = F.cross_entropy(logits.flatten(0, 1), self.y.flatten())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, CLIP)
            self.optimizer.step()
            self.hidden = detach_hidden(hidden)
        return steps * SEQ_LEN * BATCH / (time.perf_counter() - start)


# -- where the numpy time goes ---------------------------------------------------------------

def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def step_phases(model: NumpyCharRNN, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Seconds of each phase of one numpy training step (the best of three)."""
    cell, times = model.spec.cell, {"forward": [], "loss": [], "backward": [], "clip_and_adamw": []}
    for _ in range(3):
        t0 = time.perf_counter()
        logits, _, cache = forward(model.params, x, None, cell)
        t1 = time.perf_counter()
        _, d_logits = cross_entropy(logits, y)
        t2 = time.perf_counter()
        grads, _ = backward(model.params, cache, d_logits, cell)
        t3 = time.perf_counter()
        clip_grad_norm(grads, CLIP)
        model.optimizer.step(model.params, grads, LR)
        t4 = time.perf_counter()
        for name, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[name].append(seconds)
    return {name: min(values) for name, values in times.items()}


def matmul_replay(cell: str, hidden: int) -> float:
    """Seconds of the step's matrix products alone: the shapes, layouts and order of cells.py and network.py."""
    rng = np.random.default_rng(0)
    rows, gates = SEQ_LEN * BATCH, GATES[cell] * hidden

    def rand(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    sizes = [EMBEDDING] + [hidden] * (LAYERS - 1)  # each layer's input size
    xs = [rand(rows, size) for size in sizes]
    w_ih = [rand(gates, size) for size in sizes]
    w_hh, h, d_a = rand(gates, hidden), rand(BATCH, hidden), rand(rows, gates)
    top, head, d_logits = rand(rows, hidden), rand(VOCAB, hidden), rand(rows, VOCAB)

    def products():
        for layer in range(LAYERS):
            xs[layer] @ w_ih[layer].T  # input products for the window
            for _ in range(SEQ_LEN):
                h @ w_hh.T  # the recurrence
        top @ head.T  # the head
        d_logits.T @ top  # head gradients
        d_logits @ head
        for layer in reversed(range(LAYERS)):
            for t in range(SEQ_LEN):
                d_a[t * BATCH:(t + 1) * BATCH] @ w_hh  # dh_{t-1}
            d_a.T @ xs[layer]  # window_gradients: dW_ih, dW_hh, d_x
            d_a.T @ top
            d_a @ w_ih[layer]
    return best_of(products)


def dispatch_floor(cell: str) -> float:
    """Seconds of a whole step at hidden 8, batch 1: what the step costs when the arrays are tiny."""
    spec = SimpleNamespace(vocab_size=VOCAB, cell=cell, hidden_size=8, num_layers=LAYERS, embedding_size=8,
                           dropout=0.0)
    model = NumpyCharRNN(spec, clip=CLIP)
    x, y = make_batch()
    x, y = x[:, :1], y[:, :1]
    model.train_step(x, y, None, LR)
    return best_of(lambda: model.train_step(x, y, None, LR))


def where_time_goes(side: NumpySide) -> dict:
    cell, hidden = side.model.spec.cell, side.model.spec.hidden_size
    phases = step_phases(side.model, side.x, side.y)
    total = sum(phases.values())
    matmuls, floor = matmul_replay(cell, hidden), dispatch_floor(cell)
    return {"step_ms": round(total * 1e3, 1),
            "phases_ms": {name: round(seconds * 1e3, 1) for name, seconds in phases.items()},
            "share": {"matmuls": round(matmuls / total, 3), "python_and_dispatch_floor": round(floor / total, 3),
                      "elementwise_and_memory": round(max(total - matmuls - floor, 0.0) / total, 3)}}


def main() -> None:
    args = ARGS
    torch.set_num_threads(args.threads)
    configs = [("lstm", 128)] if args.quick else [(cell, hidden) for cell in ("rnn", "lstm", "gru")
                                                  for hidden in (128, 256)]
    rounds = 2 if args.quick else args.rounds
    results = []
    for cell, hidden in configs:
        spec = ModelSpec(vocab_size=VOCAB, cell=cell, hidden_size=hidden, num_layers=LAYERS,
                         embedding_size=EMBEDDING)
        numpy_side, torch_side = NumpySide(spec), TorchSide(spec)
        rates = interleaved({"numpy": lambda: numpy_side.advance(args.steps),
                             "torch": lambda: torch_side.advance(args.steps)}, rounds)
        ratio = paired_ratio(rates, "torch", "numpy")
        entry = {"config": {"cell": cell, "hidden_size": hidden, "num_layers": LAYERS, "batch_size": BATCH,
                            "seq_len": SEQ_LEN, "embedding_size": EMBEDDING, "vocab_size": VOCAB},
                 "chars_per_second": {k: round(v["median"]) for k, v in rates.items()},
                 "rounds": {k: v["rounds"] for k, v in rates.items()},
                 "paired_slowdown_numpy_vs_torch": ratio,
                 "target": 2.0 if cell == "rnn" else 3.0,
                 "numpy_time": where_time_goes(numpy_side)}
        results.append(entry)
        print(f"{cell} {hidden}: {entry['chars_per_second']} numpy takes {ratio['median']}x torch's time "
              f"({ratio['min']}-{ratio['max']}); numpy time {entry['numpy_time']['share']}",
              file=sys.stderr, flush=True)
    facts = dict(machine_facts(), numpy=np.__version__, openblas_threads=args.threads,
                 load_average=[round(v, 2) for v in os.getloadavg()])
    emit({"benchmark": "numpy_engine", "machine": facts, "steps_per_round": args.steps,
          "slowdown": "torch chars/s over numpy chars/s, per round, median (min-max); target <= 2 rnn, <= 3 lstm/gru",
          "numpy_time_share": "matmuls: the step's matrix products replayed alone (same shapes and order); "
                              "python_and_dispatch_floor: the whole step at hidden 8, batch 1; "
                              "elementwise_and_memory: the rest (gate nonlinearities, gate products, slice copies)",
          "results": results}, args.out)


if __name__ == "__main__":
    main()
