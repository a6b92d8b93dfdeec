"""Supervision under MockClock: crash -> restart, intensity exceeded -> escalate, backoff."""

import pytest
import trio
import trio.testing

from reactor.supervisor import ChildSpec, Restart, RestartIntensityExceeded, RestartPolicy, Supervisor


class Flaky:
    """A child that crashes `crashes` times after becoming ready, then runs until stopped."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.starts: list[float] = []
        self.stop_event = trio.Event()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        self.starts.append(trio.current_time())
        task_status.started()
        if len(self.starts) <= self.crashes:
            raise RuntimeError(f"crash {len(self.starts)}")
        await self.stop_event.wait()

    def stop(self):
        self.stop_event.set()


async def test_crash_restarts_the_child_with_growing_backoff(autojump_clock):
    child = Flaky(crashes=3)
    policy = RestartPolicy(max_restarts=5, window_s=60, backoff_initial_s=1, backoff_max_s=100)
    sup = Supervisor("s", [ChildSpec("c", child.run, stop=child.stop)], policy)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(30)
        assert len(child.starts) == 4
        gaps = [b - a for a, b in zip(child.starts, child.starts[1:])]
        assert gaps == pytest.approx([1, 2, 4])
        assert sup.statistics()[0].restarts == 3
        assert "crash 3" in sup.statistics()[0].last_error
        sup.stop()
    assert not sup.statistics()[0].running


async def test_one_for_one_leaves_siblings_alone(autojump_clock):
    flaky, steady = Flaky(crashes=2), Flaky(crashes=0)
    sup = Supervisor("s", [ChildSpec("flaky", flaky.run, stop=flaky.stop), ChildSpec("steady", steady.run, stop=steady.stop)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(10)
        assert len(flaky.starts) == 3
        assert len(steady.starts) == 1
        sup.stop()


async def test_restart_intensity_exceeded_escalates(autojump_clock):
    child = Flaky(crashes=100)
    policy = RestartPolicy(max_restarts=3, window_s=10, backoff_initial_s=0.1, backoff_max_s=0.1)
    sup = Supervisor("s", [ChildSpec("c", child.run)], policy)
    with pytest.RaisesGroup(RestartIntensityExceeded, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
    assert len(child.starts) == 4  # the first run and three restarts; the fourth crash escalates


async def test_crashes_spread_beyond_the_window_do_not_escalate(autojump_clock):
    child = Flaky(crashes=10)
    policy = RestartPolicy(max_restarts=2, window_s=5, backoff_initial_s=3, backoff_max_s=3)
    sup = Supervisor("s", [ChildSpec("c", child.run, stop=child.stop)], policy)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(60)
        assert len(child.starts) == 11
        sup.stop()


async def test_failure_before_readiness_fails_the_start(autojump_clock):
    async def broken(*, task_status=trio.TASK_STATUS_IGNORED):
        raise ValueError("bad config")

    sup = Supervisor("s", [ChildSpec("c", broken)])
    with pytest.RaisesGroup(ValueError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)


async def test_nested_supervisor_escalation_restarts_the_subtree(autojump_clock):
    inner_child = Flaky(crashes=3)
    inner_policy = RestartPolicy(max_restarts=1, window_s=100, backoff_initial_s=0.1)
    inner_runs = []
    inner_sups = []

    async def inner(*, task_status=trio.TASK_STATUS_IGNORED):
        inner_runs.append(trio.current_time())
        sup = Supervisor("inner", [ChildSpec("c", inner_child.run, stop=inner_child.stop)], inner_policy)
        inner_sups.append(sup)
        await sup.run(task_status=task_status)

    outer = Supervisor("outer", [ChildSpec("inner", inner, stop=lambda: inner_sups[-1].stop())], RestartPolicy(backoff_initial_s=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(outer.run)
        await trio.sleep(20)
        assert len(inner_runs) == 2  # inner escalated once (2 crashes within its window), outer restarted it
        assert outer.statistics()[0].restarts == 1
        outer.stop()


async def test_stop_during_backoff_returns_without_restarting(autojump_clock):
    child = Flaky(crashes=1)
    sup = Supervisor("s", [ChildSpec("c", child.run, stop=child.stop)], RestartPolicy(backoff_initial_s=1000))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(1)
        sup.stop()
    assert len(child.starts) == 1
    assert trio.current_time() < 10


async def test_transient_child_that_returns_is_not_restarted(autojump_clock):
    runs = []

    async def once(*, task_status=trio.TASK_STATUS_IGNORED):
        runs.append(1)
        task_status.started()

    sup = Supervisor("s", [ChildSpec("c", once, restart=Restart.TRANSIENT)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
    assert runs == [1]
