"""The delivery path's CPU cuts (docs/performance.md, "The worker per core") change no byte and no guarantee."""

from __future__ import annotations

import email.policy
import re

from actors.clients import sandbox
from protocol.channels import Channel
from protocol.content import Content, EmailContent
from protocol.messages import Delivery


def test_the_cached_header_classes_write_the_same_email_as_the_stock_policy(monkeypatch):
    d = Delivery("01JXEMAIL", "u1", Channel.EMAIL, 0, Content(email=EmailContent("Grüße, ünïcode — long " * 6, "Text é", "<p>é</p>")),
                 address="u1@example.org", unsubscribe_url="https://example.org/u?t=" + "x" * 200)
    sender = "Herald Ünïcode <herald@example.org>"
    factory = sandbox._EMAIL_POLICY.header_factory
    assert factory["Subject"] is factory["subject"]  # made once per name
    cached = sandbox.email_bytes(sandbox.build_email(d, sender, 1_700_000_000_000))
    monkeypatch.setattr(sandbox, "_EMAIL_POLICY", email.policy.default.clone(max_line_length=998))
    stock = sandbox.email_bytes(sandbox.build_email(d, sender, 1_700_000_000_000))

    def normal(raw: bytes) -> bytes:  # the Message-ID and the boundary are random per message
        raw = re.sub(rb"Message-ID: <[^>]*>", b"Message-ID: <x>", raw)
        return re.sub(rb"={15}\d+==", b"=B=", raw)

    assert normal(cached) == normal(stock)


async def test_an_answer_given_after_its_consumer_is_gone_is_dropped_not_raised_into_the_provider():
    """The consumer concludes answers where the Provider gives them (actors/consumer.py _Answers): a late answer, after
    the consumer's nursery and channels closed (its partition revoked, or it crashed), must not fail the Provider."""
    import trio

    from actors.consumer import _Answers
    from protocol.messages import Sent
    from reactor.ports import BusRecord

    class Consumer:
        def _concluded_sent(self, *args):
            return ("concluded", args)

        async def _conclude(self, *args):
            raise AssertionError("not run: the consumer is gone")

    d = Delivery("n1", "u1", Channel.SMS, 0, Content(), address="+15555550100")
    async with trio.open_nursery() as nursery:
        send, receive = trio.open_memory_channel(10)
        answers = _Answers(Consumer(), nursery, send)  # type: ignore[arg-type]
        first = answers.reply(BusRecord("sms", 0, 0, b"u1", b"x"), 1, d, False)
        second = answers.reply(BusRecord("sms", 0, 1, b"u1", b"x"), 1, d, False)
        third = answers.reply(BusRecord("sms", 0, 2, b"u1", b"x"), 1, d, False)
        first.send(Sent())  # concluded where it is answered: no task
        assert receive.receive_nowait()[0] == "concluded"
        answers.fetched_all()
        await receive.aclose()  # the settler is gone
        second.send(Sent())  # dropped
    third.fail(RuntimeError("late"))  # needs a task, and the nursery is closed: dropped
    third.send(Sent())  # answered already: ignored
    assert answers.waiting == 0


def test_a_sandbox_line_is_the_json_it_was_and_what_msgspec_refuses_is_still_written():
    import json

    from actors.clients.sandbox import _json_line

    entry = {"notification_id": "n1", "user_id": "u1", "to": "+1555", "at_ms": 5, "text": "é ✓ \"q\"\n"}
    assert json.loads(_json_line(entry)) == entry and _json_line(entry).endswith(b"}\n") and _json_line(entry).count(b"\n") == 1
    lone = {**entry, "text": "\ud800"}  # msgspec refuses a lone surrogate: json writes it escaped, as before
    assert json.loads(_json_line(lone)) == lone
