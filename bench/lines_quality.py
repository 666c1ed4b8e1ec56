"""Records (`--task lines`): quality within a time budget, against makemore's figure and with/without classes.

    python bench/lines_quality.py makemore [--time-budget 5m] [--config configs/names.toml] [--out ...]
    python bench/lines_quality.py conditional [--time-budget 2m] [--out ...]

makemore: ../shared/data/makemore-names.txt with makemore's own split
(torch.manual_seed(3407), torch.randperm(len(words)), the last min(1000, 10%)
as the test set), `charlm train` on the training words for the budget (it
holds out 10% of them for its own validation and best checkpoint), then
`charlm eval` of the test words: mean nats per character with the end
symbol, makemore's measure. makemore's README reports about 1.92 for its
default transformer.

conditional: ../shared/data/names/ (18 languages) trained twice for the same
budget on the same split, per class and with --no-condition; validation
nats/char of each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit, machine_facts, val_loss_curve  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def makemore_split(path: Path, seed: int = 3407) -> tuple[list[str], list[str]]:
    """makemore's create_datasets(): non-empty stripped lines, a seeded permutation, the last 10% (<= 1000) as test."""
    words = [w.strip() for w in path.read_text().splitlines()]
    words = [w for w in words if w]
    torch.manual_seed(seed)
    test_size = min(1000, int(len(words) * 0.1))
    order = torch.randperm(len(words)).tolist()
    return [words[i] for i in order[:-test_size]], [words[i] for i in order[-test_size:]]


def charlm(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "charlm", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"charlm {args[0]} failed: {done.stderr.strip()}")
    return done


def run_makemore(args) -> dict:
    work = Path(tempfile.mkdtemp())
    train_words, test_words = makemore_split(DATA / "makemore-names.txt")
    (work / "train.txt").write_text("\n".join(train_words) + "\n")
    (work / "test.txt").write_text("\n".join(test_words) + "\n")
    run = work / "run"
    command = ["train", str(work / "train.txt"), "--task", "lines", "--config", args.config,
               "--time-budget", args.time_budget, "--out", str(run)]
    done = charlm(*command)
    scored = json.loads(charlm("eval", str(work / "test.txt"), "--checkpoint", str(run), "--json",
                               "--precision", "fp32").stdout)
    return {"experiment": "makemore", "command": "charlm " + " ".join(command),
            "split": "makemore's: torch.manual_seed(3407), randperm, last 1000 words as test",
            "train_words": len(train_words), "test_words": len(test_words),
            "test_nats_per_char": round(scored["nats_per_char"], 4), "makemore_transformer_reference": 1.92,
            "curve": val_loss_curve(run), "summary_line": done.stdout.strip().splitlines()[-1]}


def run_conditional(args) -> dict:
    work = Path(tempfile.mkdtemp())
    results = {}
    for name, extra in (("conditional", []), ("unconditional", ["--no-condition"])):
        run = work / name
        command = ["train", str(DATA / "names"), "--task", "lines", "--config", args.config,
                   "--time-budget", args.time_budget, "--out", str(run), *extra]
        done = charlm(*command)
        points = val_loss_curve(run)
        results[name] = {"command": "charlm " + " ".join(command),
                         "best_val_nats_per_char": min(p["val_loss"] for p in points), "curve": points,
                         "summary_line": done.stdout.strip().splitlines()[-1]}
    results["difference"] = round(results["unconditional"]["best_val_nats_per_char"]
                                  - results["conditional"]["best_val_nats_per_char"], 4)
    return {"experiment": "conditional", "data": str(DATA / "names"), **results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=("makemore", "conditional"))
    parser.add_argument("--time-budget", default="5m")
    parser.add_argument("--config", default=str(REPO / "configs" / "names.toml"))
    parser.add_argument("--out")
    args = parser.parse_args()
    result = run_makemore(args) if args.experiment == "makemore" else run_conditional(args)
    emit({"benchmark": "lines_quality", "machine": machine_facts(), **result}, args.out)


if __name__ == "__main__":
    main()
