"""The TensorBoard consumer: hand-built training events in, scalars read back from the event file."""

import math
import sys
from pathlib import Path

import pytest

from charlm.config import build_config
from charlm.engine.events import Evaluated, RunFinished, RunStarted, StepProgress
from charlm.errors import CharlmError
from charlm.report.tensorboard import TensorBoardLogger


def started(run_dir: Path, resumed_from_step=None) -> RunStarted:
    return RunStarted(run_dir=run_dir, task="lm", config=build_config({}), data={}, data_summary="fox.txt, 900 chars",
                      model_summary="lstm 1x32", unit="char", device="cpu", precision="fp32", world_size=1,
                      num_parameters=1234, resumed_from_step=resumed_from_step)


def progress(step: int, loss: float, grad_norm=0.5) -> StepProgress:
    return StepProgress(step=step, epoch=0, progress=step / 100, train_loss=loss, lr=0.001 * step, tokens_per_second=500.0 + step,
                        elapsed_seconds=step / 10, grad_norm=grad_norm)


def evaluated(step: int, loss: float) -> Evaluated:
    return Evaluated(step=step, metrics={"val_loss": loss, "val_bits_per_char": loss / math.log(2)},
                     main_metric="val_loss", higher_is_better=False, is_best=True, preview="the fox")


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_events_become_scalars_under_the_runs_name(tmp_path):
    pytest.importorskip("tensorboard")
    log = TensorBoardLogger(tmp_path / "tb")
    for event in [started(tmp_path / "fox"), progress(10, 2.0), progress(20, 1.5, grad_norm=None), evaluated(20, 1.6),
                  progress(30, float("nan")),
                  RunFinished(step=30, reason="max_steps", best_score=1.6, best_step=20, main_metric="val_loss",
                              elapsed_seconds=3.0, run_dir=tmp_path / "fox", skipped_steps=0)]:
        log(event)
    got = scalars(tmp_path / "tb" / "fox")
    assert got["train/loss"] == [(10, 2.0), (20, 1.5)]  # a NaN report is left out, not drawn as a gap
    assert got["train/bits_per_char"] == [(10, pytest.approx(2.0 / math.log(2))), (20, pytest.approx(1.5 / math.log(2)))]
    assert got["train/lr"] == [(10, pytest.approx(0.01)), (20, pytest.approx(0.02)), (30, pytest.approx(0.03))]
    assert [step for step, _ in got["train/tokens_per_second"]] == [10, 20, 30]
    assert got["train/grad_norm"] == [(10, 0.5), (30, 0.5)]
    assert got["val/loss"] == [(20, pytest.approx(1.6))]
    assert got["val/bits_per_char"] == [(20, pytest.approx(1.6 / math.log(2)))]


def test_a_resumed_run_replaces_what_was_logged_past_its_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    first = TensorBoardLogger(tmp_path / "tb")
    for event in [started(tmp_path / "fox"), progress(10, 3.0), progress(20, 2.5), progress(30, 2.4)]:
        first(event)
    first.close()  # the run died after step 30; its last checkpoint was at step 20
    second = TensorBoardLogger(tmp_path / "tb")
    for event in [started(tmp_path / "fox", resumed_from_step=20), progress(30, 2.2)]:
        second(event)
    second.close()
    assert scalars(tmp_path / "tb" / "fox")["train/loss"] == [(10, 3.0), (20, 2.5), (30, pytest.approx(2.2))]


def test_without_tensorboard_the_error_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(CharlmError, match=r"^--tensorboard needs the tensorboard package, which is not installed: "
                                         r"pip install 'charlm-rnn\[tensorboard\]'$"):
        TensorBoardLogger(tmp_path / "tb")
