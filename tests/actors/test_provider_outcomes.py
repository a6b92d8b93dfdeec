"""The Provider and the sandbox clients: what a client raises is the attempt's outcome, not the actor's crash."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import msgspec
import pytest
import trio

from actors.clients.sandbox import EmailOutbox, JsonLinesSink, UnsafeEmail, build_email, email_bytes
from actors.messages import Attempt
from actors.provider import Provider
from protocol.channels import Channel
from protocol.content import Content, EmailContent, SmsContent
from protocol.messages import Crashed, Delivery, PermanentFailure, RetryLater, Sent
from reactor.ask import ActorCrashed, Reply
from reactor.mailbox import Mailbox

CVE = "Hello =?utf-8?q?x=0D=0ABcc:_evil@attacker.example=0D=0A=0D=0AFake_body?="


def email_delivery(subject: str = "Hi", address: str = "a@example.org", **extra) -> Delivery:
    return Delivery("01J0000000000000000000000A", "u1", Channel.EMAIL, 1_700_000_000_000,
                    Content(email=EmailContent(subject=subject, text="body")), address=address, **extra)


def sms_delivery(nid: str = "01J0000000000000000000000B") -> Delivery:
    return Delivery(nid, "u1", Channel.SMS, 1_700_000_000_000, Content(sms=SmsContent("hi")), address="+15555550100")


class Raises:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def send(self, delivery):
        raise self.exc


class Ledger:
    """A send ledger that works, or fails as a broken store would."""

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken

    async def sent_status(self, nid, channel):
        if self.broken:
            raise RuntimeError("ledger unavailable")
        return None

    async def mark_sent(self, *args):
        return None


class GateSpy:
    """Records what the Provider tells its gate."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def admit(self, delivery) -> None:
        return None

    def admit_nowait(self, delivery) -> bool:
        return True

    async def settle(self, delivery, outcome) -> None:
        self.seen.append(f"settle:{type(outcome).__name__}")

    async def abandon(self, delivery) -> None:
        self.seen.append("abandon")

    async def release(self) -> None:
        self.seen.append("release")


async def _run_keeping_its_error(provider: Provider, crashed: list[BaseException]) -> None:
    """Run the Provider; what its run raises is kept in `crashed`, not raised into the test's nursery."""
    try:
        await provider.run()
    except Exception as exc:
        crashed.append(exc)


async def attempt(client, ledger=None, delivery=None, maybe_sent=False, gate=None):
    """Run one Attempt through a Provider; (the reply's outcome or exception, what the actor's run raised)."""
    mailbox: Mailbox = Mailbox("provider:test", 4)
    provider = Provider(Channel.SMS, client, mailbox, ledger or Ledger(), gate)
    reply: Reply = Reply()
    crashed: list[BaseException] = []

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run_keeping_its_error, provider, crashed)
        await mailbox.send(Attempt(delivery or sms_delivery(), reply, maybe_sent))
        try:
            outcome = await reply.wait()
        except ActorCrashed as exc:
            outcome = exc
        mailbox.close()
    return outcome, crashed


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), PermissionError(13, "denied"),
                                 IsADirectoryError(21, "Is a directory"), ConnectionResetError()])
async def test_a_client_io_error_is_retry_later_and_the_provider_lives(exc):
    outcome, crashed = await attempt(Raises(exc))
    assert isinstance(outcome, RetryLater) and type(exc).__name__ in outcome.error
    assert crashed == []


@pytest.mark.parametrize("exc", [ValueError("Header values may not contain linefeed"), UnicodeEncodeError("utf-8", "\ud800", 0, 1, "x"),
                                 KeyError("k"), AssertionError(), RuntimeError("client bug")])
async def test_any_other_client_exception_is_crashed_and_the_provider_lives(exc):
    outcome, crashed = await attempt(Raises(exc))
    assert isinstance(outcome, Crashed) and type(exc).__name__ in outcome.error
    assert crashed == []


async def test_the_breaker_hears_of_io_errors_and_not_of_crashes_or_refused_content():
    class Refuses:
        async def send(self, delivery):
            return PermanentFailure("bad header", dead_letter=True)

    seen = []
    for client in (Raises(OSError(111, "Connection refused")), Raises(RuntimeError("bug")), Refuses()):
        gate = GateSpy()
        await attempt(client, gate=gate)
        seen.append(gate.seen)
    assert seen == [["settle:RetryLater", "release"], ["abandon", "release"], ["abandon", "release"]]  # release: at stop


