"""The group-commit helper (reactor/group_commit.py), driven by its callers, under MockClock.

- concurrent callers share writes, and each returns only once its own items are durable;
- the linger is bounded: a caller waits `linger_s` and no more, callers arriving without
  pause never wait more than two lingers and two writes; a caller with no company (the
  batch before it had one item) is written at once;
- a failed write fails every caller of its batch (none acknowledged) and no caller of another;
- a caller writing for others, cancelled mid-write, does not fail their batch.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from reactor.group_commit import GroupCommit, WriteFailed

pytestmark = pytest.mark.trio

WRITE_S = 0.001  # how long a write takes (Trio's clock: MockClock jumps it)


class Disk:
    """A write that takes WRITE_S and then holds its items; a batch with an item in `failing` fails."""

    def __init__(self) -> None:
        self.durable: list[int] = []
        self.writes = 0
        self.batches: list[list[int]] = []
        self.failing: set[int] = set()

    async def write(self, items: list[int]) -> None:
        self.writes += 1
        self.batches.append(list(items))
        await trio.sleep(WRITE_S)
        if self.failing.intersection(items):
            raise OSError(5, "Input/output error")
        self.durable.extend(items)


async def test_concurrent_callers_share_writes_and_wake_once_their_items_are_durable(autojump_clock: trio.testing.MockClock) -> None:
    disk = Disk()
    commits: GroupCommit[int, None] = GroupCommit(disk.write, linger_s=0.002)
    acknowledged: list[int] = []

    async def caller(i: int) -> None:
        await commits.commit([i])
        assert i in disk.durable  # not acknowledged before its write is done
        acknowledged.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(64):
            nursery.start_soon(caller, i)
    assert sorted(acknowledged) == sorted(disk.durable) == list(range(64))
    assert disk.writes == commits.batches < 64  # shared: one write per caller would be 64
    assert commits.batches <= 2


async def with_company(commits: GroupCommit[int, None], first: int) -> None:
    """Callers coming together, until a batch of more than one item was written (the next one lingers)."""
    async with trio.open_nursery() as nursery:
        for i in range(first, first + 4):
            nursery.start_soon(commits.commit, [i])
    assert commits.batches >= 2  # the first caller alone, the others queued behind it in one batch


@pytest.mark.parametrize("linger_s", [0.0, 0.005])
async def test_a_caller_after_company_waits_the_linger_and_no_longer(autojump_clock: trio.testing.MockClock, linger_s: float) -> None:
    disk = Disk()
    commits: GroupCommit[int, None] = GroupCommit(disk.write, linger_s=linger_s)
    await with_company(commits, 100)
    start = trio.current_time()
    with trio.fail_after(10):  # a batch that waited to fill would sit here until the (mock) deadline
        await commits.commit([1])
    assert trio.current_time() - start == pytest.approx(linger_s + WRITE_S)
    assert 1 in disk.durable


async def test_a_caller_with_no_company_is_written_at_once(autojump_clock: trio.testing.MockClock) -> None:
    disk = Disk()
    commits: GroupCommit[int, None] = GroupCommit(disk.write, linger_s=0.005)
    for i in range(3):  # a serial caller: each batch holds one item, so none lingers
        start = trio.current_time()
        await commits.commit([i])
        assert trio.current_time() - start == pytest.approx(WRITE_S)
    assert disk.batches == [[0], [1], [2]]


async def test_callers_arriving_without_pause_wait_a_bounded_time(autojump_clock: trio.testing.MockClock) -> None:
    disk = Disk()
    linger_s = 0.004
    commits: GroupCommit[int, None] = GroupCommit(disk.write, linger_s=linger_s)
    waits: list[float] = []

    async def caller(i: int) -> None:
        start = trio.current_time()
        await commits.commit([i])
        waits.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        for i in range(300):  # one every 0.1 ms for 30 ms: there is always company
            nursery.start_soon(caller, i)
            await trio.sleep(0.0001)
    assert len(waits) == 300 and sorted(disk.durable) == list(range(300))
    # the worst case: arrive just as a batch is taken, wait out its write, then one linger and one write of its own
    assert max(waits) <= 2 * (linger_s + WRITE_S) + 1e-9
    assert commits.batches < 30


async def test_a_failed_write_fails_every_caller_of_its_batch_and_no_other(autojump_clock: trio.testing.MockClock) -> None:
    disk = Disk()
    disk.failing = {3}
    commits: GroupCommit[int, None] = GroupCommit(disk.write, linger_s=0.002)
    outcomes: dict[int, BaseException | None] = {}

    async def caller(i: int) -> None:
        try:
            await commits.commit([i])
            outcomes[i] = None
        except WriteFailed as exc:
            outcomes[i] = exc

    async with trio.open_nursery() as nursery:
        for i in range(16):  # item 3 makes the write of its batch fail
            nursery.start_soon(caller, i)
            await trio.sleep(0.0003)
    failed_batch = next(b for b in disk.batches if 3 in b)
    assert len(failed_batch) > 1 and len(disk.batches) > 1
    for i in range(16):
        if i in failed_batch:  # every caller of the failed batch: an error, not written
            assert isinstance(outcomes[i], WriteFailed) and isinstance(outcomes[i].__cause__, OSError), outcomes
            assert i not in disk.durable
        else:  # every other caller: acknowledged and written
            assert outcomes[i] is None and i in disk.durable, outcomes


async def test_a_writer_cancelled_mid_write_still_acknowledges_the_others(autojump_clock: trio.testing.MockClock) -> None:
    disk = Disk()
    commits: GroupCommit[int, None] = GroupCommit(disk.write, linger_s=0.002)
    done: list[int] = []

    async def caller(i: int, scope_out: list[trio.CancelScope] | None = None) -> None:
        with trio.CancelScope() as scope:
            if scope_out is not None:
                scope_out.append(scope)
            await commits.commit([i])
            done.append(i)

    await with_company(commits, 100)  # so the next batch lingers, and the others join the leader's batch
    disk.durable.clear()
    leader_scope: list[trio.CancelScope] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, 0, leader_scope)  # first in: it writes the batch
        await trio.lowlevel.checkpoint()
        for i in range(1, 6):
            nursery.start_soon(caller, i)
        await trio.sleep(0.002 + WRITE_S / 2)  # past the linger, in the middle of the write
        leader_scope[0].cancel()
    assert sorted(disk.batches[-1]) == [0, 1, 2, 3, 4, 5]  # the leader's batch held them all
    assert sorted(disk.durable) == list(range(6))  # the write was not abandoned
    assert sorted(done) == list(range(1, 6))  # the others were acknowledged; the cancelled caller was not
