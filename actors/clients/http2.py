"""A lean HTTP/2 client over Trio sockets: one origin's connections (the FCM and APNs clients' transport).

Why not httpx here: through httpx, httpcore and h2 a request cost about 1.5 ms of CPU
(three socket writes per request, httpcore's scans of its pool and per-stream locks, hpack's
Huffman coding of the same Authorization header on every request), 4.6x the HTTP/1.1 pool's
(docs/providers.md "Throughput through the real clients"). Its frames are our own
(actors/clients/http2_wire.py, checked against h2): through h2's H2Connection, building and
parsing them took ~0.1 ms more per request.

What it does, and nothing more:

* TLS through ssl's SSLObject over a Trio socket (TlsStream): ALPN "h2" only, the context's
  roots (the provider's ca_file, else the system's) and host name check; a read takes every TLS
  record that came at once (Trio's SSLStream hands out one per call). The connect function
  given (the SSRF guard's, as for http1.py) opens the TCP connection. The server's first frame
  must be its SETTINGS (garbage instead of a preface is a RemoteProtocolError at once).
* Headers are checked here (no CR, LF or NUL; a refused one is a RequestError that quotes
  nothing) and coded in HPACK without Huffman and without the server's dynamic table
  (http2_wire.header_bytes: a static table entry, else a literal; the Authorization header a
  literal never indexed, RFC 7541 7.1.3), each (name, value) once per pool and kept (up to CODED of
  them): the token, topic and content type of every request cost a dict lookup.
* At most `max_connections` connections to the origin, each carrying
  up to the server's SETTINGS_MAX_CONCURRENT_STREAMS requests at once; another connection is
  opened (one at a time) when every open one is full; a request waits for a free stream at
  most `timeout_s` (a PoolTimeout).
* No task of its own: the tasks waiting for their answers on a connection take turns reading
  it. The one reading (whichever request got there first) hands every frame to its stream and
  wakes the requests it completed; when its own answer is complete (or it is cancelled) it
  hands the reading on to another waiting request. So nothing runs while nobody waits, a
  client is closed by closing its sockets (no task to leak), and the providers' lifecycle is
  unchanged (a client made in __init__, closed by aclose; a reader task per connection would
  need a nursery that outlives every call, which nothing in that lifecycle holds).
* Writes are coalesced: a request puts its frames in the connection's buffer and, unless a
  write is under way (which takes them too), writes the whole buffer in one `send_all`,
  after letting the other runnable tasks add theirs. A write waiting for the socket is
  shielded from the request's cancellation (a cut TLS record would break every stream) and
  bounded by `timeout_s` (then the connection is broken): a request cancelled while writing
  for others returns once that write ends.
* Flow control: data received is acknowledged at once (WINDOW_UPDATE), a request's body is
  sent within the server's windows (waiting for its WINDOW_UPDATEs).
* Each step of a request (a free stream, the connect and TLS handshake, the body's write, the
  whole answer) has `timeout_s`, the whole request `2 * timeout_s`; a request cancelled or
  timed out resets its stream (RST_STREAM CANCEL), the connection goes on.
* The answer's body is read up to `limit` bytes; the rest is refused (RST_STREAM CANCEL),
  the connection goes on. No redirects.
* GOAWAY: the connection takes no new request; the streams the server says it never
  processed (above its last_stream_id) are sent again on another connection, at most
  MAX_REFUSED times (a REFUSED_STREAM reset likewise); those at or below it are read to their
  end, and if the connection breaks first they fail: never sent twice.
* A connection reset or EOF fails its streams (a ReadError) and the connection is dropped; so does
  a frame that breaks HTTP/2 (a RemoteProtocolError, after our GOAWAY naming the error code);
  an idle connection is checked for a GOAWAY or an EOF before use.

Every failure is a TransportError (actors/clients/http_errors.py); its text is the kind of
failure and the origin, never the request.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterable

import trio

from . import http2_wire as wire
from .http1 import Connect, readable_now
from .http_errors import (
    STEP_TIMEOUTS,
    ConnectError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    RequestError,
    TransportError,
    WriteError,
    WriteTimeout,
    why,
)

READ_SIZE = 65536
MAX_HEAD = 64 * 1024  # an answer's header list (SETTINGS_MAX_HEADER_LIST_SIZE)
MAX_STREAMS = 1000  # per connection, whatever the server allows
WINDOW = 16 * 1024 * 1024  # the connection's receive window (the streams' stay at 64 KiB: answers are small)
CODED = 512  # header fields kept coded per pool (then it starts again)
CODED_VALUE = 4096  # a longer value is coded in every request, not kept
MAX_REFUSED = 3  # times a request the server did not process (GOAWAY, REFUSED_STREAM) is sent again
LAST_STREAM_ID = 2**31 - 1 - 2 * MAX_STREAMS  # a connection this far is retired (stream ids are not reused)
AGENT = wire.header_bytes(b"user-agent", b"herald")


def _refused(key: bytes, text: bytes) -> bool:
    """A header HTTP/2 (and Herald) refuses: an empty, pseudo (":...") or spaced name, a CR, LF or NUL in either
    (`in` tests: a fifth of a set intersection's cost, which made a set of every value's bytes)."""
    return (not key or key[:1] == b":" or b" " in key or b"\r" in key or b"\n" in key or b"\0" in key
            or b"\r" in text or b"\n" in text or b"\0" in text)


class Refused(Exception):
    """The server did not process the stream (above a GOAWAY's last_stream_id, or REFUSED_STREAM): safe to send again."""


class TlsStream:
    """TLS over a Trio socket stream through ssl's SSLObject, reading every TLS record that came at once.

    Trio's SSLStream hands out one TLS record per receive_some (each a pass through the scheduler); an HTTP/2
    server writes a frame or two per record, so with it a connection took ~2.4 reads per socket read. Receiving
    here decrypts all that came (one call), writing encrypts and sends in one send_all. Post-handshake messages
    that need an answer (a TLS 1.3 KeyUpdate) go out with the next write. Cancelling a receive loses nothing;
    a cancelled send_all leaves the stream unusable (Connection.flush shields its writes)."""

    def __init__(self, tcp: trio.SocketStream, context: ssl.SSLContext, host: str, timeout_s: float) -> None:
        self.tcp = tcp
        self.timeout_s = timeout_s
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._in, self._out, server_side=False, server_hostname=host)

    async def handshake(self) -> None:
        """The TLS handshake (certificate and host name checked by the context); raises ssl.SSLError or OSError."""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if self._out.pending:
                    await self._send(self._out.read())
                data = await self._receive(READ_SIZE)
                if not data:
                    raise ssl.SSLEOFError("the server closed the connection during the TLS handshake") from None
                self._in.write(data)
        if self._out.pending:
            await self._send(self._out.read())

    async def _receive(self, max_bytes: int) -> bytes:
        """The socket's bytes, through os.read on its descriptor (Trio's SocketStream costs ~5 % of a request more)."""
        while True:
            fd = self.tcp.socket.fileno()
            if fd < 0:
                raise trio.ClosedResourceError("the connection is closed")
            try:
                data = os.read(fd, max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)  # a checkpoint; ClosedResourceError if the socket is closed meanwhile
                continue
            await trio.lowlevel.cancel_shielded_checkpoint()  # no wait so far: let the others run (never losing the bytes)
            return data

    async def _send(self, data: bytes) -> None:
        """Write it all. A wait for the socket (the server not reading) is shielded from cancellation (a record cut
        in the middle would break every stream) and bounded by `timeout_s`: then TimeoutError."""
        view = memoryview(data)
        while view:
            fd = self.tcp.socket.fileno()
            if fd < 0:
                raise trio.ClosedResourceError("the connection is closed")
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                with trio.CancelScope(shield=True, deadline=trio.current_time() + self.timeout_s) as scope:
                    await trio.lowlevel.wait_writable(fd)
                if scope.cancelled_caught:
                    raise TimeoutError(f"no write within {self.timeout_s:g} s") from None
        await trio.lowlevel.cancel_shielded_checkpoint()

    def selected_alpn_protocol(self) -> str | None:
        return self.tls.selected_alpn_protocol()

    async def receive_some(self, max_bytes: int = READ_SIZE) -> bytes:
        """All the plaintext the records received so far hold (waiting for one if none); b"" at EOF."""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self.tls.read(max_bytes)
            except ssl.SSLWantReadError:
                if chunks:
                    return b"".join(chunks)
                data = await self._receive(max_bytes)
                if not data:  # a close without close_notify: an EOF as any other (as https_compatible)
                    return b""
                self._in.write(data)
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b"".join(chunks)
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(f"TLS: {exc}") from exc
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    async def send_all(self, data: bytes) -> None:
        try:
            self.tls.write(data)
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(f"TLS: {exc}") from exc
        await self._send(self._out.read())


