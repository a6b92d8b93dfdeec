"""What may go into an email header: the one check for every header-bound value. Pure.

Every value that ends up in a header of an email Herald writes (the subject, the
recipient's address, the sender, a display name) passes through here: at the API (a
422 naming the field), when a template renders a subject, when preferences are saved,
and once more in `build_email` before the message is written.

Refused in header text:
- every C0 and C1 control character, DEL, and the Unicode line and paragraph
  separators (U+2028, U+2029): Python's email package refuses many of them in a header
  (\\r \\n \\v \\f \\x1c-\\x1e \\x85 U+2028 U+2029), the others have no business there;
- surrogates (they cannot be encoded);
- RFC 2047 encoded words (`=?charset?q?...?=`): the email package decodes them when it
  parses a header and, on Pythons without the fix for CVE-2024-6923 (3.11.7 is one),
  writes a CR/LF they carry out raw, which injects headers and a body. Herald never
  needs a sender's encoded word (it encodes non-ASCII text itself), so any `=?...?=`
  is refused, on every Python.

An address must be one plain addr-spec that the email package parses without a defect
and writes back unchanged (no display name, comment, group or second address).
"""

from __future__ import annotations

import re
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.policy import default as _default_policy

# C0 controls, DEL, C1 controls, line/paragraph separators, surrogates.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# What Python's header parser would try to decode as an encoded word: "=?" ... "?=".
_ENCODED_WORD = re.compile(r"=\?.*?\?=", re.DOTALL)
MAX_ADDRESS = 254  # RFC 5321's limit on a forward path
# The common case, a dot-atom at a host name: the email package takes it unchanged (a test checks it agrees),
# and matching it costs a microsecond where the parser costs some 60.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _describe(char: str) -> str:
    names = {"\r": "a carriage return (CR)", "\n": "a line feed (LF)", "\t": "a tab", "\u2028": "a line separator (U+2028)",
             "\u2029": "a paragraph separator (U+2029)", "\x85": "a next-line control (U+0085)"}
    return names.get(char, f"the control character U+{ord(char):04X}")


def header_text_problem(value: str) -> str | None:
    """Why `value` cannot be the text of an email header (a subject, a display name), or None if it can."""
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        return f"contains {_describe(bad.group())} at position {bad.start()}: not allowed in an email header"
    if _ENCODED_WORD.search(value) is not None:
        return "contains an RFC 2047 encoded word (=?...?=): not allowed in an email header"
    return None


def address_problem(value: str) -> str | None:
    """Why `value` cannot be an email address in a To/From header, or None if it can."""
    problem = header_text_problem(value)
    if problem is not None:
        return problem
    if len(value) > MAX_ADDRESS:
        return f"longer than {MAX_ADDRESS} characters"
    if not value.isascii():  # the email package would write a non-ASCII address as an encoded word, not as itself
        return "not ASCII: give an internationalised domain in its ASCII form (xn--...); non-ASCII local parts are not supported"
    if PLAIN_ADDRESS.fullmatch(value) is not None:
        return None
    return parsed_address_problem(value)


def parsed_address_problem(value: str) -> str | None:
    """address_problem without the fast path: what Python's email package makes of `value`."""
    if "@" not in value:
        return "not an email address (no @)"
    try:
        header = _default_policy.header_factory("To", value)
        addresses = header.addresses
        defects = list(header.defects)
    except Exception as exc:  # the parser has bugs on some inputs (AttributeError on "a@[b.c")
        return f"not an address Python's email package can parse ({type(exc).__name__})"
    if defects:
        return f"not a valid email address ({defects[0]})"
    if len(addresses) != 1 or addresses[0].display_name or addresses[0].addr_spec != value:
        return "not one plain email address (no name, comment, group or list)"
    return _round_trips(addresses[0].username, addresses[0].domain)


def _round_trips(username: str, domain: str) -> str | None:
    try:
        Address(username=username, domain=domain)
    except (ValueError, TypeError, HeaderParseError) as exc:
        return f"not a valid email address ({exc})"
    if not username or not domain:
        return "not a valid email address (empty local part or domain)"
    return None


def mailbox_problem(value: str) -> str | None:
    """Why `value` cannot be a sender such as `Herald <herald@example.org>` (or a bare address), or None."""
    problem = header_text_problem(value)
    if problem is not None:
        return problem
    try:
        header = _default_policy.header_factory("From", value)
        addresses = header.addresses
        defects = list(header.defects)
    except Exception as exc:
        return f"not a mailbox Python's email package can parse ({type(exc).__name__})"
    if defects or len(addresses) != 1:
        return "not one mailbox (Name <address> or address)"
    name_problem = header_text_problem(addresses[0].display_name)
    return name_problem or address_problem(addresses[0].addr_spec)
