"""Batched classifier inference speed: names per second of CharClassifier on real surnames.

    python bench/classify_inference.py [--out bench/results/classify_inference.json]

Data: the 20,074 surnames of ../shared/data/names/*.txt (read in place, not
copied), shuffled once. Model: a 1-layer bidirectional GRU of 128 per
direction, embedding 64, 18 classes, random weights (speed does not depend on
them), eval mode under torch.inference_mode. Two paths are timed, alternating
in rounds:

- model: logits and argmax from ready (T, B) id tensors and lengths;
- end_to_end: from Python strings: each batch's names encoded in one
  Vocab.encode call over the joined text, split and padded
  (torch.nn.utils.rnn.pad_sequence), then the model and argmax.

Each is timed with 1 and 2 torch threads, as wall-clock names/s and as names
per CPU-second of this process (time.process_time). On a machine shared with
other busy processes the wall-clock figure measures the neighbours as much as
charlm; with one thread, names per CPU-second is close to what an idle core
gives (with two, idle OpenMP threads spinning on each other inflate CPU time,
so it understates). The load average is recorded before and after.

Issue 13's target is >= 20,000 names/s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import statistics  # noqa: E402
import time  # noqa: E402

from common import REPO, emit, machine_facts  # noqa: E402

from charlm.tasks.classify.model import CharClassifier, ClassifierSpec  # noqa: E402
from charlm.text.vocab import Vocab  # noqa: E402

NAMES = REPO.parent / "shared" / "data" / "names"


def read_names() -> tuple[list[str], list[int]]:
    names, labels = [], []
    for label, path in enumerate(sorted(NAMES.glob("*.txt"))):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                names.append(line.strip())
                labels.append(label)
    return names, labels


def encode_batch(vocab: Vocab, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Names -> (T, B) ids padded with 0, lengths (B,): one encode call for the whole batch."""
    ids, _ = vocab.encode("".join(names))
    lengths = torch.tensor([len(name) for name in names])
    return pad_sequence(list(ids.split(lengths.tolist())), padding_value=0), lengths  # (T, B)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--batch-sizes", default="256,1024,4096")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    names, labels = read_names()
    random.Random(0).shuffle(names)
    vocab = Vocab.from_text("".join(names))
    torch.manual_seed(0)
    spec = ClassifierSpec(vocab_size=vocab.size, num_classes=max(labels) + 1, cell="gru", hidden_size=128,
                          num_layers=1, embedding_size=64, bidirectional=True)
    model = CharClassifier(spec).eval()

    load_before = os.getloadavg()
    results = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            batches = [names[i:i + batch_size] for i in range(0, len(names), batch_size)]
            ready = [encode_batch(vocab, batch) for batch in batches]

            @torch.inference_mode()
            def model_only() -> None:
                for x, lengths in ready:
                    model(x, lengths).argmax(-1)

            @torch.inference_mode()
            def end_to_end() -> None:
                for batch in batches:
                    model(*encode_batch(vocab, batch)).argmax(-1)

            model_only()  # warm-up: first calls allocate and pick kernels
            timings = {"model": [], "end_to_end": []}
            for _ in range(args.rounds):  # alternating, so a busy spell hits both alike
                for name, fn in (("model", model_only), ("end_to_end", end_to_end)):
                    wall, cpu = time.perf_counter(), time.process_time()
                    fn()
                    timings[name].append((len(names) / (time.perf_counter() - wall),
                                          len(names) / (time.process_time() - cpu)))
            results[f"threads_{threads}_batch_{batch_size}"] = {
                name: {"wall_names_per_s": round(statistics.median(w for w, _ in rounds)),
                       "names_per_cpu_s": round(statistics.median(c for _, c in rounds)),
                       "wall_rounds": [round(w) for w, _ in rounds]}
                for name, rounds in timings.items()}
    emit({"benchmark": "classify_inference", "unit": "names/s", "names": len(names),
          "mean_name_length": round(sum(map(len, names)) / len(names), 2), "spec": spec.to_dict(),
          "load_average_before": load_before,
          "load_average_after": os.getloadavg(), "machine": machine_facts(), "results": results}, args.out)


if __name__ == "__main__":
    main()