class Stream:
    """One request's stream: what its answer brought so far."""

    __slots__ = ("id", "status", "headers", "chunks", "size", "limit", "done", "error", "task", "window")

    def __init__(self, stream_id: int, limit: int) -> None:
        self.id = stream_id
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.done = False  # answered whole, cut at the limit, reset, or failed (error)
        self.error: BaseException | None = None  # a TransportError, or Refused
        self.task: trio.lowlevel.Task | None = None  # parked: woken when the stream completes or the reading is handed over
        self.window = False  # waiting for the server's window to send the body


class Connection:
    """One HTTP/2 connection: its stream, its frames' state (http2_wire.H2Wire), the streams open on it."""

    def __init__(self, pool: Http2Pool, stream: TlsStream, tcp: trio.SocketStream) -> None:
        self.pool = pool
        self.stream = stream
        self.tcp = tcp
        self.fd = tcp.socket.fileno()
        self.wire = wire.H2Wire(MAX_HEAD, WINDOW)
        self.streams: dict[int, Stream] = {}
        self.parked: dict[int, Stream] = {}  # streams whose task waits for a wake (the answer, or its turn to read)
        self.reading = False  # a task reads the connection now
        self.writing = False  # a task writes the buffer now
        self.max_streams = 1  # until the server's SETTINGS say more
        self.settled = False  # the server's SETTINGS came
        self.goaway: int | None = None  # the last stream id of the server's GOAWAY
        self.error: TransportError | None = None  # broken: every stream failed with it

    @property
    def usable(self) -> bool:
        return self.error is None and self.goaway is None

    @property
    def free(self) -> bool:
        return self.usable and len(self.streams) < self.max_streams

    def looks_closed(self) -> bool:
        """An idle connection is readable only if the server wrote (a GOAWAY, a PING) or closed it."""
        return readable_now(self.fd)

    # the reading, in turns

    async def until(self, stream: Stream, ready: Callable[[], bool]) -> None:
        """Return once ready() (checked after every frame batch): reading the connection when no other task does,
        else parked until the reader wakes this stream."""
        try:
            while not ready():
                if self.reading:
                    stream.task = trio.lowlevel.current_task()
                    self.parked[stream.id] = stream

                    def abort(_: object) -> trio.lowlevel.Abort:
                        stream.task = None
                        self.parked.pop(stream.id, None)
                        return trio.lowlevel.Abort.SUCCEEDED

                    await trio.lowlevel.wait_task_rescheduled(abort)  # woken by _wake (a trio.Event, cheaper)
                    continue
                self.reading = True
                try:
                    while not ready():
                        await self._read()
                finally:
                    self.reading = False
        finally:
            if not self.reading and self.parked:  # the turn to read goes to a waiting stream
                _, other = self.parked.popitem()
                self._wake(other)

    async def _read(self) -> None:
        try:
            data = await self.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.fail(ReadError(f"{self.pool.origin}: the connection broke while reading ({why(exc)})"))
            return
        if not data:
            self.fail(ReadError(f"{self.pool.origin}: the server closed the connection before a whole answer"))
            return
        try:
            events = self.wire.receive(data)
        except wire.ProtocolError as exc:  # a connection error: our GOAWAY says why, every stream fails
            self.wire.close(exc.code)
            await self.flush(coalesce=False)
            self.fail(RemoteProtocolError(f"{self.pool.origin}: not an HTTP/2 answer ({wire.error_name(exc.code)}: {exc})"))
            return
        self.dispatch(events)
        await self.flush(coalesce=False)  # acknowledgements (SETTINGS, PING, WINDOW_UPDATE), resets

    def dispatch(self, events: list[wire.Event]) -> None:
        """Hand each event to its stream; wake the streams it completed."""
        streams = self.streams
        for event in events:
            kind = event[0]
            if kind == wire.BODY:
                stream = streams.get(event[1])
                if stream is None or stream.done:
                    continue
                data = event[2]
                stream.chunks.append(data)
                stream.size += len(data)
                if stream.size >= stream.limit:  # the rest is refused; the connection goes on
                    self._end(stream)
                    self.wire.reset(stream.id)
            elif kind == wire.RESPONSE:
                stream = streams.get(event[1])
                if stream is None:
                    continue
                for name, value in event[2]:
                    if name == b":status":
                        stream.status = int(value) if value.isdigit() and len(value) == 3 else -1  # -1: refused below
                    elif name[:1] != b":":
                        key, text = name.decode("latin-1"), value.decode("latin-1")
                        stream.headers[key] = f"{stream.headers[key]}, {text}" if key in stream.headers else text
            elif kind == wire.ENDED:
                stream = streams.get(event[1])
                if stream is not None and not stream.done:
                    self._end(stream)
            elif kind == wire.RESET:
                stream = streams.get(event[1])
                if stream is not None and not stream.done:
                    code = event[2]
                    if code == wire.REFUSED_STREAM:
                        stream.error = Refused()
                    else:
                        stream.error = ReadError(f"{self.pool.origin}: the server reset the stream ({wire.error_name(code)})")
                    self._end(stream)
            elif kind == wire.WINDOW:
                for stream in streams.values():
                    if stream.window:
                        self._end(stream, done=False)
            elif kind == wire.SETTINGS_CHANGED:
                self.settled = True
                self.max_streams = max(1, min(MAX_STREAMS, self.wire.max_streams))
                self.pool.changed()
            elif kind == wire.GOAWAY_RECEIVED:  # the lowest last stream id so far: those above it are sent again already
                self.goaway = event[1]
                for stream in streams.values():
                    if stream.id > self.goaway and not stream.done:
                        stream.error = Refused()
                        self._end(stream)
                self.pool.retire(self)

    def _end(self, stream: Stream, done: bool = True) -> None:
        stream.done = stream.done or done
        self._wake(stream)

    def _wake(self, stream: Stream) -> None:
        """Reschedule a parked stream's task (once)."""
        if stream.task is not None:
            self.parked.pop(stream.id, None)
            trio.lowlevel.reschedule(stream.task)
            stream.task = None

    # writing

    async def flush(self, *, coalesce: bool) -> None:
        """Write the wire's buffer unless a write is under way (it takes what is added meanwhile). Never cancelled
        (TlsStream's writes are shielded, bounded by timeout_s)."""
        if self.writing or self.error is not None:
            return
        data = b"" if coalesce else self.wire.data_to_send()
        if not data and not coalesce:
            return
        self.writing = True
        try:
            if coalesce:  # the other tasks runnable now add their frames first: one write for all
                await trio.lowlevel.cancel_shielded_checkpoint()
            while data := data or self.wire.data_to_send():
                await self.stream.send_all(data)
                data = b""
        except TimeoutError:
            self.fail(WriteTimeout(f"{self.pool.origin}: a write took longer than {self.pool.timeout_s:g} s"))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.fail(WriteError(f"{self.pool.origin}: the connection broke while writing ({why(exc)})"))
        finally:
            self.writing = False

    def fail(self, error: TransportError) -> None:
        """Broken: every stream fails (those the server never took after a GOAWAY: refused), the socket is closed."""
        if self.error is not None:
            return
        self.error = error
        for stream in self.streams.values():
            if not stream.done:
                stream.error = Refused() if self.goaway is not None and stream.id > self.goaway else error
                self._end(stream)
        self.close()

    def close(self) -> None:
        """The socket closed now (no GOAWAY, no close_notify)."""
        if self.fd >= 0:
            self.fd = -1
            self.tcp.socket.close()
        self.pool.retire(self)


