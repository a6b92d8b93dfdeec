"""Digests (issue 14, items 2 and 4) on a whole node under MockClock.

The run's wall clock starts at a chosen instant and moves with Trio's MockClock (as in
test_scheduled_sends.py, whose helpers these are); sends naming a digest go through the
Ingress, and the channel clients record each call and its instant. The pure window rules are
property-tested in test_digest_windows.py; the Store's operations in the conformance suite.
"""

from __future__ import annotations

import msgspec
import pytest
import trio

from actors.domain.digests import digest_notification_id
from protocol.api import NotificationRequest
from protocol.channels import Channel, Priority
from protocol.content import Recipient
from protocol.digests import DigestSpec, Window
from protocol.problems import Problem
from protocol.template_schemas import EmailPart, Parts, TemplateSpec
from reactor.clock import iso, parse_iso, wall_ms
from tests.users.test_scheduled_sends import NEW_YORK, PARIS, Calls, cancel, node, skip_to, sleep_until, status, user

START = parse_iso("2026-03-07T12:00:00Z")  # Saturday: New York's DST starts Sunday 02:00, Paris's three weeks later
SLIDING = Window("sliding", after_quiet="10m", max_wait="2h")


@pytest.fixture
def clock(mock_clock):
    mock_clock.autojump_threshold = 0.03  # the node's SQLite and file I/O runs in threads
    return mock_clock


COMMENTS = TemplateSpec(
    locales={
        "en": Parts(email=EmailPart(
            subject="{{count}} new comments", text="{{#events}}* {{author}}: {{text}}\n{{/events}}first {{first.author}}, last {{last.author}}",
        )),
        "fr": Parts(email=EmailPart(
            subject="{{count}} nouveaux commentaires", text="{{#events}}* {{author}} a écrit : {{text}}\n{{/events}}",
        )),
    },
    default_locale="en",
)


async def with_template(herald) -> None:
    await herald.templates.create("comments", COMMENTS)


def comment(user_id: str, n: int, window: Window = SLIDING, **changes) -> NotificationRequest:
    return NotificationRequest(
        user_id=user_id, channels=[Channel.EMAIL], template_id="comments", data={"author": f"a{n}", "text": f"comment {n}"},
        digest=DigestSpec("comments", window), to=Recipient(email=f"{user_id}@example.org"), **changes,
    )


async def steady(work, *args):
    """await work(*args) while a task sleeps in half-second steps: MockClock jumps when every task waits, a thread's
    SQLite call included, to the next deadline; with this one it is half a second on, never a digest's due time."""
    result = []

    async def tick() -> None:
        while True:
            await trio.sleep(0.5)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        result.append(await work(*args))
        nursery.cancel_scope.cancel()
    return result[0]


async def accept(herald, request: NotificationRequest) -> str:
    receipt = await steady(herald.ingress.accept, request)
    assert not isinstance(receipt, Problem), receipt
    return receipt.notification_id


async def windows(herald, user_id: str):
    return (await steady(herald.digests.pending, user_id)).items


async def fired_at(herald, first_nid: str) -> int | None:
    """When the window whose first event is `first_nid` fired: its notification's `accepted` step (the Digester's instant).

    Measured there, not at the provider: every thread the pipeline waits on lets MockClock jump to the next deadline,
    so the provider's call comes a few such jumps later in simulated time."""
    events = await steady(herald.logstore.events, digest_notification_id(first_nid))
    return events[0].at_ms if events else None


async def wait_calls(email: Calls, count: int, seconds: float = 600) -> None:
    with trio.move_on_after(seconds):
        while len(email.calls) < count:
            await trio.sleep(1)
        return
    raise AssertionError(f"{len(email.calls)} calls after {seconds} simulated s, not {count}")


async def test_a_sliding_digest_of_50_events_is_one_email_listing_50_items_in_the_users_locale(tmp_path, clock) -> None:
    """The issue's check: 50 comments a minute apart, the window fires 10 minutes after the last (max_wait 2h not reached)."""
    email = Calls()
    async with node(tmp_path, start_ms=START, email=email) as herald:
        await with_template(herald)
        await user(herald, "amelie", PARIS, locale="fr-FR")
        nids = []
        for n in range(50):
            nids.append(await accept(herald, comment("amelie", n, window=Window("sliding", after_quiet="10m", max_wait="3h"))))
            await trio.sleep(60)
        [pending] = (await windows(herald, "amelie"))
        last_at = parse_iso(pending.last_at)  # the 50th event's instant (MockClock may have moved during an accept)
        assert START + 49 * 60_000 <= last_at < START + 50 * 60_000
        assert (pending.count, pending.fires_at, pending.firing) == (50, iso(last_at + 600_000), False)
        await skip_to(last_at + 600_000 - 30_000)
        assert email.calls == [] and await fired_at(herald, nids[0]) is None
        await sleep_until(last_at + 600_000 + 60_000, step_s=2)
        await wait_calls(email, 1)
        [(delivery, _)] = email.calls
        fired = await fired_at(herald, nids[0])
        assert fired is not None and last_at + 600_000 <= fired < last_at + 630_000
        assert delivery.content.email.subject == "50 nouveaux commentaires"
        lines = delivery.content.email.text.splitlines()
        assert lines == [f"* a{n} a écrit : comment {n}" for n in range(50)]
        carried = digest_notification_id(nids[0])
        assert delivery.notification_id == carried
        for nid in (nids[0], nids[-1]):
            assert await status(herald, nid) == ("digested", f"in {carried}")  # the event points to what carried it
        assert (await windows(herald, "amelie")) == []


