"""Will the run fit in memory? An estimate before anything is built, and one line when it did not fit.

`--hidden-size 100000` asked for 160 GB in one allocation and ended in a
traceback; on a CPU a run a little too big is worse: Linux lends the memory
and its out-of-memory killer ends the process later without a word. So the
engine estimates what a training step keeps alive before it builds
anything, and refuses a run that cannot fit:

    weights, gradients and AdamW's two moments   16 bytes per parameter (all fp32)
    the weights' moving average (--ema-decay)    4 more
    activations of one batch                     the task's own estimate

The parameters are counted on a model built on PyTorch's `meta` device,
which allocates nothing. What is available is the free memory of the GPU
(`torch.cuda.mem_get_info`) or, on a CPU, Linux's MemAvailable (and the
cgroup's limit, in a container). Where that is unknown nothing is refused,
and an allocation that still fails becomes one line with advice.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from charlm.engine.distributed import World
from charlm.errors import CharlmError

# fp32 weights, their gradients and AdamW's exp_avg and exp_avg_sq.
BYTES_PER_PARAMETER = 16
AVERAGE_BYTES_PER_PARAMETER = 4  # the fp32 moving average of the weights, when the run keeps one


class OutOfMemoryError(CharlmError):
    """A run that does not fit in the memory of its device."""


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    parameter_bytes: int  # weights, gradients, optimizer moments (and the weights' average)
    activation_bytes: int  # of one batch, as the task estimates them (0: the task does not say)

    @property
    def total(self) -> int:
        return self.parameter_bytes + self.activation_bytes


def estimate(task, world: World, amp_dtype: torch.dtype | None) -> MemoryEstimate | None:
    """What one process of the run needs at its peak, before anything is allocated (None: unknown)."""
    try:
        with torch.device("meta"):  # shapes only: a model of any size costs nothing here
            model = task.build_model()
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return None  # a model that cannot be built without data: the estimate is advice, not a gate
    parameters = sum(p.numel() for p in model.parameters())
    element_size = 4 if amp_dtype is None else torch.finfo(amp_dtype).bits // 8
    activations = getattr(task, "estimate_activation_bytes", None)
    activation_bytes = int(activations(world, element_size)) if activations else 0
    per_parameter = BYTES_PER_PARAMETER + (AVERAGE_BYTES_PER_PARAMETER if task.config.ema_decay > 0 else 0)
    return MemoryEstimate(parameters, parameters * per_parameter, activation_bytes)


def available_bytes(device: torch.device) -> int | None:
    """Memory free for this process on `device`, or None where it cannot be known."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        return _cpu_available()
    return None  # MPS shares the system's memory in ways PyTorch does not report


def _cpu_available() -> int | None:
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:  # a container's own limit (cgroup v2), when it is below the machine's
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit.isdigit() and used.isdigit():
            found.append(max(int(limit) - int(used), 0))
    except OSError:
        pass
    return min(found) if found else None


def check_fits(task, device: torch.device, amp_dtype: torch.dtype | None, world: World,
               available: int | None = None) -> MemoryEstimate | None:
    """Refuse, in one line, a run whose estimate exceeds the memory available on its device."""
    need = estimate(task, world, amp_dtype)
    if need is None:
        return None
    available = available_bytes(device) if available is None else available
    # torchrun's CPU processes on one machine share its memory.
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1) if device.type == "cpu" else 1
    if available is not None and need.total * sharing > available:
        per = f" for each of {sharing} processes" if sharing > 1 else ""
        raise OutOfMemoryError(
            f"this run needs about {format_bytes(need.total)} of memory{per} "
            f"({format_bytes(need.parameter_bytes)} for {need.parameters:,} parameters with their gradients "
            f"and optimizer moments, {format_bytes(need.activation_bytes)} for the activations of one batch) "
            f"but {format_bytes(available)} is available on {device.type}; {_advice(need, batch_flags(task))}")
    return need


def batch_flags(task) -> str:
    """The flags that shrink a batch of this task (optional task attribute `batch_flags`)."""
    return getattr(task, "batch_flags", "--batch-size or --seq-len")


def _advice(need: MemoryEstimate, flags: str) -> str:
    if need.parameter_bytes >= need.activation_bytes:
        return "lower --hidden-size or --num-layers"
    return f"lower {flags}"


def format_bytes(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:,.0f} bytes" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


# What PyTorch's allocators say when they fail: the CPU's DefaultCPUAllocator, CUDA, MPS.
_ALLOCATION_FAILURE = re.compile(r"can't allocate memory|out of memory|not enough memory", re.IGNORECASE)
_ASKED = re.compile(r"tried to allocate (\d+) bytes|tried to allocate ([\d.]+ [KMGT]i?B)", re.IGNORECASE)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    return isinstance(exc, RuntimeError) and bool(_ALLOCATION_FAILURE.search(str(exc)))


def out_of_memory(exc: BaseException, device: torch.device,
                  flags: str = "--batch-size or --seq-len") -> OutOfMemoryError:
    """One line for an allocation that failed although the estimate let the run start."""
    match = _ASKED.search(str(exc))
    asked = ""
    if match:
        asked = f" (it asked for {format_bytes(int(match.group(1))) if match.group(1) else match.group(2)} more)"
    where = "GPU" if device.type == "cuda" else device.type
    return OutOfMemoryError(f"ran out of memory on the {where}{asked}; lower {flags} "
                            "(activations), or --hidden-size or --num-layers (weights)")