class Http2Pool:
    """HTTP/2 connections to one https origin, at most `max_connections` of them, many requests on each."""

    def __init__(self, host: str, port: int, *, timeout_s: float, max_connections: int, tls: ssl.SSLContext,
                 connect: Connect | None = None) -> None:
        self.host, self.port = host, port
        self.origin = f"https://{host}:{port}"
        name = f"[{host}]" if ":" in host else host
        self.authority = (name if port == 443 else f"{name}:{port}").encode()
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.tls = tls
        self.open_tcp: Connect = connect or trio.open_tcp_stream
        self.connections: list[Connection] = []  # taking new streams
        self.draining: set[Connection] = set()  # no new stream (GOAWAY, broken, closing): their own streams end
        self.connecting = 0
        self.opened = 0  # connections opened in all
        self._changed = trio.Event()  # set when a stream or a connection is freed or opened
        self.waiting = 0  # tasks waiting for it
        self._closed = False
        self._prefixes: dict[str, bytes] = {}  # method -> its request's first three header fields, coded
        self._coded: dict[tuple[str, str], tuple[bytes, bool]] = {}  # (name, value) -> coded, is the User-Agent

    @property
    def open(self) -> int:
        """Connections open now (taking requests or finishing theirs)."""
        return sum(1 for c in self.connections if c.fd >= 0) + sum(1 for c in self.draining if c.fd >= 0)

    def changed(self) -> None:
        if self.waiting:
            self._changed.set()
            self._changed = trio.Event()

    def retire(self, connection: Connection) -> None:
        """No new stream on it; closed once its last stream ended."""
        if connection in self.connections:
            self.connections.remove(connection)
            self.draining.add(connection)
            self.changed()
        if not connection.streams and connection.fd >= 0:
            connection.fd = -1
            connection.tcp.socket.close()
        if connection.fd < 0:
            self.draining.discard(connection)

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes,
                      limit: int) -> tuple[int, dict[str, str], bytes]:
        """Send one request; the status, the headers (lower-case names, repeated ones joined by ", ") and the body
        read up to `limit` bytes. Raises a TransportError (a Timeout for a step or the whole call that took too long)."""
        verb = method.upper()
        prefix = self._prefixes.get(verb)
        if prefix is None:  # :method, :scheme and :authority, the same in every request of this method
            prefix = self._prefixes[verb] = (wire.header_bytes(b":method", verb.encode("ascii")) + wire.header_bytes(b":scheme", b"https")
                                             + wire.header_bytes(b":authority", self.authority))
        head = [prefix, wire.header_bytes(b":path", target.encode("ascii", "replace"))]
        has_agent = False
        coded = self._coded
        for field in headers:
            known = coded.get(field)
            if known is None:
                known = self._code(*field)
            head.append(known[0])
            has_agent = has_agent or known[1]
        if not has_agent:
            head.append(AGENT)
        if body or verb not in ("GET", "HEAD"):
            head.append(wire.header_bytes(b"content-length", b"%d" % len(body)))
        block = b"".join(head)
        steps = ["pool"]
        now = trio.current_time()
        whole = now + 2 * self.timeout_s
        with trio.CancelScope(deadline=now + self.timeout_s) as scope:
            for attempt in range(MAX_REFUSED + 1):
                if attempt:
                    scope.deadline = min(whole, trio.current_time() + self.timeout_s)
                    steps.append("pool")
                before = len(steps)
                connection = await self._acquire(steps)
                if len(steps) > before:  # it waited for a stream or a connection: the write has its own timeout
                    scope.deadline = min(whole, trio.current_time() + self.timeout_s)
                try:
                    return await self._exchange(connection, block, verb == "HEAD", body, limit, scope, whole, steps)
                except Refused:
                    continue
            raise ReadError(f"{self.origin}: the server refused the request {MAX_REFUSED + 1} times (GOAWAY, REFUSED_STREAM)")
        step = steps[-1]
        raise STEP_TIMEOUTS.get(step, ReadTimeout)(f"{self.origin}: no {step if step != 'read' else 'whole answer'} "
                                                   f"within its timeout ({self.timeout_s:g} s, the call {2 * self.timeout_s:g} s)")

    def _code(self, name: str, value: str) -> tuple[bytes, bool]:
        """A request header checked (RequestError) and coded in HPACK; whether it is the User-Agent. Kept for the next
        request (the same token, topic, content type come in every one)."""
        key, text = name.lower().encode("latin-1", "replace"), value.encode("utf-8")
        if _refused(key, text):
            raise RequestError(f"{self.origin}: a request header that HTTP/2 refuses (a control character?)")
        known = (wire.header_bytes(key, text), key == b"user-agent")
        if len(text) <= CODED_VALUE:
            if len(self._coded) >= CODED:
                self._coded.clear()
            self._coded[(name, value)] = known
        return known

    async def _acquire(self, steps: list[str]) -> Connection:
        """A connection with a free stream: one open, else a new one (one connect at a time), else wait for one."""
        while True:
            if self._closed:
                raise ConnectError(f"{self.origin}: the client is closed")
            for connection in self.connections:
                if connection.free:
                    if not connection.streams and not connection.reading and connection.looks_closed():
                        await self._check_idle(connection)
                        break  # the list may have changed: look again
                    return connection
            else:
                if not self.connecting and len(self.connections) + len(self.draining) < self.max_connections:
                    steps.append("connect")
                    self.connecting += 1
                    try:
                        connection = await self._connect()
                    finally:
                        self.connecting -= 1
                        self.changed()
                    if connection.free:
                        return connection
                    continue
                steps.append("pool")
                self.waiting += 1
                try:
                    await self._changed.wait()
                finally:
                    self.waiting -= 1

    async def _check_idle(self, connection: Connection) -> None:
        """An idle connection that became readable: read what came (a GOAWAY, an EOF: it is dropped; a PING: answered)."""
        connection.reading = True
        try:
            await connection._read()
        finally:
            connection.reading = False
        if not connection.usable:
            connection.close()

    async def _connect(self) -> Connection:
        try:
            tcp = await self.open_tcp(self.host, self.port)
        except OSError as exc:
            raise ConnectError(f"{self.origin}: cannot connect ({why(exc)})") from None
        self.opened += 1
        try:
            tcp.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, True)
            stream = TlsStream(tcp, self.tls, self.host, self.timeout_s)
            await stream.handshake()
            if stream.selected_alpn_protocol() != "h2":
                raise ssl.SSLError(f"the server did not agree to HTTP/2 (ALPN: {stream.selected_alpn_protocol()!r})")
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError, ValueError) as exc:
            tcp.socket.close()
            raise ConnectError(f"{self.origin}: TLS failed ({why(exc)})") from None
        except BaseException:
            tcp.socket.close()
            raise
        connection = Connection(self, stream, tcp)
        self.draining.add(connection)  # counted among the open ones; taking requests once the server's SETTINGS came
        try:
            connection.wire.start()
            await connection.flush(coalesce=False)
            probe = Stream(0, 0)
            await connection.until(probe, lambda: connection.settled or connection.error is not None)  # the server's SETTINGS
        except BaseException:
            connection.fail(ConnectError(f"{self.origin}: cancelled while connecting"))
            raise
        if connection.error is not None:
            raise type(connection.error)(f"{connection.error} (at the connection's start: not an HTTP/2 server?)")
        self.draining.discard(connection)
        self.connections.append(connection)
        return connection

    async def _exchange(self, connection: Connection, block: bytes, head: bool, body: bytes, limit: int,
                        scope: trio.CancelScope, whole: float, steps: list[str]) -> tuple[int, dict[str, str], bytes]:
        frames = connection.wire
        stream_id = frames.next_id
        if stream_id >= LAST_STREAM_ID:
            self.retire(connection)
        stream = Stream(stream_id, limit)
        connection.streams[stream_id] = stream
        steps.append("write")
        sent = 0
        try:
            try:
                frames.open(block, not body, head)
            except wire.TooManyStreams:  # the server lowered its limit meanwhile: not sent
                stream.done = True
                raise Refused() from None
            while sent < len(body) and not stream.done:  # within the server's windows (an answer before the whole body ends it)
                window = frames.window_of(stream_id)
                if window <= 0:
                    stream.window = True
                    await connection.flush(coalesce=False)
                    await connection.until(stream, lambda: stream.done or connection.error is not None
                                           or frames.window_of(stream_id) > 0)
                    stream.window = False
                    if stream.done or connection.error is not None:
                        break
                    continue
                chunk = body[sent:sent + window]
                sent += len(chunk)
                frames.send_data(stream_id, chunk, sent == len(body))
            await connection.flush(coalesce=True)
            steps.append("read")
            scope.deadline = min(whole, trio.current_time() + self.timeout_s)
            await connection.until(stream, lambda: stream.done)
            if stream.error is not None:
                raise stream.error
            if not 100 <= stream.status <= 999:
                raise RemoteProtocolError(f"{self.origin}: an answer without a valid :status")
            return stream.status, stream.headers, b"".join(stream.chunks)[:limit]
        finally:
            del connection.streams[stream_id]
            if (not stream.done or sent < len(body)) and connection.error is None:  # cancelled, timed out, answered early
                frames.reset(stream_id)
                await connection.flush(coalesce=False)  # never cancelled
            if connection.error is not None or connection.goaway is not None or connection.fd < 0:
                self.retire(connection)
            self.changed()

    async def aclose(self) -> None:
        self._closed = True
        for connection in [*self.connections, *self.draining]:
            connection.fail(ConnectError(f"{self.origin}: the client is closed"))
        self.changed()
        await trio.lowlevel.checkpoint()


def _code(code: object) -> str:
    return getattr(code, "name", None) or str(code)