async def test_an_error_of_the_providers_own_state_still_crashes_it():
    class Fine:
        async def send(self, delivery):
            return Sent()

    outcome, crashed = await attempt(Fine(), Ledger(broken=True), maybe_sent=True)
    assert isinstance(outcome, ActorCrashed) and "ledger unavailable" in str(outcome)
    assert [str(e) for e in crashed] == ["ledger unavailable"]


@pytest.mark.parametrize("subject", ["Hi\r\nBcc: x", "Hello\u2028world", "Hi\x0bthere", "Hi\x85", CVE])
def test_build_email_refuses_an_unsafe_subject(subject):
    with pytest.raises(UnsafeEmail, match="Subject"):
        build_email(email_delivery(subject), "Herald <h@example.org>", 0)


@pytest.mark.parametrize("address", ["a@[b.c", "a,b@c.d", "=?utf-8?q?a=0D=0A?=@b.c", "a\r\n@b.c"])
def test_build_email_refuses_an_unsafe_address(address):
    with pytest.raises(UnsafeEmail, match="To"):
        build_email(email_delivery(address=address), "Herald <h@example.org>", 0)


def test_build_email_refuses_an_unsafe_unsubscribe_link_and_sender():
    with pytest.raises(UnsafeEmail, match="List-Unsubscribe"):
        build_email(email_delivery(unsubscribe_url="https://x.example/u?t=1\r\nBcc: x"), "h@example.org", 0)
    with pytest.raises(UnsafeEmail, match="From"):
        build_email(email_delivery(), "Evil =?utf-8?q?=0D=0A?= <h@example.org>", 0)
    with pytest.raises(ValueError, match="sender"):
        EmailOutbox(Path("/nonexistent-not-created"), "Herald\r\n <h@example.org>")


def test_email_bytes_refuses_a_message_whose_headers_changed_on_the_way_out():
    message = build_email(email_delivery(), "h@example.org", 0)
    message.replace_header("Subject", CVE)  # as if a check were missing: on an unpatched Python this injects Bcc
    written = bytes(message)
    injected = "Bcc" in email.message_from_bytes(written, policy=email.policy.default).keys()
    if injected:
        with pytest.raises(UnsafeEmail, match="headers"):
            email_bytes(message)
    raw = email_bytes(build_email(email_delivery("Grüße = ? ok"), "h@example.org", 0))
    assert email.message_from_bytes(raw, policy=email.policy.default)["Subject"] == "Grüße = ? ok"


async def test_the_email_outbox_dead_letters_content_and_retries_io(tmp_path):
    outbox = EmailOutbox(tmp_path / "outbox", "Herald <h@example.org>")
    poison = await outbox.send(email_delivery("Hi\r\nBcc: x"))
    assert isinstance(poison, PermanentFailure) and poison.dead_letter and "Subject" in poison.error
    (tmp_path / "outbox").rename(tmp_path / "away")
    (tmp_path / "outbox").write_bytes(b"")
    blocked = await outbox.send(email_delivery())
    assert isinstance(blocked, RetryLater) and "outbox write failed" in blocked.error
    (tmp_path / "outbox").unlink()
    (tmp_path / "away").rename(tmp_path / "outbox")
    assert isinstance(await outbox.send(email_delivery()), Sent)


async def test_a_failed_append_leaves_no_torn_line(tmp_path, monkeypatch):
    sink = JsonLinesSink(tmp_path / "sms.jsonl", "sms")
    assert isinstance(await sink.send(sms_delivery("01J0000000000000000000000C")), Sent)
    import actors.clients.sandbox as sandbox

    real_fsync = sandbox.os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sandbox.os, "fsync", full_disk)
    failed = await sink.send(sms_delivery("01J0000000000000000000000D"))
    assert isinstance(failed, RetryLater) and "No space left" in failed.error
    monkeypatch.setattr(sandbox.os, "fsync", real_fsync)
    assert isinstance(await sink.send(sms_delivery("01J0000000000000000000000D")), Sent)
    lines = [msgspec.json.decode(line) for line in (tmp_path / "sms.jsonl").read_bytes().splitlines()]
    assert [line["notification_id"] for line in lines] == ["01J0000000000000000000000C", "01J0000000000000000000000D"]


