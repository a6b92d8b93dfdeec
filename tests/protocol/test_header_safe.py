"""protocol.header_safe: what it accepts, Python's email package writes as one header and reads back unchanged.

The interpreter here (3.11.7) lacks the fix for CVE-2024-6923: an encoded word that
carries CR/LF, set as a header, comes out as injected headers. These tests hold on
every Python because the validator, not the interpreter, refuses the input.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from protocol.content import Content, EmailContent, Recipient, header_errors
from protocol.header_safe import PLAIN_ADDRESS, address_problem, header_text_problem, mailbox_problem, parsed_address_problem

POLICY = email.policy.default
CVE_SUBJECT = "Hello =?utf-8?q?x=0D=0ABcc:_evil@attacker.example=0D=0A=0D=0AFake_body?="

# Every line or paragraph separator and control the issue lists, and the rest of C0/C1.
SEPARATORS = ["\r", "\n", "\r\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
CONTROLS = [chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]]
ENCODED_WORDS = [
    CVE_SUBJECT,
    "=?utf-8?b?SGkNCkJjYzogeA==?=",  # "Hi\r\nBcc: x" in base64
    "=?iso-8859-1?q?caf=E9?=",
    "x =?UTF-8?Q?a?= y",
    "=??=",
]


def written(name: str, value: str) -> tuple[list[str], str]:
    """Set one header, write the message, read it back: (header names, the header's value)."""
    message = EmailMessage(policy=POLICY)
    message["From"] = "Herald <herald@localhost>"
    message[name] = value
    message.set_content("body")
    back = email.message_from_bytes(bytes(message), policy=POLICY)
    return back.keys(), str(back[name])


@pytest.mark.parametrize("char", SEPARATORS + CONTROLS, ids=lambda c: f"U+{ord(c[0]):04X}")
def test_every_separator_and_control_is_refused_in_text_addresses_and_mailboxes(char: str) -> None:
    assert header_text_problem(f"Hello{char}world") is not None
    assert header_text_problem(char) is not None
    assert address_problem(f"a{char}b@example.org") is not None
    assert address_problem(f"ab@exa{char}mple.org") is not None
    assert mailbox_problem(f"Her{char}ald <h@example.org>") is not None


@pytest.mark.parametrize("value", ENCODED_WORDS)
def test_encoded_words_are_refused_wherever_they_are(value: str) -> None:
    problem = header_text_problem(value)
    assert problem is not None and "encoded word" in problem
    assert address_problem(f"{value.replace(' ', '_')}@example.org") is not None
    assert mailbox_problem(f"{value} <h@example.org>") is not None


def test_the_cve_subject_would_inject_headers_if_it_got_through() -> None:
    """Why the validator refuses encoded words: on an unpatched Python the email package injects."""
    keys, _ = written("Subject", CVE_SUBJECT)
    if "Bcc" not in keys:
        pytest.skip("this Python has the fix for CVE-2024-6923; the validator refuses the input anyway")
    assert header_text_problem(CVE_SUBJECT) is not None


@pytest.mark.parametrize("address", [
    "a@[b.c", "a:b@c.d", "a,b@c.d", "a;b@c.d", "a(b)@c.d", "a@b.c.", ".a@b.c", "a..b@c.d", "a@b..c", "@b.c", "a@",
    "nobody", '"a"@b.c', "a@b.c@d.e", "josé@example.org", "x" * 250 + "@b.co",
])
def test_addresses_the_email_package_cannot_take_unchanged_are_refused(address: str) -> None:
    assert address_problem(address) is not None


@pytest.mark.parametrize("address", ["u1@example.org", "first.last+tag@sub.example.co.uk", "a@b", "a%b@c.d", "a@[1.2.3.4]", "a@xn--bcher-kva.example"])
def test_plain_addresses_pass(address: str) -> None:
    assert address_problem(address) is None
    keys, value = written("To", address)
    assert keys.count("To") == 1 and value == address


def test_mailboxes_take_a_display_name() -> None:
    assert mailbox_problem("Herald <herald@localhost>") is None
    assert mailbox_problem('"Shop, Inc." <shop@example.org>') is None
    assert mailbox_problem("Shop, Inc. <shop@example.org>") is not None  # two mailboxes
    assert mailbox_problem("no address") is not None


def test_header_errors_name_the_request_fields() -> None:
    content = Content(email=EmailContent(subject="Hi\r\nBcc: x", text="t"))
    errors = header_errors(content, Recipient(email="a@[b.c"))
    assert [e.field for e in errors] == ["content.email.subject", "to.email"]
    assert header_errors(Content(email=EmailContent(subject="Héllo, wörld = ?", text="t")), Recipient(email="a@b.c")) == []


# Text that often holds the characters that matter: encoded-word syntax, separators, address specials.
_tricky = st.sampled_from(list("=?qQbB:;,<>@\"()\\ \t\r\n_.") + ["=?", "?=", "=?utf-8?q?", "\u2028", "\x85", "\x0b", "\u00e9", "\U0001f600"])
_text = st.lists(st.one_of(st.characters(), _tricky), max_size=80).map("".join)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_text)
@example(CVE_SUBJECT)
@example("Hi\r\nBcc: x")
@example("Hello\u2028world")
@example("=?utf-8?q?=0D=0A?=")
def test_accepted_text_is_one_header_that_reads_back_unchanged(value: str) -> None:
    if header_text_problem(value) is not None:
        return
    keys, back = written("Subject", value)
    assert keys == ["From", "Subject", "Content-Type", "Content-Transfer-Encoding", "MIME-Version"]
    assert back == value.lstrip(" ")  # the parser drops the space that separates a header's name from its value


_local = st.text(alphabet=st.sampled_from(list("abcXYZ019.+-_=?%!#$&'*/^`{|}~:;,()<>[]\"\\@ \r\n\u2028\u00e9")), min_size=1, max_size=20)
_domain = st.text(alphabet=st.sampled_from(list("abc019.-[]:=?()\r\n\u00fc")), min_size=1, max_size=20)
_plain = st.from_regex(PLAIN_ADDRESS, fullmatch=True)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.emails(), _plain, st.builds(lambda a, b: f"{a}@{b}", _local, _domain)))
@example("a@[b.c")
@example("=?utf-8?q?a=0D=0AX:y?=@b.c")
def test_accepted_addresses_are_one_recipient_that_reads_back_unchanged(address: str) -> None:
    if PLAIN_ADDRESS.fullmatch(address) and header_text_problem(address) is None and len(address) <= 254:
        assert parsed_address_problem(address) is None  # the fast path takes nothing the parser would refuse
    if address_problem(address) is not None:
        return
    keys, back = written("To", address)
    assert keys == ["From", "To", "Content-Type", "Content-Transfer-Encoding", "MIME-Version"]
    assert back == address
    parsed = POLICY.header_factory("To", back)
    assert [a.addr_spec for a in parsed.addresses] == [address]


@pytest.mark.parametrize("address", ["a@ü.de", "0@0.ü", "josé@example.org"])
def test_non_ascii_addresses_are_refused_with_the_ascii_form_named(address: str) -> None:
    # The email package writes some of these back unchanged and others as an encoded word
    # ("0@0.=?utf-8?q?=C3=BC?="): one rule, ASCII only, with the IDNA form named.
    problem = address_problem(address)
    assert problem is not None and "xn--" in problem
