"""Consent is checked when a delivery goes out, not only when it is accepted (issue 7, item 8).

A whole node runs under MockClock; submissions go through Ingress directly (as in
tests/users/test_quiet_hours_check.py). Each test holds a delivery (quiet hours, a
retry, the dead-letter queue), changes the user's preferences while it waits, and
checks what happens when it goes out: a delivery the user no longer allows is recorded
`failed` with the reason Ingress would give and never reaches the provider.

The channel clients here only record their calls: a call is the provider being asked
to send, which is exactly what must not happen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from zoneinfo import ZoneInfo

import httpx
import pytest
import trio

from protocol.api import NotificationRequest
from protocol.channels import Channel, Priority
from protocol.content import Content, EmailContent, Recipient, SmsContent
from protocol.messages import Delivery, Outcome, RetryLater, Sent
from protocol.preferences import ChannelSwitches, ContactPoints, Preferences, QuietHours
from protocol.problems import Problem
from reactor.clock import parse_iso, wall_ms
from reactor.ports import DlqFilter
from tests.helpers import running_node

ZONE = "Asia/Kolkata"  # no DST
USER = "night-owl"
CONTACT = ContactPoints(email="owl@example.org", phone="+15555550142")


@pytest.fixture
def clock(mock_clock):
    mock_clock.autojump_threshold = 0.03  # the node's SQLite and file I/O runs in threads
    return mock_clock


class Calls:
    """A channel client that records every call and answers from a script (then Sent)."""

    def __init__(self, *script: Outcome) -> None:
        self.script = list(script)
        self.calls: list[Delivery] = []

    async def send(self, delivery: Delivery) -> Outcome:
        self.calls.append(delivery)
        return self.script.pop(0) if self.script else Sent()

    def ids(self) -> list[str]:
        return [d.notification_id for d in self.calls]


@asynccontextmanager
async def node(tmp_path, **clients: Calls) -> AsyncIterator[tuple]:
    chosen = {Channel(name): client for name, client in clients.items()}
    async with running_node(tmp_path, clients=chosen, max_attempts=2) as herald:
        async with trio.open_nursery() as nursery:

            async def tick() -> None:  # simulated time moves at most 30 s per jump, never past a step of the test
                while True:
                    await trio.sleep(30)

            nursery.start_soon(tick)
            yield herald
            nursery.cancel_scope.cancel()


def hhmm(moment: dt.datetime) -> str:
    return f"{moment.hour:02d}:{moment.minute:02d}"


def quiet_now(minutes_left: int = 30) -> QuietHours:
    """A quiet window on the user's clock that opened an hour ago and ends in about `minutes_left` minutes."""
    local = dt.datetime.fromtimestamp(wall_ms() / 1000, ZoneInfo(ZONE))
    return QuietHours(hhmm(local - dt.timedelta(hours=1)), hhmm(local + dt.timedelta(minutes=minutes_left)))


def prefs(**changes) -> Preferences:
    return Preferences(contact=CONTACT, timezone=ZONE, **changes)


def email(category: str | None = "marketing", priority: Priority = Priority.NORMAL, to: Recipient | None = None) -> NotificationRequest:
    return NotificationRequest(user_id=USER, channels=[Channel.EMAIL], content=Content(email=EmailContent("Sale", text="50% off")), to=to,
                               category=category, priority=priority)


def sms(priority: Priority = Priority.NORMAL) -> NotificationRequest:
    return NotificationRequest(user_id=USER, channels=[Channel.SMS], content=Content(sms=SmsContent("hello")), priority=priority)


async def accept(herald, request: NotificationRequest) -> str:
    receipt = await herald.ingress.accept(request)
    assert not isinstance(receipt, Problem), receipt
    return receipt.notification_id


async def status(herald, nid: str, channel: Channel) -> tuple[str, str]:
    """(status, detail of the channel's last event)."""
    rows = {r.channel: r.status for r in await herald.logstore.statuses(nid)}
    last = [e for e in await herald.logstore.events(nid) if e.channel == channel.value][-1]
    return rows[channel.value], last.detail


