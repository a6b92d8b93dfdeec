"""What the HTTP providers' clients share (Twilio, FCM, APNs): the httpx client, a call whose answer is read
up to a limit, Retry-After, and the verdict of a transport error.

An answer's body is read up to `limit` bytes whatever its size (a provider, or something
in between, answering megabytes costs no more than the limit); the rest is dropped with
the connection's stream. Every call has the client's timeout (connect, each read, each
write, a free connection from the pool), and the whole call at most twice that. The error texts a verdict carries are built from
the status, the provider's error code and message: never from the request, so a
credential sent in a header or a body is in none of them.
"""

from __future__ import annotations

import logging
import math
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore
import httpx
import trio

from protocol.messages import RetryLater

# hpack logs every header it encodes or decodes at DEBUG (an Authorization header with them): never below INFO, so a node
# run with log_level DEBUG still writes no credential (tests/providers/test_fcm.py and test_apns.py check DEBUG logs)
logging.getLogger("hpack").setLevel(logging.INFO)

MAX_ANSWER = 16 * 1024  # of an answer's body, read into the verdict (the rest is dropped)
MAX_WAIT_S = 3600.0  # the longest Retry-After honoured


@dataclass(frozen=True)
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes  # at most the call's limit
    http_version: str


POOL_CONNECTIONS = 8  # HTTP/1.1 connections per httpx client (below)


class HttpClients:
    """One provider's httpx clients, taken in turn by `call`.

    HTTP/1.1 carries one request per connection at a time, so a provider answering in 100 ms
    needs hundreds of connections for thousands of requests a second; but httpcore's pool
    scans every connection for every waiting request (one client of 256 connections cost
    7 ms of CPU per request with 1,000 requests at once, measured: docs/providers.md), so
    the connections are split over clients of at most POOL_CONNECTIONS each. HTTP/2
    multiplexes requests on a connection: one client.
    """

    def __init__(
        self, timeout_s: float, max_connections: int, ca_file: Path | None, *, http2: bool,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else True
        sizes = [max_connections] if http2 else [
            len(range(n, max_connections, math.ceil(max_connections / POOL_CONNECTIONS)))
            for n in range(math.ceil(max_connections / POOL_CONNECTIONS))
        ]
        self.timeout_s = timeout_s
        self.clients = [
            httpx.AsyncClient(timeout=timeout_s, limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                              follow_redirects=False, verify=verify, http2=http2)
            if network_backend is None else
            httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False,  # no proxy from the environment
                              transport=_transport(verify, size, http2, network_backend))
            for size in sizes
        ]
        self._turn = 0

    def next(self) -> httpx.AsyncClient:
        self._turn = (self._turn + 1) % len(self.clients)
        return self.clients[self._turn]

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def __aenter__(self) -> HttpClients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _transport(verify: ssl.SSLContext | bool, size: int, http2: bool, backend: httpcore.AsyncNetworkBackend) -> httpx.AsyncHTTPTransport:
    """httpx's transport over a pool whose connections `backend` opens (actors/clients/ssrf.py: only to checked addresses)."""
    transport = httpx.AsyncHTTPTransport(verify=verify, http2=http2, trust_env=False)
    ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
    # the transport's own pool replaced by one with the same settings and the backend (httpx takes no backend itself)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context, max_connections=size, max_keepalive_connections=size, http1=True, http2=http2,
        network_backend=backend,
    )
    return transport


def http_client(
    timeout_s: float, max_connections: int, ca_file: Path | None, *, http2: bool,
    network_backend: httpcore.AsyncNetworkBackend | None = None,
) -> HttpClients:
    """The httpx clients of one provider: their own pools, no redirects, the CA file's roots if given (else the system's);
    with `network_backend`, every connection is opened by it and no proxy is taken from the environment."""
    return HttpClients(timeout_s, max_connections, ca_file, http2=http2, network_backend=network_backend)


async def call(http: HttpClients, method: str, url: str, *, limit: int = MAX_ANSWER, decode: bool = True, **request: Any) -> Answer:
    """One request; the answer with its body read up to `limit` bytes. Raises httpx.HTTPError on transport failures.

    The client's timeout bounds each step (connect, a read, a write); the whole call is bounded too, by twice the read
    timeout, so an answer trickled a byte at a time (each read within its timeout) cannot hold a slot for long."""
    deadline_s = 2 * http.timeout_s
    with trio.move_on_after(deadline_s) as scope:
        async with http.next().stream(method, url, **request) as response:
            body = b""
            # decode=False: the bytes as they came, never inflated (a gzip bomb's chunk would decompress whole, before the limit)
            async for chunk in (response.aiter_bytes() if decode else response.aiter_raw()):
                body += chunk
                if len(body) >= limit:
                    body = body[:limit]
                    break
        return Answer(response.status_code, response.headers, body, response.http_version)
    assert scope.cancelled_caught
    raise httpx.TimeoutException(f"no whole answer within {deadline_s:g} s")


def retry_after_s(headers: httpx.Headers) -> float | None:
    """Retry-After in seconds (its HTTP-date form is not used by these APIs), bounded to MAX_WAIT_S."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        wait = float(raw)
    except ValueError:
        return None
    return min(MAX_WAIT_S, max(0.0, wait)) if math.isfinite(wait) else None


def transport_failure(provider: str, exc: httpx.HTTPError) -> RetryLater:
    """A timeout or connection error: the provider's failure, retried. The text names the error's kind, not the request."""
    if isinstance(exc, httpx.TimeoutException):
        return RetryLater(f"{provider}: timed out ({type(exc).__name__})")
    return RetryLater(f"{provider}: {type(exc).__name__}: {str(exc)[:200]}")


def text_of(body: bytes, limit: int = 200) -> str:
    """The start of a body that is not the JSON expected, as one line."""
    return body[:limit].decode("utf-8", "replace").replace("\n", " ").replace("\r", " ")
