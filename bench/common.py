"""Shared pieces of the benchmarks: machine facts, the matmul peak, timing, curves, dynamic figures, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def machine_facts() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts = {"cpu": cpu, "logical_cores": os.cpu_count(), "torch": torch.__version__,
             "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
             "mkldnn": torch.backends.mkldnn.is_available(), "python": sys.version.split()[0],
             "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
             # Other processes' load when the run started: on a shared 2-core machine every figure depends on it.
             "load_average_1m_5m_15m": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    return facts


def matmul_peak_gflops(size: int = 2048, seconds: float = 2.0, dtype: torch.dtype = torch.float32,
                       device: str = "cpu") -> float:
    """Achieved GFLOP/s of torch.matmul on large square matrices: this machine's practical peak."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(2):
        torch.matmul(a, b)
    _sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.matmul(a, b)
        count += 1
    _sync(device)
    return 2 * size ** 3 * count / (time.perf_counter() - start) / 1e9


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def rate(work: float, fn: Callable[[], None], device: str = "cpu") -> float:
    """work units per second of one call of fn."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return work / (time.perf_counter() - start)


def interleaved(candidates: dict[str, Callable[[], float]], rounds: int) -> dict[str, dict]:
    """Run each candidate once per round, alternating, so drift and noise hit all alike.

    Each callable returns a rate; the result holds the median and every round.
    """
    results: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            results[name].append(fn())
    return {name: {"median": statistics.median(values), "rounds": [round(v, 1) for v in values]}
            for name, values in results.items()}


def paired_ratio(rates: dict[str, dict], numerator: str, denominator: str) -> dict:
    """Median and range of the per-round ratio of two interleaved candidates.

    Each round's pair ran back to back, so a slow spell of a shared machine
    hits both alike and cancels in their ratio; medians of each side do not.
    """
    ratios = sorted(a / b for a, b in zip(rates[numerator]["rounds"], rates[denominator]["rounds"]))
    return {"median": round(statistics.median(ratios), 3), "min": round(ratios[0], 3), "max": round(ratios[-1], 3)}


def val_loss_curve(run_dir: Path) -> list[dict]:
    """A run's evaluations from its metrics.jsonl: elapsed seconds, step and validation loss of each."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{"elapsed_seconds": r["elapsed_seconds"], "step": r["step"], "val_loss": round(r["val_loss"], 4)}
            for r in records if "val_loss" in r]


def emit(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=2)
    if out:
        Path(out).write_text(text + "\n")
    print(text)


def dynamic_figures(run_dir: Path) -> dict:
    """`charlm eval --dynamic --json` of the run's best checkpoint on its validation split."""
    command = [sys.executable, "-m", "charlm", "eval", "--checkpoint", str(run_dir), "--dynamic", "--json"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"charlm eval --dynamic failed: {done.stderr.strip()}")
    figures = json.loads(done.stdout)
    return {"command": " ".join(command[1:]), **{key: figures[key] for key in (
        "characters", "static_nats_per_char", "dynamic_nats_per_char", "method", "lr", "decay", "segment")}}