async def wait_status(herald, nid: str, channel: Channel, wanted: str, seconds: float) -> tuple[str, str]:
    with trio.move_on_after(seconds):
        while (current := await status(herald, nid, channel))[0] != wanted:
            await trio.sleep(1)
        return current
    raise AssertionError(f"{nid} {channel.value} not {wanted} after {seconds} simulated s: {await status(herald, nid, channel)}")


async def held_until(herald, nid: str, channel: Channel) -> int:
    state, detail = await status(herald, nid, channel)
    assert state == "queued" and detail.startswith("quiet hours until "), (state, detail)
    return parse_iso(detail.removeprefix("quiet hours until "))


async def past(until_ms: int) -> None:
    """Sleep (simulated) until a minute after `until_ms`."""
    await trio.sleep((until_ms - wall_ms()) / 1000 + 60)


# -- held by quiet hours


async def test_a_held_marketing_email_is_not_sent_after_the_user_opts_out(tmp_path, clock) -> None:
    mail = Calls()
    async with node(tmp_path, email=mail) as herald:
        await herald.users.put_preferences(USER, prefs(quiet_hours=quiet_now()), wall_ms())
        held = await accept(herald, email())
        other = await accept(herald, email(category="billing"))  # not opted out of: still goes, at the window's end
        until = await held_until(herald, held, Channel.EMAIL)
        await herald.users.put_preferences(USER, prefs(quiet_hours=quiet_now(), opt_out=["marketing"]), wall_ms())
        await past(until)
        assert await wait_status(herald, held, Channel.EMAIL, "failed", 120) == ("failed", "opted out: marketing")
        await wait_status(herald, other, Channel.EMAIL, "delivered", 120)
        assert mail.ids() == [other]  # the opted-out one never reached the provider


async def test_a_held_sms_is_not_sent_after_the_user_turns_sms_off(tmp_path, clock) -> None:
    texts = Calls()
    async with node(tmp_path, sms=texts) as herald:
        await herald.users.put_preferences(USER, prefs(quiet_hours=quiet_now()), wall_ms())
        held = await accept(herald, sms())
        until = await held_until(herald, held, Channel.SMS)
        await herald.users.put_preferences(USER, prefs(quiet_hours=quiet_now(), channels=ChannelSwitches(sms=False)), wall_ms())
        await past(until)
        assert await wait_status(herald, held, Channel.SMS, "failed", 120) == ("failed", "sms turned off by the user")
        assert texts.calls == []


