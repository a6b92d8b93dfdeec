"""The plain email writer (actors/clients/plain_email.py) writes exactly what the email package writes, or declines."""

from __future__ import annotations

import random
import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from actors.clients import sandbox
from actors.clients.plain_email import plain_email
from protocol.channels import Channel
from protocol.content import Content, EmailContent
from protocol.header_safe import PLAIN_ADDRESS
from protocol.messages import Delivery

NOW_MS = 1_700_000_000_123
SENDERS = ["Herald <herald@example.org>", "herald@example.org", "Héràld Ünïcode <h@example.org>", '"Herald, Inc." <h@example.org>']

_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=120)
_any_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60)
_subject = st.one_of(_printable, _any_text, st.text(st.sampled_from("ab =?\t"), min_size=1, max_size=20),
                     st.integers(980, 1000).map(lambda n: "s" * n))
_line = st.one_of(_printable, _any_text, st.sampled_from(["", "--===============", "--===============123==", "From x", "."]),
                  st.integers(990, 1005).map(lambda n: "w" * n), st.integers(330, 340).map(lambda n: "é" * n))
_body = st.one_of(st.none(), st.lists(_line, max_size=6).flatmap(
    lambda lines: st.sampled_from(["\n", "\r\n", "\r"]).map(lambda sep: sep.join(lines))))
_address = st.one_of(st.from_regex(PLAIN_ADDRESS, fullmatch=True).filter(lambda a: len(a) <= 254),
                     st.sampled_from(["a@b", "x.y@example.org", "a..b@example.org", "a@b_c.org", "é@example.org"]))
_link = st.one_of(st.none(), st.sampled_from(["https://example.org/u?t=abc", "https://example.org/u?t=" + "x" * 990]), _printable)
_nid = st.one_of(st.sampled_from(["01JX0ABCDEFGHJKMNPQRSTVWXY", "n-1_2"]), _printable)


def _delivery(subject, text, html, address, link, nid) -> Delivery:
    return Delivery(nid, "u1", Channel.EMAIL, 0, Content(email=EmailContent(subject, text, html)), address=address,
                    unsubscribe_url=link)


def _by_the_package(delivery: Delivery, sender: str, now_ms: int = NOW_MS) -> bytes | Exception:
    try:
        return sandbox.email_bytes(sandbox.build_email(delivery, sender, now_ms))
    except Exception as exc:  # what the package or its checks refuse
        return exc


def _timeless(raw: bytes) -> bytes:
    return re.sub(rb"Message-ID: <\d+\.", b"Message-ID: <T.", raw)  # make_msgid's centiseconds may tick between calls


@settings(max_examples=600, deadline=None)
@given(_subject, _body, _body, _address, _link, _nid, st.sampled_from(SENDERS), st.integers(0, 2**32),
       st.integers(0, 4_102_444_800_000))
@example("Your order shipped", "Hello Ada,\nit shipped.", "<p>Hello</p>", "ada@example.com", None, "01JX", SENDERS[0], 1, NOW_MS)
@example(" lead  and trail ", "", None, "a@b", "https://e.org/u", "01JX", SENDERS[2], 2, 999)
def test_what_it_writes_is_what_the_email_package_writes(subject, text, html, address, link, nid, sender, seed, now_ms):
    delivery = _delivery(subject, text, html, address, link, nid)
    random.seed(seed)  # the Message-ID's and the boundary's random parts, drawn in the same order by both
    plain = plain_email(delivery, sender, now_ms)
    if plain is None:
        return  # declined: the package's path writes it (or refuses it)
    random.seed(seed)
    stock = _by_the_package(delivery, sender, now_ms)
    assert isinstance(stock, bytes), f"written plainly where the package refuses it: {stock!r}"
    assert _timeless(plain) == _timeless(stock)


@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200).filter(lambda s: "=?" not in s),
       st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=200), max_size=20),
       st.booleans(), st.sampled_from(SENDERS))
def test_the_common_shapes_are_written_plainly(subject, lines, with_html, sender):
    """Not a writer that declines everything: ASCII subjects with any UTF-8 text and html take the plain path."""
    body = "\n".join(line for line in lines if not line.startswith("--="))
    delivery = _delivery(subject, body, "<p>" + body + "</p>" if with_html else None, "ada@example.com",
                         "https://example.org/u?t=1", "01JX0ABCDEFGHJKMNPQRSTVWXY")
    assert plain_email(delivery, sender, NOW_MS) is not None


async def test_render_email_takes_the_plain_path_and_the_package_for_the_rest(monkeypatch):
    calls = []
    build = sandbox.build_email
    monkeypatch.setattr(sandbox, "build_email", lambda *args: calls.append(args) or build(*args))
    plain = _delivery("Shipped", "Hello", None, "ada@example.com", None, "01JX")
    assert isinstance(sandbox.render_email(plain, SENDERS[0]), bytes) and calls == []
    accented = _delivery("Grüße", "Hello", None, "ada@example.com", None, "01JX")
    raw = sandbox.render_email(accented, SENDERS[0])
    assert isinstance(raw, bytes) and b"Subject: =?utf-8?" in raw and len(calls) == 1
    refused = _delivery("Hi =?utf-8?q?x?=", "Hello", None, "ada@example.com", None, "01JX")
    assert isinstance(sandbox.render_email(refused, SENDERS[0]), sandbox.PermanentFailure)


async def test_a_sender_the_package_refuses_is_refused_on_the_plain_path_too():
    plain = _delivery("Shipped", "Hello", None, "ada@example.com", None, "01JX")
    assert isinstance(sandbox.render_email(plain, "Herald <not an address>"), sandbox.PermanentFailure)
