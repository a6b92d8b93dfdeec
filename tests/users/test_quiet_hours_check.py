"""THE CHECK of issue 4: quiet hours defer a normal notification and pass a critical one (under MockClock).

A whole node runs under MockClock; submissions go through Ingress directly (as in
tests/faults/), since simulated time would outrun an HTTP client's own timeouts. The
user's quiet window is put around "now" on their clock in Kolkata (UTC+05:30). The critical
notification is delivered at once; the normal one waits in the Scheduler (durably, also
across a restart), recorded `queued` with "quiet hours until <iso>", and is delivered
when the window ends on the user's clock, not a moment before.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio

from protocol.api import NotificationRequest
from protocol.channels import Channel, Priority
from protocol.content import Content, PushContent, SmsContent
from protocol.preferences import ContactPoints, Platform, Preferences, QuietHours
from protocol.problems import Problem
from reactor.clock import parse_iso, wall_ms
from tests.helpers import running_node

ZONE = "Asia/Kolkata"  # no DST: the window around "now" is exactly as long every day of the year


@pytest.fixture
def clock(mock_clock):
    mock_clock.autojump_threshold = 0.03  # see tests/faults/test_provider_faults.py
    return mock_clock


def hhmm(moment: dt.datetime) -> str:
    return f"{moment.hour:02d}:{moment.minute:02d}"


def notification(priority: Priority) -> NotificationRequest:
    return NotificationRequest(
        user_id="night-owl", channels=[Channel.SMS, Channel.PUSH], content=Content(sms=SmsContent("hello"), push=PushContent("hello")), priority=priority,
    )


async def night_owl_in_quiet_hours(herald: Any) -> QuietHours:
    """night-owl: a phone number and an iPhone, quiet hours from an hour ago to two hours from now on ZONE's clock."""
    local_now = dt.datetime.fromtimestamp(wall_ms() / 1000, ZoneInfo(ZONE))
    window = QuietHours(hhmm(local_now - dt.timedelta(hours=1)), hhmm(local_now + dt.timedelta(hours=2)))
    prefs = Preferences(contact=ContactPoints(phone="+15555550142"), timezone=ZONE, quiet_hours=window)
    await herald.users.put_preferences("night-owl", prefs, wall_ms())
    await herald.users.add_device("night-owl", Platform.APNS, "owl-phone", wall_ms())
    return window


async def channel_statuses(herald, nid: str) -> dict[str, tuple[str, str, int]]:
    """channel -> (status, detail of the last event, at_ms of the last event)."""
    rows = {r.channel: r.status for r in await herald.logstore.statuses(nid)}
    events = await herald.logstore.events(nid)
    last = {e.channel: e for e in events}
    return {ch: (status, last[ch].detail, last[ch].at_ms) for ch, status in rows.items()}


def sent_to_sinks(herald) -> set[str]:
    ids = set()
    for name in ("sms.jsonl", "push.jsonl"):
        path = herald.config.data_dir / name
        if path.exists():
            ids |= {json.loads(line)["notification_id"] for line in path.read_text().splitlines()}
    return ids


async def wait_for(herald, nid: str, status: str, seconds: float) -> dict[str, tuple[str, str, int]]:
    with trio.move_on_after(seconds):
        while True:
            current = await channel_statuses(herald, nid)
            if current and all(s == status for s, _, _ in current.values()):
                return current
            await trio.sleep(1)
    raise AssertionError(f"{nid} not {status} after {seconds} simulated s: {await channel_statuses(herald, nid)}")


async def test_quiet_hours_defer_a_normal_notification_and_pass_a_critical_one(tmp_path, clock) -> None:
    async with running_node(tmp_path) as herald:
        window = await night_owl_in_quiet_hours(herald)

        normal = await herald.ingress.accept(notification(Priority.NORMAL))
        critical = await herald.ingress.accept(notification(Priority.CRITICAL))
        assert not isinstance(normal, Problem) and not isinstance(critical, Problem)
        submitted = wall_ms()

        # The critical one goes through at once ...
        await wait_for(herald, critical.notification_id, "delivered", 30)
        assert critical.notification_id in sent_to_sinks(herald)
        # ... the normal one waits for the end of the window, on the user's clock.
        held = await channel_statuses(herald, normal.notification_id)
        assert {ch: s for ch, (s, _, _) in held.items()} == {"sms": "queued", "push": "queued"}
        details = {detail for _, detail, _ in held.values()}
        assert len(details) == 1 and details.pop().startswith("quiet hours until ")
        until = parse_iso(held["sms"][1].removeprefix("quiet hours until "))
        assert 0 < until - submitted <= 2 * 3600_000  # the window ends within two hours of now
        ends = dt.datetime.fromtimestamp(until / 1000, ZoneInfo(ZONE))
        assert hhmm(ends) == window.end and ends.second == 0
        assert normal.notification_id not in sent_to_sinks(herald)
        assert len(await herald.store.scheduled()) == 2

        # A minute before the window ends, still held.
        await trio.sleep((until - wall_ms()) / 1000 - 60)
        assert {s for s, _, _ in (await channel_statuses(herald, normal.notification_id)).values()} == {"queued"}
        assert normal.notification_id not in sent_to_sinks(herald)

        # Once it ends, delivered: after the end of the window, never before.
        delivered = await wait_for(herald, normal.notification_id, "delivered", 120)
        assert all(at >= until for _, _, at in delivered.values())
        assert normal.notification_id in sent_to_sinks(herald)
        assert await herald.store.scheduled() == []


async def test_a_deferred_notification_survives_a_restart(tmp_path, clock) -> None:
    async with running_node(tmp_path) as herald:
        local_now = dt.datetime.fromtimestamp(wall_ms() / 1000, ZoneInfo(ZONE))
        window = QuietHours(hhmm(local_now - dt.timedelta(hours=1)), hhmm(local_now + dt.timedelta(minutes=30)))
        prefs = Preferences(contact=ContactPoints(phone="+15555550142"), timezone=ZONE, quiet_hours=window)
        await herald.users.put_preferences("night-owl", prefs, wall_ms())
        await herald.users.add_device("night-owl", Platform.FCM, "owl-tablet", wall_ms())
        normal = await herald.ingress.accept(notification(Priority.LOW))
        assert not isinstance(normal, Problem)
        assert len(await herald.store.scheduled()) == 2
        held = await channel_statuses(herald, normal.notification_id)
        until = parse_iso(held["push"][1].removeprefix("quiet hours until "))
        entries = await herald.store.scheduled()
        assert sorted(e.id for e in entries) == [f"quiet:{normal.notification_id}:push", f"quiet:{normal.notification_id}:sms"]
    async with running_node(tmp_path) as herald:
        assert len(await herald.store.scheduled()) == 2  # still pending in the store
        assert normal.notification_id not in sent_to_sinks(herald)
        await trio.sleep((until - wall_ms()) / 1000 - 1)
        assert normal.notification_id not in sent_to_sinks(herald)
        await wait_for(herald, normal.notification_id, "delivered", 120)
        assert normal.notification_id in sent_to_sinks(herald)
        # The Scheduler produces at least once: a second copy (a crash between its produce and
        # its unschedule) is stopped by the send ledger, not sent again.
        await herald.bus.produce([(e.topic, e.key, e.value) for e in entries])
        with trio.fail_after(60):
            while herald.providers[Channel.SMS].suppressed + herald.providers[Channel.PUSH].suppressed < 2:
                await trio.sleep(1)
        assert herald.providers[Channel.SMS].calls == 1 and herald.providers[Channel.PUSH].calls == 1