async def test_a_one_click_unsubscribe_while_held_stops_the_email(tmp_path, clock) -> None:
    mail = Calls()
    async with node(tmp_path, email=mail) as herald:
        await herald.users.put_preferences(USER, prefs(quiet_hours=quiet_now()), wall_ms())
        held = await accept(herald, email())
        until = await held_until(herald, held, Channel.EMAIL)
        # The user clicks the link of an earlier marketing email (the POST a mail client's one-click sends).
        link = herald.users.unsubscribe_url(USER, "marketing")
        async with httpx.AsyncClient(timeout=600) as client:
            answer = await client.post(link, data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200, answer.text
        await past(until)
        assert await wait_status(herald, held, Channel.EMAIL, "failed", 120) == ("failed", "opted out: marketing")
        assert mail.calls == []


async def test_a_held_email_goes_to_the_contact_point_of_when_it_goes_out_unless_the_send_gave_to(tmp_path, clock) -> None:
    mail = Calls()
    async with node(tmp_path, email=mail) as herald:
        await herald.users.put_preferences(USER, prefs(quiet_hours=quiet_now()), wall_ms())
        moved = await accept(herald, email(category=None))
        given = await accept(herald, email(category=None, to=Recipient(email="given@example.org")))
        until = await held_until(herald, moved, Channel.EMAIL)
        await herald.users.put_preferences(
            USER, Preferences(contact=ContactPoints(email="new@example.org"), timezone=ZONE, quiet_hours=quiet_now()), wall_ms(),
        )
        await past(until)
        await wait_status(herald, moved, Channel.EMAIL, "delivered", 120)
        await wait_status(herald, given, Channel.EMAIL, "delivered", 120)
        assert {d.notification_id: d.address for d in mail.calls} == {moved: "new@example.org", given: "given@example.org"}


async def test_a_held_email_whose_contact_point_is_gone_fails(tmp_path, clock) -> None:
    mail = Calls()
    async with node(tmp_path, email=mail) as herald:
        await herald.users.put_preferences(USER, prefs(quiet_hours=quiet_now()), wall_ms())
        held = await accept(herald, email(category=None))
        until = await held_until(herald, held, Channel.EMAIL)
        await herald.users.put_preferences(USER, Preferences(timezone=ZONE, quiet_hours=quiet_now()), wall_ms())  # no contact
        await past(until)
        assert await wait_status(herald, held, Channel.EMAIL, "failed", 120) == ("failed", "the user has no contact email any more")
        assert mail.calls == []


# -- retried, replayed


async def test_a_retry_after_the_user_opts_out_fails(tmp_path, clock) -> None:
    mail = Calls(RetryLater("provider busy", after_s=600))
    async with node(tmp_path, email=mail) as herald:
        await herald.users.put_preferences(USER, prefs(), wall_ms())
        nid = await accept(herald, email())
        with trio.fail_after(60):  # the first attempt went out and failed: a retry is due in 600 s
            while "attempt 1 failed" not in (await status(herald, nid, Channel.EMAIL))[1]:
                await trio.sleep(1)
        await herald.users.opt_out(USER, "marketing", wall_ms())
        await trio.sleep(700)
        assert await wait_status(herald, nid, Channel.EMAIL, "failed", 120) == ("failed", "opted out: marketing")
        assert mail.ids() == [nid]  # the first attempt only


async def test_a_dead_letter_replayed_after_the_user_opts_out_fails(tmp_path, clock) -> None:
    mail = Calls(RetryLater("down"), RetryLater("down"))
    async with node(tmp_path, email=mail) as herald:
        await herald.users.put_preferences(USER, prefs(), wall_ms())
        nid = await accept(herald, email())
        await wait_status(herald, nid, Channel.EMAIL, "dead_lettered", 600)  # max_attempts=2
        assert len(mail.calls) == 2
        await herald.users.opt_out(USER, "marketing", wall_ms())
        assert await herald.gateway.dead_letters.replay(DlqFilter(notification_id=nid)) == 1
        assert await wait_status(herald, nid, Channel.EMAIL, "failed", 120) == ("failed", "opted out: marketing")
        assert len(mail.calls) == 2  # the replay never reached the provider


# -- critical notifications keep their rules


async def test_critical_notifications_keep_their_rules(tmp_path, clock) -> None:
    """Opt-outs hold for every priority; quiet hours hold only non-critical ones, on a retry as on the first attempt."""
    mail = Calls(RetryLater("busy", after_s=600))
    texts = Calls(RetryLater("busy", after_s=600), RetryLater("busy", after_s=600))
    async with node(tmp_path, email=mail, sms=texts) as herald:
        await herald.users.put_preferences(USER, prefs(), wall_ms())
        opted = await accept(herald, email(priority=Priority.CRITICAL))
        code = await accept(herald, sms(priority=Priority.CRITICAL))
        normal = await accept(herald, sms())
        with trio.fail_after(60):
            while len(mail.calls) < 1 or len(texts.calls) < 2:
                await trio.sleep(1)
        # While the retries wait, the user opts out of marketing and quiet hours begin.
        await herald.users.put_preferences(USER, prefs(opt_out=["marketing"], quiet_hours=quiet_now(90)), wall_ms())
        await trio.sleep(700)
        assert await wait_status(herald, opted, Channel.EMAIL, "failed", 120) == ("failed", "opted out: marketing")
        await wait_status(herald, code, Channel.SMS, "delivered", 120)  # critical: no quiet hours, on a retry too
        until = await held_until(herald, normal, Channel.SMS)  # the normal one's retry waits for the window's end
        assert until > wall_ms()
        assert texts.ids().count(normal) == 1
        await past(until)
        await wait_status(herald, normal, Channel.SMS, "delivered", 120)
        assert texts.ids().count(normal) == 2 and texts.calls[-1].deferred
        assert len(mail.calls) == 1