# -- a client that takes batches (the Provider serves a batch of users per task) ------------------------


class BatchLedger(Ledger):
    """A working send ledger that records its writes: (kind, rows)."""

    def __init__(self, broken: bool = False) -> None:
        super().__init__(broken)
        self.writes: list[tuple[str, list[str]]] = []

    async def mark_sent(self, nid, channel, status, at_ms):
        if self.broken:
            raise RuntimeError("ledger write failed")
        self.writes.append(("one", [nid]))

    async def mark_sent_many(self, marks):
        if self.broken:
            raise RuntimeError("ledger write failed")
        self.writes.append(("many", [nid for nid, *_ in marks]))


class Batches:
    """Takes batches: answers by the script `verdict(delivery)`; records each call's deliveries; `fail`: send_many raises."""

    sends_many = True

    def __init__(self, verdict=lambda d: Sent(), fail: BaseException | None = None) -> None:
        self.verdict = verdict
        self.fail = fail
        self.calls: list[tuple[str, list[str]]] = []

    async def send(self, delivery):
        self.calls.append(("send", [delivery.notification_id]))
        return self.verdict(delivery)

    async def send_many(self, deliveries):
        self.calls.append(("send_many", [d.notification_id for d in deliveries]))
        await trio.lowlevel.checkpoint()
        if self.fail is not None:
            raise self.fail
        return [self.verdict(d) for d in deliveries]


def users_delivery(n: int) -> Delivery:
    return msgspec.structs.replace(sms_delivery(f"01J{n:023d}"), user_id=f"u{n}")


async def batch_of(client, count: int = 4, ledger=None, gate=None, maybe_sent=False):
    """`count` attempts of `count` users queued before the Provider starts: one batch. (outcomes, what run raised, ledger)."""
    ledger = ledger or BatchLedger()
    mailbox: Mailbox = Mailbox("provider:test", count)
    provider = Provider(Channel.SMS, client, mailbox, ledger, gate, max_in_flight=count)
    replies = []
    for n in range(count):
        reply: Reply = Reply()
        replies.append(reply)
        await mailbox.send(Attempt(users_delivery(n), reply, maybe_sent))
    crashed: list[BaseException] = []
    outcomes = []

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run_keeping_its_error, provider, crashed)
        for reply in replies:
            try:
                outcomes.append(await reply.wait())
            except Exception as exc:
                outcomes.append(exc)
        mailbox.close()
    return outcomes, crashed, ledger


async def test_a_batch_is_one_client_call_and_one_ledger_write_before_the_answers():
    client = Batches()
    outcomes, crashed, ledger = await batch_of(client)
    ids = [f"01J{n:023d}" for n in range(4)]
    assert all(isinstance(o, Sent) for o in outcomes) and crashed == []
    assert client.calls == [("send_many", ids)]
    assert ledger.writes == [("many", ids)]


async def test_a_batch_writes_only_its_sends_to_the_ledger_and_each_outcome_is_its_own():
    verdicts = {0: Sent(), 1: RetryLater("down"), 2: PermanentFailure("bad number"), 3: PermanentFailure("poison", dead_letter=True)}
    gate = GateSpy()
    outcomes, crashed, ledger = await batch_of(Batches(lambda d: verdicts[int(d.user_id[1:])]), gate=gate)
    assert [type(o).__name__ for o in outcomes] == ["Sent", "RetryLater", "PermanentFailure", "PermanentFailure"]
    assert ledger.writes == [("many", ["01J" + "0" * 23])]
    # the breaker hears of the three the provider answered, not of the content refused before it
    assert sorted(gate.seen) == sorted(["settle:Sent", "settle:RetryLater", "settle:PermanentFailure", "abandon", "release"])