async def test_each_kind_of_window_fires_at_its_instant(tmp_path, clock) -> None:
    email = Calls()
    async with node(tmp_path, start_ms=START, email=email) as herald:
        await with_template(herald)
        await user(herald, "fixed", "UTC")
        await user(herald, "daily", NEW_YORK)
        await user(herald, "slide", "UTC")
        fixed = await accept(herald, comment("fixed", 1, Window("fixed", every="1h")))
        daily = await accept(herald, comment("daily", 1, Window("daily", at="08:00")))  # 07:00 EST now: 08:00 EST is 13:00Z
        slides = [await accept(herald, comment("slide", 1, Window("sliding", after_quiet="5m", max_wait="20m")))]
        # then an event every minute, half a minute off the windows' instants. MockClock jumps to the next deadline
        # whenever the node's threads keep every task waiting 30 ms (on a loaded machine, each fsync), so a window's
        # fire lands up to one sleep step per thread hop after its instant: 10 s steps made that 65 s under load. The
        # steps are 2 s over the minute before each instant under test (20:00, 28:30, the hour), 10 s elsewhere.
        for minute in range(1, 30):  # the sliding window fires at its max_wait
            await sleep_until(START + 30_000 + (minute - 1) * 60_000, step_s=2 if minute in (21, 29) else 10)
            if minute < 25:
                slides.append(await accept(herald, comment("slide", 1 + minute, Window("sliding", after_quiet="5m", max_wait="20m"))))
            if minute == 30 - 1:
                await accept(herald, comment("fixed", 2, Window("fixed", every="1h")))  # inside the same fixed window
        hour = START + 3_600_000  # the fixed window's instant, and 08:00 EST (the daily one's)
        await sleep_until(START + 29 * 60_000 + 30_000, step_s=2)  # the minute after 28:30, before the jump
        await skip_to(hour - 60_000)
        await sleep_until(hour + 60_000, step_s=2)
        await wait_calls(email, 4)
        # the sliding window: at its max_wait, 21 events (minutes 0 to 19.5); the later ones (20.5 to 23.5) opened the
        # next window, fired 5 minutes after its last event
        windows_fired = {
            "slide": (await fired_at(herald, slides[0]), START + 20 * 60_000),
            "slide again": (await fired_at(herald, slides[21]), START + 28 * 60_000 + 30_000),
            "fixed": (await fired_at(herald, fixed), hour),
            "daily": (await fired_at(herald, daily), hour),
        }
        for name, (fired, due) in windows_fired.items():
            assert fired is not None and due <= fired < due + 30_000, (name, fired, due)
        subjects = {d.notification_id: d.content.email.subject for d, _ in email.calls}
        assert [subjects[digest_notification_id(n)] for n in (slides[0], slides[21], fixed, daily)] == [
            "21 new comments", "4 new comments", "2 new comments", "1 new comments",
        ]
        assert len(email.calls) == 4


async def test_a_daily_digest_follows_the_users_clock_and_quiet_hours_across_dst_in_two_zones(tmp_path, clock) -> None:
    """08:00 every day for New York (DST starts Sunday 8 March) and Paris (29 March); a Paris user quiet until 09:00."""
    from protocol.preferences import QuietHours

    email = Calls()
    daily = Window("daily", at="08:00")
    async with node(tmp_path, start_ms=START + 2 * 3_600_000, email=email) as herald:
        await with_template(herald)
        await user(herald, "ny", NEW_YORK)
        await user(herald, "paris", PARIS, quiet_hours=QuietHours("22:00", "09:00"))
        # Saturday 14:00Z (09:00 EST, 15:00 CET): an event each; both windows fire on Sunday
        ny = await accept(herald, comment("ny", 1, daily))
        paris = await accept(herald, comment("paris", 1, daily))
        ny_due = parse_iso("2026-03-08T12:00:00Z")  # 08:00 EDT (the change came in the night)
        paris_due = parse_iso("2026-03-08T08:00:00Z")  # 09:00 CET: the end of quiet hours, not 08:00
        shown = {p.key: p.fires_at for p in (await windows(herald, "ny"))}
        assert shown == {"comments": iso(ny_due)}
        assert [p.fires_at for p in (await windows(herald, "paris"))] == [iso(paris_due)]
        await skip_to(paris_due - 60_000)
        assert email.calls == []
        await sleep_until(paris_due + 60_000, step_s=2)
        await wait_calls(email, 1)
        fired = await fired_at(herald, paris)
        assert [d.user_id for d, _ in email.calls] == ["paris"] and fired is not None and paris_due <= fired < paris_due + 30_000
        await skip_to(ny_due - 60_000)
        await sleep_until(ny_due + 60_000, step_s=2)
        await wait_calls(email, 2)
        fired = await fired_at(herald, ny)
        assert email.calls[1][0].user_id == "ny" and fired is not None and ny_due <= fired < ny_due + 30_000


