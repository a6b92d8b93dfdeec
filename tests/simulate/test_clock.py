"""The simulation's clock (actors/simulate/clock.py): MockClock's autojump, in one turn of Trio's run loop per jump.

What it must keep: the same instants, the same tasks in the same order (the simulation's rows are the same as under
`MockClock(autojump_threshold=0)`); what it saves: the second turn of the run loop each jump took.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

from actors.simulate.clock import FOREVER_S, JumpingClock
from actors.simulate.run import deterministic_trio, herald_config, run_scenario, simulate
from actors.simulate.scenario import parse_scenario
from tests.simulate.test_simulate import SMALL


class Turns(trio.abc.Instrument):
    """Counts the turns of the run loop (each asks for I/O once)."""

    def __init__(self) -> None:
        self.turns = 0

    def before_io_wait(self, timeout: float) -> None:
        self.turns += 1


def _run(main: Callable[[], Awaitable[Any]], clock: trio.abc.Clock) -> tuple[Any, int]:
    turns = Turns()
    with deterministic_trio(7):
        result = trio.run(main, clock=clock, instruments=[turns])
    return result, turns.turns


async def _sleepers() -> list[tuple[float, int]]:
    """Three tasks sleeping to instants, some of them shared: who woke when, in order."""
    woken: list[tuple[float, int]] = []

    async def sleeper(n: int, instants: list[float]) -> None:
        for at in instants:
            await trio.sleep_until(at)
            woken.append((trio.current_time(), n))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper, 0, [0.25, 1.0, 2.5, 7.0])
        nursery.start_soon(sleeper, 1, [0.25, 3.0, 7.0])
        nursery.start_soon(sleeper, 2, [0.1, 1.0, 1.0, 9.5])
    return woken


def test_tasks_wake_at_their_deadlines_in_the_order_mockclock_wakes_them_with_a_turn_less_per_jump():
    mock, mock_turns = _run(_sleepers, trio.testing.MockClock(autojump_threshold=0))
    jumping, jumping_turns = _run(_sleepers, JumpingClock())
    assert jumping == mock
    assert [at for at, _ in jumping] == [0.1, 0.25, 0.25, 1.0, 1.0, 1.0, 2.5, 3.0, 7.0, 7.0, 9.5]  # exactly the deadlines
    jumps = len({at for at, _ in jumping})  # 0.1, 0.25, 1.0, 2.5, 3.0, 7.0, 9.5: the clock moved seven times
    assert mock_turns - jumping_turns == jumps


def test_time_stands_still_while_tasks_run_and_without_a_deadline():
    clock = JumpingClock(start=5.0)
    assert clock.current_time() == 5.0
    assert clock.deadline_to_sleep_time(math.inf) == FOREVER_S and clock.current_time() == 5.0
    assert clock.deadline_to_sleep_time(4.0) == 0.0 and clock.current_time() == 5.0  # a past deadline: no jump back
    assert clock.deadline_to_sleep_time(6.5) == 0.0 and clock.current_time() == 6.5


def test_a_simulation_gives_the_rows_it_gives_under_mockclock():
    scenario = parse_scenario(tomllib.loads(SMALL))
    config = herald_config(scenario)
    with deterministic_trio(4):
        under_mock = trio.run(run_scenario, scenario, 4, config, clock=trio.testing.MockClock(autojump_threshold=0))
    jumping = simulate(scenario, 4)  # JumpingClock
    assert jumping.rows == under_mock.rows
    assert jumping.totals == under_mock.totals
    assert sum(t["accepted"] for t in jumping.totals.values()) > 500 and any(r.transitions for r in jumping.rows)
