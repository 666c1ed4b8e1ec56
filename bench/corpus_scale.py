"""Corpora at scale: encoding speed, start-up time and memory on a synthetic 1 GB corpus.

    python bench/corpus_scale.py [--size-mb 1024] [--workdir DIR] [--out bench/results/corpus_scale.json]

Writes a synthetic UTF-8 corpus (ASCII-heavy, a few hundred distinct
characters) and, each in a fresh process so peak RSS is its own:

1. encodes it cold in character and in byte mode: MB/s and peak RSS against
   the size of the encoded array;
2. times `charlm train` from process start to its first optimiser step, cold
   (encoding included) and warm (cache present), next to PyTorch's own floor
   for the same start (import torch, build the same model and AdamW, one step:
   the first optimizer alone imports torch._dynamo, over a second here);
3. trains 200 steps on it and on a 1 MB corpus with the same settings and
   compares their peak RSS.

The child processes run charlm's own code path (the CLI's open_inputs and
train()). Needs about 4x --size-mb of free disk in --workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine_facts  # noqa: E402

# Run in a child: prepare (and optionally train) on a corpus, report timings and peak RSS as JSON.
CHILD = r"""
import json, os, resource, sys, time
launched = float(sys.argv[1])
mode, corpus, tokenizer, steps = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
from charlm.cli.inputs import open_inputs
from charlm.config import build_config
from charlm.engine.events import StepProgress
from charlm.engine.loop import train
from charlm.tasks.lm.task import LanguageModelTask
import tempfile
from pathlib import Path
imported = time.time()
start = time.perf_counter()
encoded = open_inputs([corpus], None, False, tokenizer, False)
prepared = time.perf_counter() - start
result = {"prepare_seconds": prepared, "tokens": len(encoded.ids), "dtype": str(encoded.ids.dtype),
          "encoded_bytes": int(encoded.ids.nbytes), "import_seconds": imported - launched}
if steps:
    config = build_config({"hidden_size": 128, "num_layers": 2, "batch_size": 32, "seq_len": 128,
                           "max_steps": steps, "time_budget": "none", "eval_every": 10**9, "log_every": 1,
                           "sample_length": 0, "device": "cpu", "val_frac": 0.0001, "tokenizer": tokenizer})
    for event in train(LanguageModelTask(encoded, config), Path(tempfile.mkdtemp()) / "run"):
        if isinstance(event, StepProgress) and event.step == 1:
            result["seconds_from_launch_to_first_step"] = time.time() - launched
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


# PyTorch's own floor for the same start: import, build the same model and AdamW, take one step.
BASELINE = r"""
import json, sys, time
launched = float(sys.argv[1])
import torch, torch.nn.functional as F
from torch import nn
emb, rnn, head = nn.Embedding(300, 64), nn.LSTM(64, 128, 2), nn.Linear(128, 300)
params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
opt = torch.optim.AdamW(params, lr=1e-3)
x, y = torch.randint(300, (128, 32)), torch.randint(300, (128, 32))
out, _ = rnn(emb(x))
F.cross_entropy(head(out).flatten(0, 1), y.flatten()).backward()
opt.step()
print(json.dumps({"seconds_from_launch_to_first_step": time.time() - launched}))
"""


