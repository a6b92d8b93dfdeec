"""Scheduled sends (issue 14, item 1) on a whole node under MockClock.

The run's wall clock starts at a chosen instant (a Saturday before a DST change) and moves
with Trio's MockClock, so a send scheduled for the user's 09:00 fires at the right simulated
instant in the user's own time zone, across the change. Submissions go through Ingress, and
cancellations through the service the DELETE route calls (tests/api/test_cancel_api.py drives
the routes over HTTP in real time). The channel clients record their calls and the instant of
each: a call is the provider being asked to send.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from actors.services.cancellation import cancel_notification
from protocol.api import LocalSendAt, NotificationRequest
from protocol.channels import Channel
from protocol.content import Content, EmailContent, Recipient, WebContent
from protocol.messages import Delivery, Outcome, Sent
from protocol.preferences import ContactPoints, Preferences
from protocol.problems import Problem
from reactor.clock import iso, parse_iso, use_wall_clock, wall_ms
from tests.helpers import running_node

NEW_YORK = "America/New_York"  # DST starts Sunday 2026-03-08 at 02:00 local (EST -05:00 -> EDT -04:00)
PARIS = "Europe/Paris"  # no change that weekend
BEFORE_THE_CHANGE = parse_iso("2026-03-08T06:30:00Z")  # Sunday 01:30 EST in New York, 07:30 CET in Paris
SUNDAY_08_NY = parse_iso("2026-03-08T12:00:00Z")  # 08:00 EDT: the users' 09:00 is 13:00Z


class StartsAt:
    """The run's wall clock: `start_ms` when Trio's clock reads 0, moving with it (MockClock)."""

    def __init__(self, start_ms: int) -> None:
        self.start_ns = start_ms * 1_000_000

    def now_ns(self) -> int:
        return self.start_ns + int(trio.current_time() * 1e9)


@pytest.fixture
def clock(mock_clock):
    mock_clock.autojump_threshold = 0.03  # the node's SQLite and file I/O runs in threads
    return mock_clock


class Calls:
    """A channel client that records every call, and when it came (wall ms)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Delivery, int]] = []

    async def send(self, delivery: Delivery) -> Outcome:
        self.calls.append((delivery, wall_ms()))
        return Sent()

    def of(self, nid: str) -> list[int]:
        return [at for d, at in self.calls if d.notification_id == nid]


@asynccontextmanager
async def node(tmp_path: Path, start_ms: int = SUNDAY_08_NY, **clients: Calls) -> AsyncIterator:
    use_wall_clock(StartsAt(start_ms - int(trio.current_time() * 1000)))
    chosen = {Channel(name): client for name, client in clients.items()}
    async with running_node(tmp_path, clients=chosen) as herald:
        yield herald


def mail(user: str, send_at: str | LocalSendAt, category: str | None = None) -> NotificationRequest:
    return NotificationRequest(
        user_id=user, channels=[Channel.EMAIL], content=Content(email=EmailContent("Digest", text="hi")),
        send_at=send_at, category=category, to=Recipient(email=f"{user}@example.org"),
    )


async def accept(herald, request: NotificationRequest) -> str:
    receipt = await herald.ingress.accept(request)
    assert not isinstance(receipt, Problem), receipt
    return receipt.notification_id


async def status(herald, nid: str, channel: Channel = Channel.EMAIL) -> tuple[str, str]:
    rows = {r.channel: r.status for r in await herald.logstore.statuses(nid)}
    last = [e for e in await herald.logstore.events(nid) if e.channel == channel.value][-1]
    return rows[channel.value], last.detail


async def sleep_until(at_ms: int, step_s: float = 30) -> None:
    """Sleep (simulated) until at_ms, waking every step_s: MockClock then jumps at most step_s at a time (a node's
    thread that runs long while the clock is idle cannot let it jump far past an instant under test)."""
    while (left_ms := at_ms - wall_ms()) > 0:
        await trio.sleep(min(left_ms / 1000, step_s))


async def skip_to(at_ms: int) -> None:
    """Sleep until at_ms in one jump (nothing under test happens before)."""
    await sleep_until(at_ms, step_s=math.inf)


async def wait_status(herald, nid: str, wanted: str, seconds: float = 120) -> None:
    with trio.move_on_after(seconds):
        while (await status(herald, nid))[0] != wanted:
            await trio.sleep(1)
        return
    raise AssertionError(f"{nid} not {wanted} after {seconds} simulated s: {await status(herald, nid)}")


async def user(herald, user_id: str, zone: str, **changes) -> None:
    prefs = Preferences(contact=ContactPoints(email=f"{user_id}@example.org"), timezone=zone, **changes)
    await herald.users.put_preferences(user_id, prefs, wall_ms())


def cancel(herald, nid: str):
    gw = herald.gateway
    return cancel_notification(nid, gw.store, gw.logstore, gw.recorder)


