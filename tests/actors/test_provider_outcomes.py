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

    async def settle(self, delivery, outcome) -> None:
        self.seen.append(f"settle:{type(outcome).__name__}")

    async def abandon(self, delivery) -> None:
        self.seen.append("abandon")

    async def release(self) -> None:
        self.seen.append("release")


async def attempt(client, ledger=None, delivery=None, maybe_sent=False, gate=None):
    """Run one Attempt through a Provider; (the reply's outcome or exception, what the actor's run raised)."""
    mailbox: Mailbox = Mailbox("provider:test", 4)
    provider = Provider(Channel.SMS, client, mailbox, ledger or Ledger(), gate)
    reply: Reply = Reply()
    crashed: list[BaseException] = []

    async def run():
        try:
            await provider.run()
        except Exception as exc:
            crashed.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
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
