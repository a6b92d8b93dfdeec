"""A lean HTTP/1.1 client over Trio streams: one origin's keep-alive pool (the Twilio and SendGrid clients' transport).

Why not httpx here: through httpx and httpcore a request cost about 0.8 ms of CPU (URL
parsing, cookie jar, anyio, the pool's scans, two socket writes), twice a whole delivery's
budget at 2,000 deliveries/s (docs/providers.md "Throughput through the real clients"). The bytes on
the wire (a request written in one piece, an answer parsed as it comes, h11's rules) are
actors/clients/http1_wire.py's.

What it does, and nothing more:

* At most `max_connections` connections to the origin, idle ones reused last-in first-out;
  a request waits for one at most `timeout_s` (a PoolTimeout).
* Each step of a request (the wait for a connection, the connect and TLS handshake, the
  write, each read) has `timeout_s`, the whole request `2 * timeout_s`: a server trickling
  its answer cannot hold a connection for long. One cancel scope, its deadline moved per step.
* TLS through `ssl` and Trio's SSLStream, with the context given (the provider's CA file, or the system's roots).
* The answer's body is read up to `limit` bytes; the rest is not read and the connection is closed.
* No redirects: a 3xx is an answer like any other.
* A connection goes back to the pool only after a whole answer was read and both sides
  may go on (HTTP/1.1 or later, no `Connection: close`); anything else (an error, a timeout, a cancellation, a
  body cut at the limit, `Connection: close`) closes it.
* An idle connection the server closed (or wrote to) meanwhile is dropped before use, as is
  one whose answer came with bytes after its end (never taken as the next request's answer). A
  request on a reused connection that breaks before any byte of the answer is sent again
  once, on a new connection, only when that is safe: an idempotent method (GET, HEAD,
  PUT, DELETE, OPTIONS). Never a POST that may have reached the server.

Every failure is a TransportError (actors/clients/http_errors.py); its text is the kind of
failure and the origin, never the request.
"""

from __future__ import annotations

import select
import ssl
from base64 import b64encode
from collections.abc import Awaitable, Callable, Iterable

import trio

from .http1_wire import AnswerReader, Malformed, RequestRefused, Truncated, request_head
from .http_errors import (
    STEP_TIMEOUTS,
    ConnectError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    RequestError,
    TransportError,
    WriteError,
    why,
)

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"})
MAX_HEAD = 64 * 1024  # an answer's status lines and headers, 1xx ones included
READ_SIZE = 65536
HEADS_KEPT = 64  # request heads kept made (most providers send the same head each time: only Content-Length differs)


class Connection:
    """One keep-alive connection: its stream, its socket's descriptor, and whether it carried a request already."""

    __slots__ = ("stream", "fd", "reused")

    def __init__(self, stream: trio.abc.Stream, fd: int) -> None:
        self.stream = stream
        self.fd = fd
        self.reused = False

    def looks_closed(self) -> bool:
        """An idle connection is readable only if the server closed it or wrote out of turn: either way, unusable."""
        return readable_now(self.fd)


def readable_now(fd: int) -> bool:
    """Whether a socket has something to read (bytes, an EOF, an error) this instant, without reading it."""
    poll = select.poll()
    poll.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poll.poll(0))


def basic_auth(user: str, password: str) -> str:
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode("ascii")


Connect = Callable[[str, int], Awaitable[trio.SocketStream]]  # (host, port) -> a TCP stream, as trio.open_tcp_stream