async def test_the_users_nine_oclock_fires_at_that_instant_in_each_zone_across_a_dst_change(tmp_path, clock) -> None:
    email = Calls()
    async with node(tmp_path, start_ms=BEFORE_THE_CHANGE, email=email) as herald:
        await user(herald, "ny", NEW_YORK)
        await user(herald, "paris", PARIS)
        ny = await accept(herald, mail("ny", LocalSendAt("09:00")))  # 01:30 EST there: today's 09:00, EDT by then
        paris = await accept(herald, mail("paris", LocalSendAt("09:00")))  # 07:30 CET there: 09:00 CET
        ny_due, paris_due = parse_iso("2026-03-08T13:00:00Z"), parse_iso("2026-03-08T08:00:00Z")
        assert await status(herald, ny) == ("scheduled", f"until {iso(ny_due)}")  # 13:00Z, not EST's 14:00Z
        assert await status(herald, paris) == ("scheduled", f"until {iso(paris_due)}")
        await skip_to(paris_due - 60_000)
        assert email.calls == [] and (await status(herald, paris))[0] == "scheduled"
        await sleep_until(paris_due + 60_000, step_s=2)  # small steps: MockClock jumps one per thread hop
        await wait_status(herald, paris, "delivered")
        [at] = email.of(paris)
        assert paris_due <= at < paris_due + 60_000
        assert email.of(ny) == [] and (await status(herald, ny))[0] == "scheduled"
        await skip_to(ny_due - 60_000)
        assert email.of(ny) == []
        await sleep_until(ny_due + 60_000, step_s=2)
        await wait_status(herald, ny, "delivered")
        [at] = email.of(ny)
        assert ny_due <= at < ny_due + 60_000
        timeline = [e.status for e in await herald.logstore.events(ny)]
        assert timeline[:2] == ["accepted", "scheduled"] and timeline[-1] == "delivered"


async def test_a_scheduled_send_is_cancelled_until_it_fires_and_never_sent(tmp_path, clock) -> None:
    email, web = Calls(), Calls()
    async with node(tmp_path, email=email, web=web) as herald:
        await user(herald, "ny", NEW_YORK)
        request = NotificationRequest(
            user_id="ny", channels=[Channel.EMAIL, Channel.WEB], send_at=LocalSendAt("09:00"),
            content=Content(email=EmailContent("Digest", text="hi"), web=WebContent("Digest", "hi")),
        )
        nid = await accept(herald, request)
        due = parse_iso("2026-03-08T13:00:00Z")
        await skip_to(due - 5 * 60_000)
        result = await cancel(herald, nid)
        assert result is not None and sorted(result.cancelled) == ["email", "web"] and result.already_gone == []
        assert await status(herald, nid) == ("cancelled", "cancelled (DELETE /v1/notifications/{id})")
        assert (await status(herald, nid, Channel.WEB))[0] == "cancelled"
        again = await cancel(herald, nid)  # a repeat answers the same
        assert again is not None and sorted(again.cancelled) == ["email", "web"]
        await skip_to(due - 60_000)
        await sleep_until(due + 10 * 60_000)
        assert email.calls == [] and web.calls == []
        assert (await status(herald, nid))[0] == "cancelled"
        assert [e.id for e in await herald.gateway.store.scheduled()] == []


async def test_after_it_fired_a_cancel_says_the_channel_has_gone(tmp_path, clock) -> None:
    email = Calls()
    async with node(tmp_path, email=email) as herald:
        due = wall_ms() + 3_600_000
        nid = await accept(herald, mail("u1", iso(due).replace("Z", "+00:00")))
        await skip_to(due - 60_000)
        await sleep_until(due + 60_000)
        await wait_status(herald, nid, "delivered")
        result = await cancel(herald, nid)
        assert result is not None and result.cancelled == []
        assert [(g.channel, g.status.value) for g in result.already_gone] == [("email", "delivered")]
        assert len(email.of(nid)) == 1
        assert await cancel(herald, "01J0000000000000000000000Z") is None


async def test_an_opt_out_after_scheduling_wins_at_fire_time(tmp_path, clock) -> None:
    email = Calls()
    async with node(tmp_path, email=email) as herald:
        await user(herald, "ny", NEW_YORK)
        nid = await accept(herald, mail("ny", LocalSendAt("09:00"), category="marketing"))
        await user(herald, "ny", NEW_YORK, opt_out=["marketing"])  # after scheduling, before it fires
        await skip_to(parse_iso("2026-03-08T12:59:00Z"))
        await sleep_until(parse_iso("2026-03-08T13:01:00Z"))
        await wait_status(herald, nid, "failed")
        assert (await status(herald, nid))[1] == "opted out: marketing"
        assert email.calls == []


