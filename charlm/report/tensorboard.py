"""Training events as TensorBoard scalars, for people who watch runs there.

    logger = TensorBoardLogger(Path("tb"))
    for event in train(...):
        render(event)
        logger(event)

Each run writes to its own folder under the given one (named after the run
directory), so `tensorboard --logdir tb` overlays several runs. Scalars:
train/loss, train/bits_per_<unit> (language models), train/lr,
train/tokens_per_second, train/grad_norm, and val/<metric> for every figure
an evaluation reports (val_loss -> val/loss). A resumed run drops anything
logged past the step it resumes from, so a crash's tail is not drawn twice.
"""

from __future__ import annotations

import math
from pathlib import Path

from charlm.engine.events import Evaluated, RunFinished, RunStarted, StepProgress
from charlm.errors import CharlmError

INSTALL_HINT = "pip install 'charlm-rnn[tensorboard]'"


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CharlmError(f"--tensorboard needs the tensorboard package, which is not installed: {INSTALL_HINT}") from None
    return SummaryWriter


class TensorBoardLogger:
    """An event consumer: call it with every event a training run yields."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.writer_class = _summary_writer_class()  # fails here, before training starts, when it is missing
        self.writer = None
        self.unit = "char"
        self.is_lm = True

    def __call__(self, event: object) -> None:
        if isinstance(event, RunStarted):
            self.started(event)
        elif self.writer is None:
            return
        elif isinstance(event, StepProgress):
            self.scalar("train/loss", event.train_loss, event.step)
            if self.is_lm:
                self.scalar(f"train/bits_per_{self.unit}", event.train_loss / math.log(2), event.step)
            self.scalar("train/lr", event.lr, event.step)
            self.scalar("train/tokens_per_second", event.tokens_per_second, event.step)
            if event.grad_norm is not None:
                self.scalar("train/grad_norm", event.grad_norm, event.step)
        elif isinstance(event, Evaluated):
            for name, value in event.metrics.items():
                self.scalar(f"val/{name.removeprefix('val_')}", value, event.step)
            self.writer.flush()
        elif isinstance(event, RunFinished):
            self.close()

    def started(self, event: RunStarted) -> None:
        self.close()
        self.unit, self.is_lm = event.unit, event.task == "lm"
        # Resuming from step N: what an interrupted run logged after N is dropped (the checkpoint has step N).
        first_step = None if event.resumed_from_step is None else event.resumed_from_step + 1
        self.writer = self.writer_class(log_dir=str(self.log_dir / Path(event.run_dir).name), purge_step=first_step)
        settings = "\n".join(f"    {key} = {value!r}" for key, value in event.config.to_dict().items())
        self.writer.add_text("run", f"{event.task} run, {event.model_summary}, {event.num_parameters:,} parameters, "
                                    f"on {event.device} in {event.precision}\n\n{event.data_summary}\n\n{settings}",
                             global_step=first_step or 0)

    def scalar(self, tag: str, value: float | None, step: int) -> None:
        if isinstance(value, (int, float)) and math.isfinite(value):
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
