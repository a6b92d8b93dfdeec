"""A lean HTTP/1.1 client on h11 over Trio streams: one origin's keep-alive pool (the Twilio and SendGrid clients' transport).

Why not httpx here: through httpx and httpcore a request cost about 0.8 ms of CPU (URL
parsing, cookie jar, anyio, the pool's scans, two socket writes), twice a whole delivery's
budget at 2,000 deliveries/s (docs/providers.md "Throughput through the real clients").

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
  may go on (h11's next cycle); anything else (an error, a timeout, a cancellation, a
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

import h11
import trio

from .http_errors import (
    STEP_TIMEOUTS,
    ConnectError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    RequestError,
    TransportError,
    WriteError,
)

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"})
MAX_HEAD = 64 * 1024  # an answer's status line and headers (h11's limit for an incomplete event)
READ_SIZE = 65536


class Connection:
    """One keep-alive connection: its stream and h11's state of it."""

    __slots__ = ("stream", "h11", "fd", "reused")

    def __init__(self, stream: trio.abc.Stream, fd: int) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.fd = fd
        self.reused = False

    def looks_closed(self) -> bool:
        """An idle connection is readable only if the server closed it or wrote out of turn: either way, unusable."""
        poll = select.poll()
        poll.register(self.fd, select.POLLIN | select.POLLERR | select.POLLHUP)
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
        self._closed = False

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes,
                      limit: int) -> tuple[int, dict[str, str], bytes]:
        """Send one request; the status, the headers (lower-case names, repeated ones joined by ", ") and the body
        read up to `limit` bytes. Raises a TransportError (a Timeout for a step or the whole call that took too long)."""
        verb = method.upper().encode("ascii")
        given = list(headers)
        head = [("Host", self.host_header), *([] if any(n.lower() == "user-agent" for n, _ in given) else [("User-Agent", "herald")]),
                *given]
        if body or verb not in (b"GET", b"HEAD"):
            head.append(("Content-Length", str(len(body))))
        try:
            request = h11.Request(method=verb, target=target, headers=head)
        except h11.LocalProtocolError:  # h11's text would quote the value: a credential, maybe
            raise RequestError(f"{self.origin}: a request header or target that HTTP/1.1 refuses (a control character?)") from None
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
                    scope.deadline = min(whole, trio.current_time() + self.timeout_s)
                    if connection is None:
                        connection = await self._connect()
                    try:
                        return await self._exchange(connection, request, body, limit, scope, whole, steps := [step])
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

    async def _exchange(self, connection: Connection, request: h11.Request, body: bytes, limit: int,
                        scope: trio.CancelScope, whole: float, steps: list[str]) -> tuple[int, dict[str, str], bytes]:
        conn = connection.h11
        steps.append("write")
        scope.deadline = min(whole, trio.current_time() + self.timeout_s)
        data = conn.send(request) + (conn.send(h11.Data(data=body)) if body else b"") + conn.send(h11.EndOfMessage())
        try:
            await connection.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise WriteError(f"{self.origin}: the connection broke while writing ({_why(exc)})") from None
        steps.append("read")
        response: h11.Response | None = None
        chunks: list[bytes] = []
        size = 0
        received_eof = False
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if conn.their_state is h11.ERROR and received_eof:  # the close came before the answer's end
                    raise ReadError(f"{self.origin}: the server closed the connection before a whole answer") from None
                raise RemoteProtocolError(f"{self.origin}: not an HTTP/1.1 answer ({exc})") from None
            if event is h11.NEED_DATA:
                scope.deadline = min(whole, trio.current_time() + self.timeout_s)
                try:
                    received = await connection.stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise ReadError(f"{self.origin}: the connection broke while reading ({_why(exc)})") from None
                received_eof = not received
                size += len(received) if response is None else 0
                if response is None and size > MAX_HEAD:  # h11 bounds an incomplete head only: a whole one, too
                    raise RemoteProtocolError(f"{self.origin}: an answer's head beyond {MAX_HEAD} bytes")
                try:
                    conn.receive_data(bytes(received))
                except h11.RemoteProtocolError as exc:
                    raise RemoteProtocolError(f"{self.origin}: not an HTTP/1.1 answer ({exc})") from None
                continue
            if type(event) is h11.Response:
                response, size = event, 0
                steps.append("body")
            elif type(event) is h11.Data:
                size += len(event.data)
                chunks.append(event.data)
                if size >= limit:  # the rest is not read: this connection cannot carry another request
                    self._drop(connection)
                    break
            elif type(event) is h11.EndOfMessage:
                reusable = conn.our_state is h11.DONE and conn.their_state is h11.DONE and not received_eof
                if reusable and not conn.trailing_data[0] and not self._closed:  # bytes after the answer: not trusted
                    conn.start_next_cycle()
                    connection.reused = True
                    self.idle.append(connection)
                else:
                    self._drop(connection)
                break
            elif type(event) is h11.ConnectionClosed:
                raise ReadError(f"{self.origin}: the server closed the connection before a whole answer")
            # an InformationalResponse (1xx) is skipped: the final answer follows
        assert response is not None
        headers: dict[str, str] = {}
        for name, value in response.headers:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return response.status_code, headers, b"".join(chunks)[:limit]

    async def _connect(self) -> Connection:
        try:
            tcp = await self.open_tcp(self.host, self.port)
        except OSError as exc:
            raise ConnectError(f"{self.origin}: cannot connect ({_why(exc)})") from None
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
            raise ConnectError(f"{self.origin}: TLS failed ({_why(exc)})") from None
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


def _why(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(cause or exc) or type(cause or exc).__name__
    return text[:200]