class Http1Pool:
    """Keep-alive HTTP/1.1 connections to one origin (scheme, host, port), at most `max_connections` of them."""

    def __init__(self, scheme: str, host: str, port: int, *, timeout_s: float, max_connections: int,
                 tls: ssl.SSLContext | None, connect: Connect | None = None) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL scheme: {scheme!r}")
        self.scheme, self.host, self.port = scheme, host, port
        self.origin = f"{scheme}://{host}:{port}"
        name = f"[{host}]" if ":" in host else host  # an IPv6 literal, bracketed as in its URL
        self.host_header = name if port == (443 if scheme == "https" else 80) else f"{name}:{port}"
        self.timeout_s = timeout_s
        self.tls = tls if scheme == "https" else None
        if self.tls is not None:
            self.tls.set_alpn_protocols(["http/1.1"])
        self.open_tcp: Connect = connect or trio.open_tcp_stream  # the webhook channel's: to checked addresses only (ssrf.py)
        self.slots = trio.Semaphore(max_connections)
        self.idle: list[Connection] = []
        self.open = 0  # connections open now, idle or in use (at most max_connections)
        self.opened = 0  # connections opened in all
        self._heads: dict[tuple[bytes, str, tuple[tuple[str, str], ...]], bytes] = {}  # (method, target, headers) -> head
        self._closed = False

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes,
                      limit: int) -> tuple[int, dict[str, str], bytes]:
        """Send one request; the status, the headers (lower-case names, repeated ones joined by ", ") and the body
        read up to `limit` bytes. Raises a TransportError (a Timeout for a step or the whole call that took too long)."""
        verb = method.upper().encode("ascii")
        given = tuple(headers)
        key = (verb, target, given)
        head = self._heads.get(key)
        if head is None:  # the request line and headers, checked once for every request that has the same
            lines = [("Host", self.host_header),
                     *([] if any(n.lower() == "user-agent" for n, _ in given) else [("User-Agent", "herald")]), *given]
            try:
                head = request_head(verb, target, lines)
            except RequestRefused as exc:  # its text never quotes the value: a credential, maybe
                raise RequestError(f"{self.origin}: {exc} (a control character?)") from None
            if len(self._heads) >= HEADS_KEPT:
                self._heads.clear()
            self._heads[key] = head
        if body or verb not in (b"GET", b"HEAD"):
            request = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        else:
            request = head + b"\r\n"
        step = "pool"
        now = trio.current_time()
        whole = now + 2 * self.timeout_s
        with trio.CancelScope(deadline=now + self.timeout_s) as scope:
            acquired = False
            try:
                try:
                    self.slots.acquire_nowait()
                except trio.WouldBlock:
                    await self.slots.acquire()
                acquired = True
                for attempt in (1, 2):
                    connection, step = None, "connect"
                    while self.idle and connection is None:
                        candidate = self.idle.pop()
                        if candidate.looks_closed():
                            self._drop(candidate)
                        else:
                            connection = candidate
                    if connection is None:  # the connect's step (a reused one's write sets its own deadline)
                        scope.deadline = min(whole, trio.current_time() + self.timeout_s)
                        connection = await self._connect()
                    try:
                        return await self._exchange(connection, request, verb == b"HEAD", limit, scope, whole, steps := [step])
                    except TransportError as exc:
                        self._drop(connection)
                        answered = steps[-1] == "body"
                        if attempt == 2 or not connection.reused or answered or verb not in IDEMPOTENT:
                            raise exc from None
                        step = steps[-1]
                    except BaseException:
                        self._drop(connection)
                        step = steps[-1]
                        raise
            finally:
                if acquired:
                    self.slots.release()
        raise STEP_TIMEOUTS.get(step, ReadTimeout)(f"{self.origin}: no {step if step != 'body' else 'whole answer'} "
                                                   f"within its timeout ({self.timeout_s:g} s, the call {2 * self.timeout_s:g} s)")

    async def _exchange(self, connection: Connection, request: bytes, head_request: bool, limit: int,
                        scope: trio.CancelScope, whole: float, steps: list[str]) -> tuple[int, dict[str, str], bytes]:
        steps.append("write")
        scope.deadline = min(whole, trio.current_time() + self.timeout_s)
        try:
            await connection.stream.send_all(request)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise WriteError(f"{self.origin}: the connection broke while writing ({why(exc)})") from None
        steps.append("read")
        answer = AnswerReader(head_request)
        head_size = 0
        while True:
            scope.deadline = min(whole, trio.current_time() + self.timeout_s)
            try:
                received = await connection.stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ReadError(f"{self.origin}: the connection broke while reading ({why(exc)})") from None
            try:
                if not received:
                    answer.closed()
                    break
                if answer.status is None:
                    head_size += len(received)
                    if head_size > MAX_HEAD:  # the wire bounds an incomplete head only: a whole one (and 1xx ones), too
                        raise RemoteProtocolError(f"{self.origin}: an answer's head beyond {MAX_HEAD} bytes")
                answer.feed(bytes(received))
            except Truncated:
                raise ReadError(f"{self.origin}: the server closed the connection before a whole answer") from None
            except Malformed as exc:
                raise RemoteProtocolError(f"{self.origin}: not an HTTP/1.1 answer ({exc})") from None
            if answer.status is not None:
                if steps[-1] != "body":
                    steps.append("body")
                if answer.size >= limit:  # the rest is not read: this connection cannot carry another request
                    self._drop(connection)
                    return answer.status, answer.headers, b"".join(answer.chunks)[:limit]
            if answer.done:
                break
        assert answer.status is not None
        if answer.reusable and not self._closed:
            connection.reused = True
            self.idle.append(connection)
        else:
            self._drop(connection)
        return answer.status, answer.headers, b"".join(answer.chunks)[:limit]

    async def _connect(self) -> Connection:
        try:
            tcp = await self.open_tcp(self.host, self.port)
        except OSError as exc:
            raise ConnectError(f"{self.origin}: cannot connect ({why(exc)})") from None
        self.open += 1
        self.opened += 1
        stream: trio.abc.Stream = tcp
        try:
            tcp.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, True)
            if self.tls is not None:
                stream = trio.SSLStream(tcp, self.tls, server_hostname=self.host, https_compatible=True)
                await stream.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
            self.open -= 1
            await trio.aclose_forcefully(stream)
            raise ConnectError(f"{self.origin}: TLS failed ({why(exc)})") from None
        except BaseException:
            self.open -= 1
            await trio.aclose_forcefully(stream)
            raise
        return Connection(stream, tcp.socket.fileno())

    def _drop(self, connection: Connection) -> None:
        """Close a connection now (no close_notify, no wait): it is never used again."""
        if connection.fd < 0:
            return
        connection.fd = -1
        self.open -= 1
        tcp = connection.stream.transport_stream if isinstance(connection.stream, trio.SSLStream) else connection.stream
        assert isinstance(tcp, trio.SocketStream)
        tcp.socket.close()

    async def aclose(self) -> None:
        self._closed = True
        while self.idle:
            self._drop(self.idle.pop())
        await trio.lowlevel.checkpoint()

