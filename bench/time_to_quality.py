"""Time to quality: validation loss against wall-clock seconds of `charlm train`.

    python bench/time_to_quality.py --config configs/shakespeare.toml [--time-budget 5m] [--precision fp32]
                                    [--dynamic] [--out curve.json] [-- TRAIN FLAGS...]

Runs the real command on ../shared/corpora/tinyshakespeare.txt (or --corpus)
with a shipped preset, the documented contiguous 90/10 split (validation text
is never trained on), and writes the curve of validation loss (nats/char)
against elapsed training seconds, read from the run's metrics.jsonl.
With --dynamic it also scores the best checkpoint on the validation split
with `charlm eval --dynamic` (static and dynamic figures side by side, one
stream, fp32; the evaluation is not counted in the training time). Flags
after `--` go to `charlm train` as they are (`-- --weight-drop 0.25`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE, dynamic_figures, emit, machine_facts, val_loss_curve  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--time-budget", help="override the preset's budget, e.g. 5m")
    parser.add_argument("--precision", help="override the preset's precision: auto, fp32, bf16")
    parser.add_argument("--corpus", default=str(SHAKESPEARE))
    parser.add_argument("--dynamic", action="store_true",
                        help="also score the best checkpoint under dynamic evaluation (charlm eval --dynamic)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("train_flags", nargs=argparse.REMAINDER,
                        help="after --: more flags for charlm train, e.g. -- --weight-drop 0.25")
    args = parser.parse_args()
    extra = args.train_flags[1:] if args.train_flags[:1] == ["--"] else args.train_flags
    run_dir = Path(tempfile.mkdtemp()) / "run"
    command = [sys.executable, "-m", "charlm", "train", args.corpus, "--config", args.config,
               "--out", str(run_dir), "--sample-length", "0"]
    if args.time_budget:
        command += ["--time-budget", args.time_budget]
    if args.precision:
        command += ["--precision", args.precision]
    command += extra
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"charlm train failed: {done.stderr.strip()}")
    curve = val_loss_curve(run_dir)
    best = min(curve, key=lambda point: point["val_loss"])
    within = {f"best_val_within_{m}m": min((p["val_loss"] for p in curve if p["elapsed_seconds"] <= m * 60 + 1),
                                             default=None) for m in (5, 30)}
    dynamic = dynamic_figures(run_dir) if args.dynamic else None
    emit({"benchmark": "time_to_quality", "machine": machine_facts(), "command": " ".join(command[1:]),
          "corpus": args.corpus, "split": "contiguous 90/10 (last 10% validation)",
          "precision": _precision_used(done.stdout), "best": best, **within, "curve": curve,
          "summary_line": done.stdout.strip().splitlines()[-1],
          **({"validation_static_and_dynamic": dynamic} if dynamic else {})}, args.out)


def _precision_used(stdout: str) -> str | None:
    """The precision the run reports at start ("... on cpu in bf16; ...")."""
    for line in stdout.splitlines():
        if line.startswith("model ") and " in " in line:
            return line.split(" in ", 1)[1].split(";")[0].split(",")[0]
    return None


if __name__ == "__main__":
    main()
