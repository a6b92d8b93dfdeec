"""What the HTTP providers' clients share (Twilio, SendGrid, FCM, APNs): their connections, a call whose answer is read
up to a limit, Retry-After, and the verdict of a transport error.

HTTP/1.1 providers (Twilio, SendGrid) go through actors/clients/http1.py, a lean keep-alive
pool on h11 per origin; HTTP/2 ones (FCM, APNs) through actors/clients/http2.py, as lean on
h2, many requests multiplexed on each connection (httpx cost 0.8 ms of CPU per request over
HTTP/1.1, 1.5 ms over HTTP/2: docs/providers.md). Either way a call gives an `Answer` or
raises a TransportError (http_errors.py).

An answer's body is read up to `limit` bytes whatever its size (a provider, or something
in between, answering megabytes costs no more than the limit); the rest is dropped with
the connection (HTTP/1.1) or refused with a stream reset (HTTP/2). Every call has the
client's timeout (connect, each read or the whole answer, each write, a free connection or
stream from the pool), and the whole call at most twice that. The error texts a
verdict carries are built from the status, the provider's error code and message: never
from the request, so a credential sent in a header or a body is in none of them.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from protocol.messages import RetryLater

from .http1 import Connect, Http1Pool, basic_auth
from .http1_wire import form_urlencoded
from .http2 import Http2Pool
from .http_errors import Timeout, TransportError

# hpack logs every header it encodes or decodes at DEBUG (an Authorization header with them): never below INFO, so a node
# run with log_level DEBUG still writes no credential (tests/providers/test_fcm.py and test_apns.py check DEBUG logs)
logging.getLogger("hpack").setLevel(logging.INFO)

MAX_ANSWER = 16 * 1024  # of an answer's body, read into the verdict (the rest is dropped)
MAX_WAIT_S = 3600.0  # the longest Retry-After honoured


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # lower-case names; a repeated header's values joined by ", "
    body: bytes  # at most the call's limit
    http_version: str


class HttpClients:
    """One provider's connections: per origin an HTTP/1.1 pool (http1.py), or with `http2` an HTTP/2 pool (http2.py).

    An HTTP/1.1 connection carries one request at a time, so a provider answering in 100 ms needs
    hundreds of connections for thousands of requests a second: each origin's pool has up to
    `max_connections`. HTTP/2 multiplexes requests on a connection (up to the server's
    SETTINGS_MAX_CONCURRENT_STREAMS each), so a few suffice. With `http2`, https origins are
    spoken to in HTTP/2 only (ALPN "h2"; a server refusing it is a ConnectError), http ones in
    HTTP/1.1 (a test's plain emulator)."""

    def __init__(self, timeout_s: float, max_connections: int, ca_file: Path | None, *, http2: bool,
                 connect: Connect | None = None) -> None:
        self.timeout_s = timeout_s
        self.connect = connect
        self.max_connections = max_connections
        self.http2 = http2
        self.tls = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
        self.tls_h2: ssl.SSLContext | None = None
        if http2:
            self.tls_h2 = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
            self.tls_h2.set_alpn_protocols(["h2"])
        self.pools: dict[tuple[str, str, int], Http1Pool] = {}
        self.h2_pools: dict[tuple[str, int], Http2Pool] = {}
        self.origins: dict[str, tuple[str, int | None]] = {}  # a URL's netloc: its host and port (parsed once)

    def pool(self, scheme: str, host: str, port: int | None) -> Http1Pool:
        key = (scheme, host, port or (443 if scheme == "https" else 80))
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = Http1Pool(*key, timeout_s=self.timeout_s, max_connections=self.max_connections,
                                               tls=self.tls, connect=self.connect)
        return pool

    def h2_pool(self, host: str, port: int | None) -> Http2Pool:
        key = (host, port or 443)
        pool = self.h2_pools.get(key)
        if pool is None:
            assert self.tls_h2 is not None
            pool = self.h2_pools[key] = Http2Pool(*key, timeout_s=self.timeout_s, max_connections=self.max_connections,
                                                  tls=self.tls_h2, connect=self.connect)
        return pool

    async def aclose(self) -> None:
        for pool in self.pools.values():
            await pool.aclose()
        for h2_pool in self.h2_pools.values():
            await h2_pool.aclose()

    async def __aenter__(self) -> HttpClients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def http_client(timeout_s: float, max_connections: int, ca_file: Path | None, *, http2: bool,
                connect: Connect | None = None) -> HttpClients:
    """One provider's connections: their own pools, no redirects, the CA file's roots if given (else the system's);
    with `connect`, every connection is opened by it (actors/clients/ssrf.py: only to checked addresses)."""
    return HttpClients(timeout_s, max_connections, ca_file, http2=http2, connect=connect)


async def call(http: HttpClients, method: str, url: str, *, limit: int = MAX_ANSWER, json: Any = None,
               data: Mapping[str, str] | None = None, auth: tuple[str, str] | None = None,
               headers: Mapping[str, str] | None = None, content: bytes | None = None) -> Answer:
    """One request (a JSON body, a form, bytes as they are, or none); the answer with its body read up to `limit`
    bytes, never decompressed. Raises a TransportError on transport failures (a Timeout when a step, or the whole
    call, took longer than allowed)."""
    parts = urlsplit(url)
    origin = http.origins.get(parts.netloc)
    if origin is None:
        if not parts.hostname:
            raise ValueError(f"not an absolute URL: {url!r}")
        origin = http.origins[parts.netloc] = (parts.hostname, parts.port)
    host, port = origin
    fields = list(headers.items()) if headers else []
    body = b""
    if content is not None:
        body = content
    elif json is not None:
        body = msgspec.json.encode(json)
        fields.append(("Content-Type", "application/json"))
    elif data is not None:
        body = form_urlencoded(data.items())
        fields.append(("Content-Type", "application/x-www-form-urlencoded"))
    if auth is not None:
        fields.append(("Authorization", basic_auth(*auth)))
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if http.http2 and parts.scheme == "https":
        status, answer_headers, answer = await http.h2_pool(host, port).request(method, target, fields, body, limit)
        return Answer(status, answer_headers, answer, "HTTP/2")
    status, answer_headers, answer = await http.pool(parts.scheme, host, port).request(
        method, target, fields, body, limit)
    return Answer(status, answer_headers, answer, "HTTP/1.1")


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds (its HTTP-date form is not used by these APIs), bounded to MAX_WAIT_S."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        wait = float(raw)
    except ValueError:
        return None
    return min(MAX_WAIT_S, max(0.0, wait)) if math.isfinite(wait) else None


def transport_failure(provider: str, exc: TransportError) -> RetryLater:
    """A timeout or connection error: the provider's failure, retried. The text names the error's kind, not the request."""
    if isinstance(exc, Timeout):
        return RetryLater(f"{provider}: timed out ({type(exc).__name__})")
    return RetryLater(f"{provider}: {type(exc).__name__}: {str(exc)[:200]}")


def text_of(body: bytes, limit: int = 200) -> str:
    """The start of a body that is not the JSON expected, as one line."""
    return body[:limit].decode("utf-8", "replace").replace("\n", " ").replace("\r", " ")
