"""Optional DKIM signing (RFC 6376) of outgoing email, with dkimpy: SMTP and the .eml outbox.

Configured on an email provider (`smtp`, or `sandbox` for the outbox) with `dkim_selector`,
`dkim_domain` and the private key as `dkim_key_env` / `dkim_key_file` (PEM, RSA,
a secret like any other). The message is signed as it goes out: its line ends made CRLF
(what SMTP carries), then a `DKIM-Signature` header (relaxed/simple canonicalization, the
headers dkimpy recommends: From, To, Subject, Date, Message-ID, ...) put before it. The key
is tried on a sample message at start-up, so a key that cannot sign stops the start. The
public key goes in DNS as a TXT record at `<selector>._domainkey.<domain>`:
`v=DKIM1; k=rsa; p=<base64 of the public key's DER>`. SendGrid signs the mail it sends
itself (its domain authentication), so a sendgrid provider takes no DKIM settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .provider_config import Secret

_LABELS = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_SAMPLE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: DKIM check\r\n\r\nHello\r\n"


@dataclass(frozen=True)
class DkimSettings:
    selector: str
    domain: str
    key: Secret = field(repr=False)  # the PEM private key


def crlf(raw: bytes) -> bytes:
    """The message with CRLF line ends (what SMTP carries and the signature covers)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def check_dkim(selector: str, domain: str, key: Secret) -> DkimSettings:
    """The settings, once the names are DNS names and the key signs a sample; ValueError naming the setting otherwise."""
    if not _LABELS.match(selector):
        raise ValueError(f"dkim_selector: expected a DNS label (or labels), got {selector!r}")
    if not _LABELS.match(domain) or "." not in domain:
        raise ValueError(f"dkim_domain: expected a domain name, got {domain!r}")
    settings = DkimSettings(selector, domain, key)
    try:
        signature_header(settings, _SAMPLE)
    except Exception:
        raise ValueError("dkim_key: expected a PEM private key (RSA) dkimpy can sign with; "
                         "what was given is not one (its content is not shown)") from None
    return settings


def signature_header(settings: DkimSettings, message: bytes) -> bytes:
    """The DKIM-Signature header line(s) for a CRLF message."""
    import dkim  # type: ignore[import-untyped]  # dkimpy ships no annotations

    header: bytes = dkim.sign(message, settings.selector.encode(), settings.domain.encode(), settings.key.reveal().encode(),
                              linesep=b"\r\n")
    if not header:
        raise ValueError("dkim signing produced no header")
    return header


def dkim_signed(settings: DkimSettings | None, raw: bytes) -> bytes:
    """The message as it goes out: unchanged without DKIM, else CRLF with its DKIM-Signature first."""
    if settings is None:
        return raw
    message = crlf(raw)
    return signature_header(settings, message) + message
