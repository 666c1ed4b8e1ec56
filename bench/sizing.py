"""Sizing: the model `charlm train FILE` picks from the corpus, against the fixed defaults, same minutes.

    python bench/sizing.py [--time-budget 3m] [--out bench/results/sizing.json]
    python bench/sizing.py --time-budget 10m --side fixed --out fixed.json     # the fixed runs alone, then
    python bench/sizing.py --time-budget 10m --side sized --fixed-from fixed.json --out sizing_10m.json

On three corpora of different sizes (makemore's names as plain text, Tiny
Shakespeare, the default Python corpus), runs the real command twice with the
same time budget, split and seed: once without a size, so charlm sizes the
model (charlm/tasks/lm/sizing.py), and once with the fixed defaults of before
(LSTM 256x2, dropout 0, given as flags), unless sizing chose exactly that. Reports the best validation loss
of each (nats/char, evaluations included in the budget), what was chosen and
why, and the wall-clock of each command (the sized run's probe comes before
its budget starts, so it is in the command's time, not the curve's).
--side runs one of the two alone (the fixed runs do not depend on the sizing
rule, so they can be run once and compared with each revision of it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHAKESPEARE, emit, machine_facts, val_loss_curve  # noqa: E402

CORPORA = {"makemore-names": REPO.parent / "shared" / "data" / "makemore-names.txt",
           "tinyshakespeare": SHAKESPEARE,
           "python-stdlib": None}  # None: charlm's default corpus (no path given)
FIXED = ["--hidden-size", "256", "--num-layers", "2", "--dropout", "0"]
FIXED_MODEL = "lstm 2x256, dropout 0.0"


def run(corpus: Path | None, extra: list[str], budget: str, eval_every: int | None) -> dict:
    run_dir = Path(tempfile.mkdtemp()) / "run"
    command = [sys.executable, "-m", "charlm", "train", *([str(corpus)] if corpus else []), "--out", str(run_dir),
               "--time-budget", budget, "--sample-length", "0", *extra]
    if eval_every:
        command += ["--eval-every", str(eval_every)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"charlm train failed: {done.stderr.strip()}")
    curve = val_loss_curve(run_dir)  # the last evaluation is at the run's last step
    config = json.loads((run_dir / "best.json").read_text())["config"]
    notes = [line for line in done.stderr.splitlines() if "sized" in line]
    model = f"{config['cell']} {config['num_layers']}x{config['hidden_size']}, dropout {config['dropout']}"
    if config.get("weight_drop") or config.get("locked_dropout"):
        model += f", weight drop {config['weight_drop']}, locked dropout {config['locked_dropout']}"
    return {"command": " ".join(command[3:]), "model": model, "best_val_loss": min(p["val_loss"] for p in curve),
            "steps": curve[-1]["step"], "wall_seconds": round(wall, 1), "sizing_note": notes[0] if notes else None,
            "curve": curve}


def fixed_runs_from(paths: list[str], budget: str, eval_every: int | None) -> dict[str, dict]:
    """Corpus -> its fixed-defaults run, from earlier outputs of this bench (a later file's run replaces an
    earlier one's). A sized run that chose the fixed model counts as one."""
    runs = {}
    for path in paths:
        earlier = json.loads(Path(path).read_text())
        if (earlier["time_budget"], earlier.get("eval_every")) != (budget, eval_every):
            sys.exit(f"{path} ran {earlier['time_budget']} each with --eval-every {earlier.get('eval_every')}, "
                     f"not {budget} with {eval_every}")
        for name, entry in earlier["results"].items():
            if isinstance(entry.get("fixed_defaults"), dict):
                runs[name] = entry["fixed_defaults"]
            elif entry.get("sized", {}).get("model") == FIXED_MODEL:
                runs[name] = entry["sized"]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-budget", default="3m", help="each run's budget (charlm's default: 3m)")
    parser.add_argument("--eval-every", type=int, help="both runs' evaluation cadence (default: charlm's)")
    parser.add_argument("--corpora", default=",".join(CORPORA), help="a comma-separated subset of " + ",".join(CORPORA))
    parser.add_argument("--side", choices=("both", "fixed", "sized"), default="both",
                        help="run both models per corpus, or one side alone")
    parser.add_argument("--fixed-from", action="append",
                        help="with --side sized: the fixed runs of an earlier --side fixed JSON (repeatable; a "
                             "later file's corpus replaces an earlier one's)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if args.fixed_from and args.side != "sized":
        parser.error("--fixed-from goes with --side sized")
    earlier = fixed_runs_from(args.fixed_from, args.time_budget, args.eval_every) if args.fixed_from else None
    missing = [name for name in args.corpora.split(",") if earlier is not None and name not in earlier]
    if missing:  # before any run, not after the first's minutes
        sys.exit(f"no fixed run of {', '.join(missing)} in {', '.join(args.fixed_from)}")
    results = {}
    for name in args.corpora.split(","):
        if args.side == "fixed":
            fixed = run(CORPORA[name], FIXED, args.time_budget, args.eval_every)
            results[name] = {"fixed_defaults": fixed}
            print(f"{name}: fixed {fixed['model']} {fixed['best_val_loss']:.4f}", file=sys.stderr)
            continue
        sized = run(CORPORA[name], [], args.time_budget, args.eval_every)
        if sized["model"] == FIXED_MODEL:
            # The same model, seed and data: the fixed run would repeat this one step for step.
            results[name] = {"sized": sized, "fixed_defaults": "the same model: the run above", "sized_minus_fixed": 0.0}
            print(f"{name}: sized {sized['model']} {sized['best_val_loss']:.4f} (the fixed defaults)", file=sys.stderr)
            continue
        if args.side == "sized" and earlier is None:
            results[name] = {"sized": sized}
            print(f"{name}: sized {sized['model']} {sized['best_val_loss']:.4f}", file=sys.stderr)
            continue
        fixed = earlier[name] if earlier is not None else run(CORPORA[name], FIXED, args.time_budget, args.eval_every)
        results[name] = {"fixed_defaults": fixed, "sized": sized,
                         "sized_minus_fixed": round(sized["best_val_loss"] - fixed["best_val_loss"], 4)}
        print(f"{name}: fixed {fixed['model']} {fixed['best_val_loss']:.4f}, sized {sized['model']} "
              f"{sized['best_val_loss']:.4f}", file=sys.stderr)
    emit({"benchmark": "sizing", "machine": machine_facts(), "time_budget": args.time_budget,
          "eval_every": args.eval_every,
          **({"fixed_runs_from": args.fixed_from} if earlier is not None else {}),
          "split": "charlm's default (contiguous, last 10% validation)", "results": results}, args.out)


if __name__ == "__main__":
    main()
