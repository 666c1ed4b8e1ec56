import math

import pytest

from charlm.engine.schedule import lr_multiplier


def test_warmup_is_linear():
    assert [lr_multiplier("cosine", s, 4, 0.0, 0.1) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("schedule", ["cosine", "exponential"])
def test_decay_runs_from_peak_to_floor(schedule):
    values = [lr_multiplier(schedule, 10, 0, p / 10, 0.1) for p in range(11)]
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(values, values[1:]))


def test_cosine_midpoint_and_constant():
    assert lr_multiplier("cosine", 10, 0, 0.5, 0.0) == pytest.approx(0.5)
    assert lr_multiplier("constant", 10, 0, 0.9, 0.1) == 1.0
    assert lr_multiplier("cosine", 10, 0, 3.0, 0.2) == pytest.approx(0.2)  # progress is clamped
    assert math.isclose(lr_multiplier("exponential", 10, 0, 1.0, 0.0), 1e-3)