def disk_write_mb_per_second(directory: Path, megabytes: int = 1024) -> float:
    """What this disk sustains for a large synced write: the floor under writing an encoded cache."""
    path, block = directory / "disk-probe.bin", os.urandom(16 << 20)
    start = time.perf_counter()
    with path.open("wb", buffering=0) as out:
        for _ in range(megabytes // 16):
            out.write(block)
        os.fsync(out.fileno())
    seconds = time.perf_counter() - start
    path.unlink()
    return megabytes * (1 << 20) / 1e6 / seconds


def baseline() -> float:
    done = subprocess.run([sys.executable, "-c", BASELINE, repr(time.time())], capture_output=True, text=True)
    return json.loads(done.stdout)["seconds_from_launch_to_first_step"]


def synthetic_corpus(path: Path, size_mb: int, seed: int = 0) -> None:
    """ASCII-heavy text with ~300 distinct characters: words, punctuation, some accented and CJK letters."""
    rng = np.random.default_rng(seed)
    ascii_chars = list("abcdefghijklmnopqrstuvwxyz" * 4 + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "     \n.,;:'\"!?()-0123456789")
    extra = [chr(c) for c in range(0xC0, 0x180)] + [chr(0x4E00 + i) for i in range(100)]  # 292 more
    block_chars = 4_000_000
    picks = rng.random(block_chars) < 0.98
    text = np.where(picks, rng.choice(ascii_chars, block_chars), rng.choice(extra, block_chars))
    block = "".join(text.tolist()).encode("utf-8")
    with path.open("wb") as out:
        written = 0
        while written < size_mb * 1_000_000:
            out.write(block)
            written += len(block)


def child(mode: str, corpus: Path, tokenizer: str, steps: int, cache: Path) -> dict:
    env = dict(os.environ, CHARLM_CACHE_DIR=str(cache))
    done = subprocess.run([sys.executable, "-c", CHILD, repr(time.time()), mode, str(corpus), tokenizer, str(steps)],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"child failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="charlm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    big, small, cache = work / "big.txt", work / "small.txt", work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    synthetic_corpus(big, args.size_mb)
    synthetic_corpus(small, 1)
    print(f"wrote {big.stat().st_size / 1e6:,.0f} MB in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    size_mb = big.stat().st_size / 1e6

    disk = disk_write_mb_per_second(work)
    encode = {}
    for tokenizer in ("chars", "bytes"):
        result = child("encode", big, tokenizer, 0, cache)
        result["mb_per_second"] = round(size_mb / result["prepare_seconds"], 1)
        encoded_mb = result["encoded_bytes"] / 1e6
        result["peak_rss_limit_mb"] = round(3 * encoded_mb + 200, 1)
        result["peak_rss_within_limit"] = result["peak_rss_mb"] <= result["peak_rss_limit_mb"]
        # the cache must reach the disk: writing it alone takes this long here
        result["disk_floor_seconds"] = round(encoded_mb / disk, 2)
        result["disk_floor_mb_per_second"] = round(size_mb / (encoded_mb / disk), 1)
        encode[tokenizer] = result
        print(f"encode {tokenizer}: {result}", file=sys.stderr)
    shutil.rmtree(cache, ignore_errors=True)  # small corpora are not cached at all
    cold = child("train", big, "chars", 1, cache)
    warm = child("train", big, "chars", 1, cache)
    floor = min(baseline() for _ in range(2))
    print(f"first step cold {cold} warm {warm}", file=sys.stderr)
    train_big = child("train", big, "chars", 200, cache)
    train_small = child("train", small, "chars", 200, cache)
    emit({"benchmark": "corpus_scale", "machine": machine_facts(), "corpus_mb": round(size_mb, 1),
          "disk_write_mb_per_second": round(disk, 1),
          "encode": encode,
          "first_step": {"cold_seconds": round(cold["seconds_from_launch_to_first_step"], 2),
                         "warm_seconds": round(warm["seconds_from_launch_to_first_step"], 2),
                         "warm_prepare_seconds": round(warm["prepare_seconds"], 3),
                         "warm_import_seconds": round(warm["import_seconds"], 2),
                         "pytorch_floor_seconds": round(floor, 2),
                         "warm_above_pytorch_floor_seconds": round(warm["seconds_from_launch_to_first_step"] - floor, 2)},
          "train_200_steps_peak_rss_mb": {"1GB": round(train_big["peak_rss_mb"]),
                                          "1MB": round(train_small["peak_rss_mb"]),
                                          "difference": round(train_big["peak_rss_mb"] - train_small["peak_rss_mb"])},
          }, args.out)
    shutil.rmtree(work, ignore_errors=True) if not args.workdir else None


if __name__ == "__main__":
    main()