async def test_a_critical_event_flushes_the_digest_at_once_with_what_it_collected(tmp_path, clock) -> None:
    email = Calls()
    async with node(tmp_path, start_ms=START, email=email) as herald:
        await with_template(herald)
        await user(herald, "u", "UTC")
        for n in range(3):
            await accept(herald, comment("u", n, Window("fixed", every="1h")))
        await trio.sleep(60)
        await accept(herald, comment("u", 3, Window("fixed", every="1h"), priority=Priority.CRITICAL))
        flushed = wall_ms()
        await wait_calls(email, 1, seconds=60)
        [(delivery, at)] = email.calls
        assert at < flushed + 60_000 and delivery.content.email.subject == "4 new comments"
        assert delivery.priority is Priority.CRITICAL


async def test_a_users_override_chooses_daily_instead_of_hourly(tmp_path, clock) -> None:
    email = Calls()
    async with node(tmp_path, start_ms=START, email=email) as herald:
        await with_template(herald)
        await user(herald, "u", "UTC", digests={"comments": Window("daily", at="18:00")})
        await accept(herald, comment("u", 1, Window("fixed", every="1h")))
        [pending] = (await windows(herald, "u"))
        assert pending.fires_at == iso(parse_iso("2026-03-07T18:00:00Z"))
        await sleep_until(START + 2 * 3_600_000, step_s=600)
        assert email.calls == []


async def test_a_cancel_races_the_digest_firing_each_event_cancelled_or_sent_never_both(tmp_path, clock) -> None:
    """User i's window fires at base + i/2 s; each user's one event is cancelled at base + (count - i)/2 s."""
    email = Calls()
    count = 24
    async with node(tmp_path, start_ms=START, email=email) as herald:
        await with_template(herald)
        base = START + 600_000
        nids = []
        for i in range(count):
            await user(herald, f"u{i}", "UTC")
        for i in range(count):
            await sleep_until(START + i * 500)
            nids.append(await accept(herald, comment(f"u{i}", i, Window("sliding", after_quiet="10m", max_wait="10m"))))
        answers: dict[str, bool] = {}

        async def cancel_one(i: int, nid: str) -> None:
            await sleep_until(base + (count - i) * 500)
            result = await steady(cancel, herald, nid)
            assert result is not None
            answers[nid] = result.cancelled == ["email"]

        async with trio.open_nursery() as nursery:
            for i, nid in enumerate(nids):
                nursery.start_soon(cancel_one, i, nid)
        await sleep_until(base + 10 * 60_000)
        sent = {d.user_id for d, _ in email.calls}
        for i, nid in enumerate(nids):
            final = (await status(herald, nid))[0]
            if answers[nid]:
                assert (f"u{i}" in sent, final) == (False, "cancelled"), nid
            else:
                assert (f"u{i}" in sent, final) == (True, "digested"), nid
        assert len(email.calls) == len(sent)  # one digest per user at most
        assert 0 < sum(answers.values()) < count
        for i in range(count):
            assert (await windows(herald, f"u{i}")) == []


async def test_bad_digests_are_refused_naming_the_field(tmp_path, clock) -> None:
    async with node(tmp_path, start_ms=START) as herald:
        await with_template(herald)
        cases = {
            "digest.window.kind": Window("weekly"),
            "digest.window.every": Window("fixed", every="1 hour"),
            "digest.window.after_quiet": Window("sliding", after_quiet="2d", max_wait="3d"),
            "digest.window.max_wait": Window("sliding", after_quiet="10m", max_wait="5m"),
            "digest.window.at": Window("daily", at="8am"),
        }
        for field, window in cases.items():
            result = await herald.ingress.accept(comment("u", 1, window))
            assert isinstance(result, Problem) and result.status == 422, (field, result)
            assert [e.field for e in result.errors] == [field], result
        inline = msgspec.structs.replace(comment("u", 1), template_id=None)
        result = await herald.ingress.accept(inline)
        assert isinstance(result, Problem) and result.status == 422


