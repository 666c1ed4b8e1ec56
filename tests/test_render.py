import io
import re
from pathlib import Path

import pytest

from charlm.config import build_config
from charlm.cli.render import TrainRenderer
from charlm.engine.events import Evaluated, Notice, RunFinished, RunStarted, StepProgress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _finished(best_val_loss: float | None, best_step: int = 0) -> RunFinished:
    return RunFinished(step=12, reason="interrupted", best_score=best_val_loss, best_step=best_step,
                       main_metric="val_loss", elapsed_seconds=3.0, run_dir=Path("runs/x"), skipped_steps=0)


def _started() -> RunStarted:
    return RunStarted(run_dir=Path("runs/x"), task="lm", config=build_config({}), data={},
                      data_summary="corpus corpus.txt: 100 chars", model_summary="lstm 2x256", unit="char",
                      device="cpu", precision="fp32", world_size=1, num_parameters=1000, resumed_from_step=None)


def test_the_live_bar_shows_the_status_after_the_times_without_a_stray_comma():
    out, err = io.StringIO(), _Terminal()
    render = TrainRenderer(out=out, err=err)
    render(_started())
    render(StepProgress(step=500, epoch=0, progress=0.5, train_loss=1.5, lr=1e-3, tokens_per_second=5000.0,
                        elapsed_seconds=3.0))
    assert re.search(r"\d\d:\d\d<[^ ]+ step 500 \| loss 1\.500 \| val - \|", err.getvalue()), err.getvalue()
    render(_finished(1.0, 500))


def test_a_run_stopped_before_its_first_validation_says_so():
    out = io.StringIO()
    TrainRenderer(out=out, err=io.StringIO())(_finished(None))
    assert "no validation pass yet" in out.getvalue() and "nan" not in out.getvalue()


def test_the_summary_shows_the_best_validation_loss():
    out = io.StringIO()
    TrainRenderer(out=out, err=io.StringIO())(_finished(1.23456, 30))
    assert "best val 1.2346 nats/char at step 30; checkpoints in runs" in out.getvalue()


def test_a_run_stopped_before_its_first_step_does_not_point_at_checkpoints():
    out = io.StringIO()
    finished = RunFinished(step=0, reason="interrupted", best_score=None, best_step=0, main_metric="val_loss",
                           elapsed_seconds=0.5, run_dir=Path("runs/x"), skipped_steps=0)
    TrainRenderer(out=out, err=io.StringIO())(finished)
    assert "nothing was saved" in out.getvalue() and "checkpoints in" not in out.getvalue()


@pytest.mark.parametrize("columns", [80, 100, 200])
def test_the_progress_line_fits_the_terminal_with_a_visible_bar(columns, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(columns))
    err = _Terminal()
    render = TrainRenderer(out=io.StringIO(), err=err)
    render(_started())
    render(Evaluated(step=1000, metrics={"val_loss": 1.4567, "val_bits_per_char": 2.1}, main_metric="val_loss",
                     higher_is_better=False, is_best=True, preview=""))
    render(StepProgress(step=12500, epoch=3, progress=0.42, train_loss=1.2345, lr=1.23e-3,
                        tokens_per_second=123456.0, elapsed_seconds=4000.0))
    line = err.getvalue().split("\r")[-1].rstrip()
    assert len(line) <= columns, line
    bar = re.search(r"\|(.*)\|", line).group(1)
    assert len(bar) >= 10 and "step 12500 | loss 1.234" in line, line
    if columns >= 200:  # room for everything
        assert "lr 1.23e-03" in line and "(2.10 bpc)" in line


def test_a_notice_is_one_line_on_stderr():
    out, err = io.StringIO(), io.StringIO()
    TrainRenderer(out=out, err=err)(Notice("took_over", "the run in runs/x stopped before its first checkpoint"))
    assert err.getvalue() == "charlm: note: the run in runs/x stopped before its first checkpoint\n"
    assert out.getvalue() == ""
