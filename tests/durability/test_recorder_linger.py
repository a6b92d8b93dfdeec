"""The Recorder's group commit: the messages of its callers that arrive within `linger_s` of the
first share one plan and one transaction, none waits more than the linger (and the write before
it), and a lone caller is written at once (MockClock; the log store's write takes WRITE_S)."""

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
WRITE_S = 0.001


class SlowLogStore(ModelLogStore):
    """The model log store, whose apply takes WRITE_S (a transaction's fsync)."""

    async def apply(self, plan: Any) -> None:
        await trio.sleep(WRITE_S)
        await super().apply(plan)


def record(i: int) -> tuple[RecordEvents, Reply[Any]]:
    reply: Reply[Any] = Reply()
    event = StatusEvent(make_notification_id(T0 + i, i), "u1", Channel.SMS, Status.DELIVERED, T0 + i, created_ms=T0, priority=Priority.HIGH)
    return RecordEvents((event,), (), reply), reply


async def callers_spread_over(linger_s: float, callers: int, gap_s: float) -> tuple[Recorder, list[float]]:
    """`callers` consumers asking the Recorder one after another, `gap_s` apart; the Recorder and each one's wait."""
    store = SlowLogStore()
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


async def test_callers_within_the_linger_share_transactions(autojump_clock: trio.testing.MockClock) -> None:
    lingering, waits = await callers_spread_over(linger_s=0.005, callers=40, gap_s=0.0005)
    at_once, _ = await callers_spread_over(linger_s=0.0, callers=40, gap_s=0.0005)
    assert lingering.transactions < at_once.transactions < 40  # queued behind a write, then lingering: fewer still
    assert lingering.transactions <= 40 * 0.0005 / 0.005 + 3
    assert max(waits) <= 0.005 + 2 * WRITE_S + 1e-9


async def test_a_lone_caller_is_written_at_once(autojump_clock: trio.testing.MockClock) -> None:
    recorder, waits = await callers_spread_over(linger_s=0.005, callers=5, gap_s=0.02)  # one at a time
    assert recorder.transactions == 5
    assert waits == pytest.approx([WRITE_S] * 5)
