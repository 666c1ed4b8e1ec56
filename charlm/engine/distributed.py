"""Training over several processes, through PyTorch's own engine.

charlm never starts processes itself: torchrun (one per machine; under SLURM,
srun starts the torchruns) launches one process per device and tells each its
place through the environment: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT. `World.from_environment()` reads them; without them the world is
one process and nothing here does any work or costs any time.

Every rank runs the same loop on its own share of the batch streams, and
DistributedDataParallel averages the gradients, so every rank takes the same
optimizer step. Whatever else steers a run (a skipped step, the clock that
drives a time budget, a Ctrl-C) must be agreed on as well, or the ranks would
part ways and then wait for each other forever: `agree_max` is that
agreement, one small all-reduce per step. A rank that fails takes the others
down with a clear error: its peers see the connection close, or give up
after `dist_timeout`.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

import torch
import torch.distributed as dist

from charlm.errors import CharlmError

T = TypeVar("T")


class DistributedError(CharlmError):
    """Another process of a multi-process run failed, or never arrived."""


# Raised by collectives when a peer is gone or too late (RuntimeError: Gloo's "Connection closed by peer").
COMMUNICATION_ERRORS = (getattr(dist, "DistError", RuntimeError), RuntimeError)


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run."""

    rank: int = 0
    local_rank: int = 0  # index among the processes on this machine: which GPU
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and progress; the others only compute."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> "World":
        try:
            size = int(environ.get("WORLD_SIZE", "1"))
            rank = int(environ.get("RANK", "0"))
            local_rank = int(environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise DistributedError("WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers; "
                                   "start multi-process runs with torchrun, which sets them") from None
        if size < 1 or not 0 <= rank < size:
            raise DistributedError(f"RANK {rank} is not within WORLD_SIZE {size}; "
                                   "start multi-process runs with torchrun, which sets them")
        return cls(rank=rank, local_rank=local_rank, size=size)

    def share(self, rows: int) -> slice:
        """This rank's rows of `rows * size` (the batch streams): rank r takes the r-th block."""
        return slice(self.rank * rows, (self.rank + 1) * rows)


SINGLE = World()


def join(world: World, device: torch.device, timeout_seconds: float) -> torch.device:
    """Join the run's process group; returns the device this rank computes on.

    NCCL on CUDA (each rank on GPU LOCAL_RANK), Gloo on the CPU. Nothing to do
    for a single process.
    """
    if not world.distributed:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    if dist.is_initialized():  # joined already (the CLI joins before the corpus, train() again): same device
        return device
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise DistributedError(f"multi-process training runs on CUDA (NCCL) or CPU (Gloo), not {device.type}; "
                               "use --device cuda or --device cpu")
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds))
    except COMMUNICATION_ERRORS as exc:
        raise DistributedError(f"could not join the other {world.size - 1} process(es) of this run: "
                               f"{_first_line(exc)}; check the torchrun rendezvous flags") from None
    return device


def leave(finished: bool = True) -> None:
    """Leave the process group. After a run that finished, wait for every rank first:
    tearing down a group while a peer still talks to it can abort the process."""
    if dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def _first_line(exc: BaseException) -> str:
    """The gist of a backend's error: its first line, without source locations and boilerplate advice."""
    lines = str(exc).strip().splitlines()
    text = re.sub(r"\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", lines[0] if lines else type(exc).__name__)
    return text.split(". This is typically")[0].strip()


def lost_peer(exc: BaseException) -> DistributedError:
    """What a rank says when a collective fails: most likely another rank failed first."""
    return DistributedError(f"lost contact with the other processes of this run ({_first_line(exc)}): "
                            "another process failed or stopped responding; see its own error")


def _collective_device(device: torch.device) -> torch.device:
    # NCCL moves only GPU tensors, Gloo only CPU ones.
    return device if device.type == "cuda" else torch.device("cpu")


def agree_max(world: World, device: torch.device, values: list[float]) -> list[float]:
    """The element-wise maximum of `values` over all ranks (the values themselves when alone)."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device(device))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def sum_over_ranks(world: World, tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over all ranks, on every rank."""
    if world.distributed:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_to_main(world: World, value: Any) -> list[Any] | None:
    """Every rank's `value`, as a list in rank order, on rank 0 (None elsewhere).

    For the few small objects a checkpoint needs from every rank (RNG states,
    carried hidden states); they go between this run's own processes only and
    never touch a file unpickled.
    """
    if not world.distributed:
        return [value]
    gathered: list[Any] | None = [None] * world.size if world.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def together(world: World, action: Callable[[], T], main_only: bool = False) -> T | None:
    """Run `action` on every rank (or rank 0 alone) and fail on all ranks if it failed on any.

    The preparation of a run (checking the corpus and the run directory)
    raises user errors; without this, the ranks that did not fail would wait
    in the next collective for one that has already exited.
    """
    result, message = None, None
    if world.is_main or not main_only:
        try:
            result = action()
        except CharlmError as exc:
            if not world.distributed:
                raise
            message = str(exc)
    if world.distributed:
        messages: list[str | None] = [None] * world.size
        dist.all_gather_object(messages, message)
        failed = [m for m in messages if m is not None]
        if failed:
            raise CharlmError(failed[0])
    return result


def main_first(world: World, action: Callable[[], T]) -> T:
    """Run `action` on rank 0, then on the others: rank 0 downloads and fills the cache that they reuse."""
    first = together(world, action, main_only=True)
    return together(world, (lambda: first) if world.is_main else action)
