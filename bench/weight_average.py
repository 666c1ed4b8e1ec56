"""Weight averaging (`--ema-decay`): what the average gains over the weights it averages, in one run.

    python bench/weight_average.py --config configs/shakespeare.toml [--ema-decay 0.999]
                                   [--also 0.99:10,0.995:10] [--precision fp32] [--dynamic]
                                   [--out result.json]
                                   [-- TRAIN FLAGS...]

Runs `charlm train` in this process on ../shared/corpora/tinyshakespeare.txt
(or --corpus) with a preset and `--ema-decay`, the documented contiguous
90/10 split. Its evaluations score the average (the curve). Beside it, the
averages listed in --also ("decay:k", each updated after every step with the
rate 1 - min(decay, (1 + n) / (k + n)) after n updates; k = 10 is charlm's
warmup) follow the same weights. When the run ends, the live weights (from
the `last` checkpoint's state file), the run's own average and each other
average are scored on the validation split: the comparison is within one
run, so no run-to-run noise enters it. With --dynamic the best checkpoint
(the average) is also scored under dynamic evaluation, as time_to_quality.py
does.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE, dynamic_figures, emit, machine_facts, val_loss_curve  # noqa: E402

import charlm.engine.averaging as averaging  # noqa: E402
from charlm.engine.averaging import TRAINING_PREFIX, WeightAverage  # noqa: E402
from charlm.engine.checkpoint import read_tensors  # noqa: E402
from charlm.runs import load_checkpoint  # noqa: E402
from charlm.tasks.lm.evaluate import checkpoint_text_ids, evaluate_ids  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--corpus", default=str(SHAKESPEARE))
    parser.add_argument("--ema-decay", type=float, default=0.999, help="the run's own average")
    parser.add_argument("--also", default="0.99:10,0.995:10,0.999:20",
                        help="more averages beside it, as decay:k, comma-separated")
    parser.add_argument("--precision", help="passed to charlm train")
    parser.add_argument("--dynamic", action="store_true",
                        help="also score the best checkpoint under dynamic evaluation (charlm eval --dynamic)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("train_flags", nargs=argparse.REMAINDER, help="after --: more flags for charlm train")
    args = parser.parse_args()
    extra = args.train_flags[1:] if args.train_flags[:1] == ["--"] else args.train_flags
    others = [tuple(float(x) for x in item.split(":")) for item in args.also.split(",") if item]
    beside: dict[str, WeightAverage] = {}

    class WithOthers(WeightAverage):
        """The run's own average, and the others updated from the same weights after every step."""

        def __init__(self, model, decay):
            super().__init__(model, decay)
            for other_decay, k in others:
                beside[f"{other_decay:g}:{k:g}"] = WeightAverage(model, other_decay, warmup=k)

        def update(self, model):
            super().update(model)
            for average in beside.values():
                average.update(model)

    averaging.WeightAverage = WithOthers  # what start_average() builds
    from charlm.cli.app import app

    run_dir = Path(tempfile.mkdtemp()) / "run"
    command = ["train", args.corpus, "--config", args.config, "--out", str(run_dir), "--sample-length", "0",
               "--ema-decay", str(args.ema_decay), *(["--precision", args.precision] if args.precision else []),
               *extra]
    try:
        app(command, standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            sys.exit(f"charlm train failed (exit {exc.code})")
    record = json.loads((run_dir / "last.json").read_text())
    checkpoint = load_checkpoint(run_dir / "last.json", kind="last")
    ids, _ = checkpoint_text_ids(checkpoint, split="val")
    state = read_tensors(run_dir / record["state"])
    model = checkpoint.model

    def score(weights: dict) -> float:
        model.load_state_dict(weights)
        return round(evaluate_ids(model, ids).nats_per_char, 4)

    final = {"live": score({k[len(TRAINING_PREFIX):]: v for k, v in state.items() if k.startswith(TRAINING_PREFIX)}),
             f"{args.ema_decay:g}:10 (the run's own)": round(record["metrics"]["val_loss"], 4)}
    final.update({name: score(average.module.state_dict()) for name, average in beside.items()})
    dynamic = dynamic_figures(run_dir) if args.dynamic else None
    emit({"benchmark": "weight_average", "machine": machine_facts(), "command": "charlm " + " ".join(command),
          "corpus": args.corpus, "split": "contiguous 90/10 (last 10% validation)", "step": record["step"],
          "final_val_loss": final, "curve_of_the_run_s_average": val_loss_curve(run_dir),
          **({"validation_static_and_dynamic": dynamic} if dynamic else {})}, args.out)


if __name__ == "__main__":
    main()
