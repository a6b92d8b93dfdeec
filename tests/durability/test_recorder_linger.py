"""The Recorder's group commit: the messages of its callers that arrive within `linger_s` of the
first share one plan and one transaction, and a lone message waits the linger and no more (MockClock)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors.messages import RecordEvents
from actors.recorder import Recorder
from protocol.channels import Channel, Priority
from protocol.ids import make_notification_id
from protocol.lifecycle import Status
from protocol.messages import StatusEvent
from reactor.ask import Reply
from reactor.mailbox import Mailbox
from tests.actors.model_log_store import ModelLogStore

pytestmark = pytest.mark.trio

T0 = 1_704_067_200_000


def record(i: int) -> tuple[RecordEvents, Reply[Any]]:
    reply: Reply[Any] = Reply()
    event = StatusEvent(make_notification_id(T0 + i, i), "u1", Channel.SMS, Status.DELIVERED, T0 + i, created_ms=T0, priority=Priority.HIGH)
    return RecordEvents((event,), (), reply), reply


async def callers_spread_over(linger_s: float, callers: int, gap_s: float) -> tuple[Recorder, list[float]]:
    """`callers` consumers asking the Recorder one after another, `gap_s` apart; the Recorder and each one's wait."""
    store = ModelLogStore()
    mailbox: Mailbox[Any] = Mailbox("recorder", 64)
    recorder = Recorder(store, mailbox, batch=2000, linger_s=linger_s)
    waits: list[float] = []

    async def ask(i: int) -> None:
        message, reply = record(i)
        start = trio.current_time()
        await mailbox.send(message)
        await reply.wait()
        waits.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(recorder.run)
        async with trio.open_nursery() as asking:
            for i in range(callers):
                asking.start_soon(ask, i)
                await trio.sleep(gap_s)
        mailbox.close()
    assert recorder.events_written == callers
    return recorder, waits


async def test_callers_within_the_linger_share_one_transaction(autojump_clock: trio.testing.MockClock) -> None:
    recorder, waits = await callers_spread_over(linger_s=0.005, callers=8, gap_s=0.0005)
    assert recorder.transactions == 1  # 8 callers over 4 ms: one plan, one transaction
    assert max(waits) <= 0.005 + 1e-9


async def test_without_a_linger_each_caller_alone_is_written_at_once(autojump_clock: trio.testing.MockClock) -> None:
    recorder, waits = await callers_spread_over(linger_s=0.0, callers=8, gap_s=0.0005)
    assert recorder.transactions == 8
    assert max(waits) == 0


async def test_the_linger_is_bounded_while_callers_keep_coming(autojump_clock: trio.testing.MockClock) -> None:
    recorder, waits = await callers_spread_over(linger_s=0.003, callers=100, gap_s=0.0005)
    assert 1 < recorder.transactions < 100  # batches are cut at the linger, not when traffic stops
    assert max(waits) <= 0.003 + 1e-9
