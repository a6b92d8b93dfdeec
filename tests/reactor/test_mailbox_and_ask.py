"""Mailbox overflow policies (backpressure) and ask/reply cancellation."""

import pytest
import trio
import trio.testing

from reactor.ask import ActorCrashed, Reply, ask
from reactor.mailbox import Mailbox, MailboxClosed, MailboxFull, Overflow


async def test_block_policy_applies_backpressure(autojump_clock):
    box: Mailbox[int] = Mailbox("m", 2, Overflow.BLOCK)
    sent = []

    async def producer():
        for i in range(5):
            await box.send(i)
            sent.append(i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == [0, 1]  # the third send waits for room
        assert box.statistics().senders_waiting == 1
        assert await box.receive() == 0
        await trio.testing.wait_all_tasks_blocked()
        assert sent == [0, 1, 2]
        got = [await box.receive() for _ in range(4)]
    assert got == [1, 2, 3, 4]


async def test_fail_fast_policy_rejects_when_full():
    box: Mailbox[int] = Mailbox("m", 2, Overflow.FAIL_FAST)
    await box.send(1)
    await box.send(2)
    with pytest.raises(MailboxFull):
        await box.send(3)
    stats = box.statistics()
    assert (stats.queued, stats.sent, stats.rejected) == (2, 2, 1)


async def test_close_drains_then_ends_and_refuses_senders():
    box: Mailbox[int] = Mailbox("m", 4)
    await box.send(1)
    await box.send(2)
    box.close()
    with pytest.raises(MailboxClosed):
        await box.send(3)
    assert [m async for m in box] == [1, 2]


def test_unbounded_mailbox_is_refused():
    with pytest.raises(ValueError):
        Mailbox("m", 0)


async def test_ask_returns_the_reply():
    box: Mailbox[tuple[int, Reply[int]]] = Mailbox("m", 1)

    async def doubler():
        n, reply = await box.receive()
        reply.send(n * 2)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(doubler)
        assert await ask(box.send, lambda reply: (21, reply)) == 42


async def test_ask_is_cancelled_by_the_callers_scope_and_late_reply_is_dropped(autojump_clock):
    box: Mailbox[tuple[int, Reply[int]]] = Mailbox("m", 1)
    with trio.move_on_after(5) as scope:
        await ask(box.send, lambda reply: (1, reply))
    assert scope.cancelled_caught
    _, reply = box.receive_nowait()
    reply.send(2)  # the asker is gone: must not raise or block


async def test_failed_reply_raises_in_the_asker():
    box: Mailbox[Reply[int]] = Mailbox("m", 1)

    async def crasher():
        reply = await box.receive()
        reply.fail(ActorCrashed("boom"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(crasher)
        with pytest.raises(ActorCrashed):
            await ask(box.send, lambda reply: reply)


async def test_offer_delivers_at_once_when_there_is_room_and_declines_when_full_counting_no_rejection():
    from reactor.mailbox import Mailbox, MailboxClosed

    box: Mailbox[int] = Mailbox("offer", 2)
    assert box.offer(1) and box.offer(2)
    assert not box.offer(3)  # full: the caller sends (and waits) instead
    stats = box.statistics()
    assert [box.receive_nowait(), box.receive_nowait()] == [1, 2]
    assert (stats.sent, stats.rejected) == (2, 0)
    box.close()
    try:
        box.offer(4)
    except MailboxClosed:
        pass
    else:
        raise AssertionError("offer on a closed mailbox did not raise")