async def test_a_batch_whose_client_raises_an_io_error_is_retried_and_any_other_error_is_sent_alone():
    outcomes, crashed, _ = await batch_of(Batches(fail=OSError(28, "No space left on device")))
    assert all(isinstance(o, RetryLater) and "OSError" in o.error for o in outcomes) and crashed == []

    def poison_at_2(d):
        if d.user_id == "u2":
            raise RuntimeError("client bug")
        return Sent()

    client = Batches(poison_at_2, fail=RuntimeError("client bug"))
    outcomes, crashed, ledger = await batch_of(client)
    # whose crash it was is not known from the batch: each is sent alone, and only the poison one is Crashed
    assert [type(o).__name__ for o in outcomes] == ["Sent", "Sent", "Crashed", "Sent"] and crashed == []
    assert [kind for kind, _ in client.calls] == ["send_many", "send", "send", "send", "send"]
    assert ledger.writes == [("many", [f"01J{n:023d}" for n in (0, 1, 3)])]


async def test_an_error_of_the_providers_own_state_in_a_batch_still_crashes_it():
    outcomes, crashed, _ = await batch_of(Batches(), ledger=BatchLedger(broken=True))
    assert isinstance(outcomes[0], ActorCrashed) and "ledger write failed" in str(outcomes[0])
    assert all(type(o).__name__ == "AttemptInterrupted" for o in outcomes[1:])  # not their fault: retried, not counted
    assert len(crashed) == 1 and "ledger write failed" in str(crashed[0])


async def test_a_maybe_sent_batch_asks_the_ledger_and_sends_only_what_it_has_not_seen():
    class Seen(BatchLedger):
        async def sent_status(self, nid, channel):
            return "delivered" if nid.endswith("1") else None

    client = Batches()
    outcomes, _, ledger = await batch_of(client, ledger=Seen(), maybe_sent=True)
    assert outcomes[1] == Sent(outcomes[1].status, "already sent (send ledger): not sent again")
    assert client.calls == [("send_many", [f"01J{n:023d}" for n in (0, 2, 3)])]


async def test_the_sms_sink_writes_a_batch_once_and_each_outcome_is_its_own(tmp_path):
    sink = JsonLinesSink(tmp_path / "sms.jsonl", "sms")
    first, again = sms_delivery("01J0000000000000000000000C"), sms_delivery("01J0000000000000000000000C")
    no_address = msgspec.structs.replace(sms_delivery("01J0000000000000000000000E"), address=None)
    outcomes = await sink.send_many([first, no_address, again, sms_delivery("01J0000000000000000000000D")])
    assert [type(o).__name__ for o in outcomes] == ["Sent", "PermanentFailure", "Sent", "Sent"]
    assert "already there" in outcomes[2].detail and sink.duplicates_refused == 1  # one id twice in a batch: written once
    assert sink._lines.batches == 1
    lines = [msgspec.json.decode(line) for line in (tmp_path / "sms.jsonl").read_bytes().splitlines()]
    assert [line["notification_id"] for line in lines] == ["01J0000000000000000000000C", "01J0000000000000000000000D"]
    assert isinstance((await sink.send_many([first]))[0], Sent) and sink.duplicates_refused == 2  # and not again later


async def test_a_failed_batch_append_retries_every_write_of_it_and_leaves_no_line(tmp_path, monkeypatch):
    sink = JsonLinesSink(tmp_path / "sms.jsonl", "sms")
    import actors.clients.sandbox as sandbox

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sandbox.os, "fsync", full_disk)
    no_address = msgspec.structs.replace(sms_delivery("01J0000000000000000000000E"), address=None)
    outcomes = await sink.send_many([sms_delivery("01J0000000000000000000000C"), no_address, sms_delivery("01J0000000000000000000000D")])
    assert [type(o).__name__ for o in outcomes] == ["RetryLater", "PermanentFailure", "RetryLater"]
    assert (tmp_path / "sms.jsonl").read_bytes() == b""


async def test_the_email_outbox_writes_a_batch_together(tmp_path):
    outbox = EmailOutbox(tmp_path / "outbox", "Herald <h@example.org>")
    good = [msgspec.structs.replace(email_delivery(), notification_id=f"01J{n:023d}") for n in range(3)]
    outcomes = await outbox.send_many([good[0], email_delivery("Hi\r\nBcc: x"), good[1], good[2]])
    assert [type(o).__name__ for o in outcomes] == ["Sent", "PermanentFailure", "Sent", "Sent"]
    assert [o.detail for o in outcomes if isinstance(o, Sent)] == [str(tmp_path.resolve() / "outbox" / f"01J{n:023d}.eml") for n in range(3)]
    assert outbox._files.batches == 1 and sorted(p.name for p in (tmp_path / "outbox").iterdir()) == [f"01J{n:023d}.eml" for n in range(3)]