async def test_quiet_hours_at_fire_time_hold_it_again(tmp_path, clock) -> None:
    email = Calls()
    async with node(tmp_path, email=email) as herald:
        from protocol.preferences import QuietHours
        await user(herald, "ny", NEW_YORK, quiet_hours=QuietHours("08:00", "10:00"))  # quiet now? no: 10:00 local is outside
        nid = await accept(herald, mail("ny", LocalSendAt("09:00")))  # scheduled inside the window: held again at fire time
        assert (await status(herald, nid))[0] == "scheduled"
        await skip_to(parse_iso("2026-03-08T12:59:00Z"))
        await sleep_until(parse_iso("2026-03-08T13:01:00Z"))
        await wait_status(herald, nid, "queued")
        assert (await status(herald, nid))[1] == f"quiet hours until {iso(parse_iso('2026-03-08T14:00:00Z'))}"
        assert email.calls == []
        await skip_to(parse_iso("2026-03-08T13:59:00Z"))
        await sleep_until(parse_iso("2026-03-08T14:01:00Z"))
        await wait_status(herald, nid, "delivered")
        assert len(email.of(nid)) == 1


async def short_jumps(step_s: float = 1.0, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Bound MockClock's jumps to step_s until cancelled (the scope is what `nursery.start` returns). Autojump goes to the
    next deadline whenever every task waits, a node's thread hop included: on a loaded machine a node that stops and
    starts again waits on threads long enough, and the next deadline may be a scheduled send's, hours away."""
    with trio.CancelScope() as scope:
        task_status.started(scope)
        while True:
            await trio.sleep(step_s)


async def test_a_restart_before_it_fires_still_fires_it_once(tmp_path, clock) -> None:
    email = Calls()
    due = SUNDAY_08_NY + 2 * 3_600_000
    async with trio.open_nursery() as nursery:
        ticking = await nursery.start(short_jumps)  # through the stop and the start: the instant must not be reached there
        async with node(tmp_path, email=Calls()) as herald:
            nid = await accept(herald, mail("u1", iso(due)))
        async with node(tmp_path, start_ms=wall_ms(), email=email) as herald:  # the same data dir, a new process's node
            assert (await status(herald, nid))[0] == "scheduled"
            ticking.cancel()
            await skip_to(due - 60_000)
            await sleep_until(due + 60_000)
            await wait_status(herald, nid, "delivered")
            await skip_to(due + 3_600_000)
            assert len(email.of(nid)) == 1


async def test_cancels_racing_the_fire_end_each_channel_cancelled_or_sent_never_both_never_neither(tmp_path, clock) -> None:
    """Notification i is due at base + i/2 s and cancelled at base + (count - i)/2 s: the first ones fire before their
    cancel, the last ones are cancelled before they are due, the middle one meets its cancel at the same instant.
    (tests/conformance/suites/store.py races cancels against claims on separate connections, without a clock.)"""
    email = Calls()
    count = 24
    async with node(tmp_path, email=email) as herald:
        base = wall_ms() + 600_000
        await skip_to(base - 60_000)
        nids = [await accept(herald, mail(f"u{i}", iso(base + i * 500))) for i in range(count)]
        answers: dict[str, bool] = {}

        async def cancel_one(i: int, nid: str) -> None:
            await sleep_until(base + (count - i) * 500)
            result = await cancel(herald, nid)
            assert result is not None
            answers[nid] = result.cancelled == ["email"]

        async with trio.open_nursery() as nursery:
            for i, nid in enumerate(nids):
                nursery.start_soon(cancel_one, i, nid)
        await sleep_until(base + 10 * 60_000)
        for nid in nids:
            sent = len(email.of(nid))
            final = (await status(herald, nid))[0]
            if answers[nid]:
                assert (sent, final) == (0, "cancelled"), nid
            else:
                assert (sent, final) == (1, "delivered"), nid
        assert 0 < sum(answers.values()) < count  # both outcomes met
        assert answers[nids[0]] is False and answers[nids[-1]] is True
        assert await herald.gateway.store.scheduled() == []


async def test_a_send_held_by_quiet_hours_is_cancelled_too(tmp_path, clock) -> None:
    from protocol.preferences import QuietHours

    email = Calls()
    async with node(tmp_path, email=email) as herald:
        await user(herald, "ny", NEW_YORK, quiet_hours=QuietHours("07:00", "10:00"))  # 08:00 EDT now: quiet
        request = NotificationRequest(user_id="ny", channels=[Channel.EMAIL], content=Content(email=EmailContent("Hi", text="hi")))
        nid = await accept(herald, request)
        until = parse_iso("2026-03-08T14:00:00Z")
        assert await status(herald, nid) == ("queued", f"quiet hours until {iso(until)}")
        result = await cancel(herald, nid)
        assert result is not None and result.cancelled == ["email"]
        await skip_to(until - 60_000)
        await sleep_until(until + 10 * 60_000)
        assert email.calls == [] and (await status(herald, nid))[0] == "cancelled"
