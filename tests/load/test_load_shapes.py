"""The load shapes as data (loadtests/load_shapes.py): what locust's HeraldShape is told second by second."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtests import load_shapes
from loadtests.load_shapes import Stage, flash_phases, flash_sale, parse_phases, ramp, steady, tick


def users_over(stages: list[Stage], step: float = 0.5) -> list[int]:
    out, t = [], 0.0
    while (answer := tick(stages, t)) is not None:
        out.append(answer[0])
        t += step
    return out


def test_steady_holds_the_users_for_the_run_then_stops():
    stages = steady(10, 5, 30)
    assert tick(stages, 0) == (10, 5) and tick(stages, 29.9) == (10, 5)
    assert tick(stages, 30) is None


def test_ramp_rises_linearly_to_the_users_then_holds():
    assert tick(ramp(100, 50), 0) == (100, 2.0)  # 100 users over the 50 s run
    stages = ramp(100, 50, ramp_s=10)
    assert tick(stages, 5) == (100, 10.0) and tick(stages, 20) == (100, 10.0) and tick(stages, 50) is None


def test_flash_sale_ramps_holds_spikes_holds_falls_and_holds():
    phases = {"ramp": 2, "base": 3, "spike": 1, "hold": 4, "fall": 2, "tail": 3}
    stages = flash_sale(10, 5, phases)
    assert [s.users for s in stages] == [10, 10, 50, 50, 10, 10]
    assert [s.until_s for s in stages] == [2, 5, 6, 10, 12, 15]
    assert tick(stages, 1) == (10, 5.0)  # ramp: 10 users in 2 s
    assert tick(stages, 5.5) == (50, 40.0)  # spike: 40 more users in 1 s
    assert tick(stages, 11) == (10, 20.0)  # fall: 40 fewer in 2 s
    assert tick(stages, 15) is None


def test_flash_phases_not_given_share_what_is_left_of_the_run():
    phases = flash_phases(100, {"hold": 40})
    assert phases["hold"] == 40 and sum(phases.values()) == pytest.approx(100)
    assert phases["ramp"] == pytest.approx(60 * 0.15 / 0.75)
    assert sum(flash_phases(60).values()) == pytest.approx(60)


@pytest.mark.parametrize("text, message", [
    ("ramp", "expected phase=seconds"),
    ("ramp=soon", "not a number"),
    ("peak=3", "unknown flash-sale phase"),
    ("hold=-1", "negative"),
])
def test_bad_phases_are_refused_naming_the_part(text, message):
    with pytest.raises(ValueError, match=message):
        parse_phases(text)


def test_a_flash_sale_needs_a_base_and_a_multiple_of_at_least_one():
    with pytest.raises(ValueError, match="base"):
        flash_sale(0, 5, flash_phases(10))
    with pytest.raises(ValueError, match="multiple"):
        flash_sale(10, 0.5, flash_phases(10))


@given(base=st.integers(1, 500), multiple=st.floats(1, 20), duration=st.floats(1, 3600))
def test_any_flash_sale_peaks_at_base_times_multiple_ends_at_the_base_and_stops_at_the_end(base, multiple, duration):
    stages = flash_sale(base, multiple, flash_phases(duration))
    assert max(s.users for s in stages) == max(round(base * multiple), base)
    assert stages[-1].users == base and stages[-1].until_s == pytest.approx(duration)
    assert all(s.spawn_rate >= 1 for s in stages)
    assert tick(stages, duration + 1e-6) is None


def test_the_shapes_module_is_the_one_the_locustfile_offers():
    assert load_shapes.SHAPES == ("steady", "ramp", "flash")
    assert users_over(steady(3, 3, 1)) == [3, 3]
