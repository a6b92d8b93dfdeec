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