class DiesBeforeFinishing:
    """A Store through which a Digester dies (as by kill -9) after its digest is on the bus, before removing the window."""

    def __init__(self, store) -> None:
        self.store = store

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    async def finish_digest(self, fire_id: str) -> None:
        raise RuntimeError("killed before finish_digest")


async def test_a_digester_dying_after_producing_leaves_the_window_to_be_fired_again_and_sent_once(tmp_path, clock) -> None:
    from actors.digester import Digester

    email = Calls()
    async with node(tmp_path, start_ms=START, email=email) as herald:
        await with_template(herald)
        await user(herald, "u", "UTC")
        nids = [await accept(herald, comment("u", n, Window("fixed", every="1h"))) for n in range(3)]
        due = START + 3_600_000
        real = herald.digester
        dead = Digester(DiesBeforeFinishing(real.store), real.planner, owner="dead-node", lease_s=30)
        [fire] = await steady(real.store.claim_digests, "dead-node", due, 10, 30_000)  # it claimed at the window's due time
        with pytest.raises(BaseExceptionGroup) as died:
            await steady(dead._fire, fire)  # the digest is on the bus (sent now: its record is not held), the window is not removed
        assert died.group_contains(RuntimeError, match="killed before finish_digest")
        await wait_calls(email, 1)
        [(window)] = await windows(herald, "u")
        assert window.firing and window.count == 3
        await skip_to(due - 60_000)
        await sleep_until(due + 29_000, step_s=2)
        assert [w.firing for w in await windows(herald, "u")] == [True], "leased to the dead node until due + 30 s"
        with trio.fail_after(600):  # then the node's Digester claims it and fires it again
            while await windows(herald, "u"):
                await trio.sleep(10)
        assert real.fired == 1
        carried = digest_notification_id(nids[0])
        assert [d.notification_id for d, _ in email.calls] == [carried], "one provider call: the ledger stopped the second"
        assert email.calls[0][0].content.email.subject == "3 new comments"
        for nid in nids:
            assert await status(herald, nid) == ("digested", f"in {carried}")


async def test_a_templates_digest_collects_its_sends_and_a_bad_one_is_refused_when_saved(tmp_path, clock) -> None:
    from actors.domain.rendering import InvalidTemplate

    email = Calls()
    async with node(tmp_path, start_ms=START, email=email) as herald:
        spec = msgspec.structs.replace(COMMENTS, digest=DigestSpec("comments", Window("fixed", every="10m")))
        await herald.templates.create("comments", spec)
        with pytest.raises(InvalidTemplate) as refused:
            await herald.templates.create("other", msgspec.structs.replace(COMMENTS, digest=DigestSpec("x", Window("fixed", every="10s"))))
        assert [e.field for e in refused.value.errors] == ["digest.window.every"]
        await user(herald, "u", "UTC")
        plain = [msgspec.structs.replace(comment("u", n), digest=None) for n in range(3)]  # no digest of their own
        nids = [await accept(herald, request) for request in plain]
        [window] = await windows(herald, "u")
        assert (window.count, window.fires_at) == (3, iso(parse_iso(window.first_at) + 600_000))
        await sleep_until(START + 15 * 60_000)
        [(delivery, _)] = email.calls
        assert delivery.content.email.subject == "3 new comments"  # the digest itself is not collected again
        assert await status(herald, nids[2]) == ("digested", f"in {digest_notification_id(nids[0])}")


async def test_a_full_window_fires_at_once_and_a_digest_carries_at_most_max_events(tmp_path, clock, monkeypatch) -> None:
    """The window is due once it holds the cap (3 here, MAX_EVENTS); one notification carries at most the Digester's
    cap (2 here): a window of 3 goes as 2 + 1, under ids derived from the window's."""
    import actors.digester
    import actors.services.digests

    monkeypatch.setattr(actors.services.digests, "MAX_EVENTS", 3)
    monkeypatch.setattr(actors.digester, "MAX_EVENTS", 2)
    email = Calls()
    async with node(tmp_path, start_ms=START, email=email) as herald:
        await with_template(herald)
        await user(herald, "u", "UTC")
        nids = [await accept(herald, comment("u", n, Window("daily", at="18:00"))) for n in range(3)]
        await wait_calls(email, 2, seconds=60)
        assert wall_ms() < START + 3_600_000, "fired when full, not at 18:00"
        subjects = sorted((d.notification_id, d.content.email.subject) for d, _ in email.calls)
        assert subjects == sorted([(digest_notification_id(nids[0]), "2 new comments"),
                                   (digest_notification_id(f"{nids[0]}:1"), "1 new comments")])
        with trio.move_on_after(60):  # the window is finished after its digests are on the bus, a step behind the calls
            while await windows(herald, "u"):
                await trio.sleep(1)
        assert await windows(herald, "u") == []
