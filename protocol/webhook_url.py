"""A webhook URL as a user may configure it: the rules checked when it is given. Pure.

The schema bounds its length and refuses whitespace and control characters
(`WEBHOOK_URL_PATTERN`); `url_problem` says what else is wrong with it, for a 422 naming
the field (`contact.webhook`, `to.webhook`). Where the URL's host resolves to is checked
when a delivery goes out (actors/clients/ssrf.py): a name may resolve elsewhere later.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, urlsplit

MAX_URL_LENGTH = 2048
# no whitespace, control characters, or the line and paragraph separators; `(?!\n)$` as in protocol.parsing
WEBHOOK_URL_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f\u2028\u2029]+(?!\n)$"
_HOST_NAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$")


def url_problem(url: str) -> str | None:
    """What makes `url` unusable as a webhook endpoint, or None: the scheme (http, https), userinfo, the host,
    the port (1-65535), the length, a fragment."""
    if len(url) > MAX_URL_LENGTH:
        return f"is {len(url)} characters long; the limit is {MAX_URL_LENGTH}"
    if not re.search(WEBHOOK_URL_PATTERN, url):
        return "holds whitespace or a control character"
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"scheme {parts.scheme or '(none)'!r}: only http and https are allowed"
    if "@" in parts.netloc:
        return "has userinfo (user:password@): credentials do not go in a webhook URL"
    if parts.fragment or url.endswith("#"):
        return "has a fragment (#...), which is never sent"
    return _host_problem(parts)


def _host_problem(parts: SplitResult) -> str | None:
    try:
        port = parts.port
    except ValueError:
        return "port: expected an integer from 1 to 65535"
    if port is not None and not 1 <= port <= 65535:
        return f"port {port}: expected an integer from 1 to 65535"
    if parts.netloc.endswith(":"):
        return "port: empty"
    host = parts.hostname
    if not host:
        return "has no host"
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"host [{host}] is not an IPv6 address"
        return None
    if not _HOST_NAME.match(host):
        return f"host {host!r} is not a host name or an IP address"
    return None