async def test_the_web_client_keeps_a_batch_one_by_one_in_process_and_at_once_remotely_then_publishes_it_once():
    from actors.clients.web import WebClient
    from actors.registry import RecentPushes
    from protocol.content import WebContent
    from reactor.backends.embedded import MemoryBroker, MemoryState

    class OnePublish:
        """A remote Broker: counts its calls; each user has a live session on one node."""

        def __init__(self) -> None:
            self.calls: list[int] = []

        async def publish_many(self, messages):
            self.calls.append(len(messages))
            return [1] * len(messages)

    class RoundTrips(RecentPushes):
        """Recent pushes kept remotely: each answers only once every one of the batch is asked (as a slow server would)."""

        def __init__(self, count: int) -> None:
            super().__init__(MemoryState())
            self.count, self.asked, self.all_asked = count, 0, trio.Event()

        async def remember(self, user_id, notification_id, frame):
            self.asked += 1
            if self.asked == self.count:
                self.all_asked.set()
            await self.all_asked.wait()
            await super().remember(user_id, notification_id, frame)

    webs = [Delivery(f"01J{n:023d}", f"u{n}", Channel.WEB, 1_700_000_000_000, Content(web=WebContent("t", "b"))) for n in range(3)]
    local = WebClient(MemoryBroker(), RecentPushes(MemoryState()))
    assert local.one_by_one
    assert [o.detail for o in await local.send_many(webs)] == ["in the inbox; no live session"] * 3
    broker = OnePublish()
    remote = WebClient(broker, RoundTrips(3), one_by_one=False)  # type: ignore[arg-type]
    assert not remote.one_by_one
    with trio.fail_after(5):  # kept one after another, the first would wait for ever
        outcomes = await remote.send_many(webs)
    assert [o.detail for o in outcomes] == ["in the inbox; pushed to the live sessions on 1 node(s)"] * 3
    assert broker.calls == [3]  # the batch in one publish


class OneByOne(Batches):
    sends_many = False  # served a task per user's queue


@pytest.mark.parametrize("client", [Batches, OneByOne], ids=["batches", "per-user-task"])
async def test_a_provider_run_again_after_its_crash_starts_clean(client):
    """Crashed with users ready and queued behind a full set of slots: every attempt it took from the mailbox is
    answered (one crashed, the others interrupted: also the one taken while it waited for room, which 6c50661 dropped
    unanswered), and the same Provider run again (as its supervisor does) serves the rest and new attempts of those
    users."""
    ledger = BatchLedger(broken=True)
    mailbox: Mailbox = Mailbox("provider:test", 16)
    provider = Provider(Channel.SMS, client(), mailbox, ledger, max_in_flight=2)

    async def queue(first: int) -> list[Reply]:
        replies = []
        for n in range(first, first + 6):  # three users, two attempts each
            reply: Reply = Reply()
            replies.append(reply)
            await mailbox.send(Attempt(msgspec.structs.replace(users_delivery(n), user_id=f"u{n % 3}"), reply, False))
        return replies

    async def answers(replies: list[Reply]) -> list[str]:
        named = []
        for reply in replies:
            try:
                named.append(type(await reply.wait()).__name__)
            except Exception as exc:
                named.append(type(exc).__name__)
        return named

    first = await queue(0)
    with trio.fail_after(5):
        with pytest.raises(RuntimeError, match="ledger write failed"):
            await provider.run()
        # what it took from the mailbox is answered (2 x max_in_flight held, and one taken when it stopped); the rest waits
        # in the mailbox for the next run
        held = [reply for reply in first if reply.done]
        named = await answers(held)  # (a task per user: each running one whose ledger write failed is crashed)
        assert set(named) == {"ActorCrashed", "AttemptInterrupted"} and len(held) >= 4, named
        assert sum(not reply.done for reply in first) == mailbox.statistics().queued  # none taken and left unanswered
    ledger.broken = False
    left = [reply for reply in first if not reply.done]
    second = await queue(6)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(provider.run)
            assert await answers(left + second) == ["Sent"] * (len(left) + 6)
            mailbox.close()
    assert not provider._queues and provider.in_flight == 0 and provider.queued == 0
