"""Hypercorn's trio worker with a connection handler that keeps a connection's failure to that connection.

`serve` is `hypercorn.trio.serve` (the shape of `hypercorn.trio.run.worker_serve`: lifespan, listeners,
graceful drain on `shutdown_trigger` bounded by `config.graceful_timeout`, `task_status.started(binds)`), except
that each connection is a `GuardedConnection` instead of Hypercorn's `TCPServer`. It fixes what Hypercorn
0.17-0.18's trio `TCPServer` gets wrong (docs/upstream/hypercorn.md: report, reproduction, upstream patch):

1. The half-close races the sends. `_close()` calls `send_eof()` without the send lock, and trio's
   `SocketStream.send_eof` holds the stream's send-conflict detector across a checkpoint, so a concurrent
   `send_all` (the reading task's 400 while the app's task closes, or the reverse) raises `BusyResourceError`.
   No one on the connection catches it: it reaches `trio.serve_listeners`' handler nursery and ends the server,
   every other connection with it; so did h11 refusing an event (a WebSocket handshake with bytes behind it in
   one packet). Here the half-close takes the send lock, a failed send or a refused event closes its
   connection, and anything else a connection raises is logged and ends that connection only.
2. A close from a cancelled task does nothing. Quart-Trio cancels its request nursery as the last body
   message is sent, which is when `_close()` runs after a `Connection: close` or HTTP/1.0 request (or an answer
   given before the body arrived): `send_eof` is cancelled at its checkpoint and the socket stays open, the client
   waiting for EOF (pgjones/hypercorn#330, #106). Here the half-close is shielded and bounded.
3. Closing with unread request bytes resets the connection, and a reset can destroy an answer not yet
   delivered (an early 413 to an upload). Here the close lingers: FIN after the answer, then what the client
   still sends is read and dropped (at most LINGER_BYTES for LINGER_S), then the socket closes.
4. Bytes that break the framing while an answer is half sent (after a request that asked to close: h11's "Got
   data when expected EOF", #203) closed the connection in the middle of the answer. Here reading stops and the
   connection closes when the answer ends.
5. A stream that answers at once and gives up (an invalid WebSocket handshake: 400 `Connection: close`) never
   ends itself, so the connection stayed open. Here it closes.
6. A send to a client that stopped reading waited forever, shielded, holding the send lock: a WebSocket whose
   client reads nothing kept its session and its buffers for good. Here a send the kernel has not taken within
   SEND_TIMEOUT_S (nginx's send_timeout is 60 s too) ends the connection with a reset, which drops what the
   kernel still holds for it.

Three behaviours of HTTP/1.1 (`ClosingH11`): an answer that starts before its request's body has arrived (an
early 401, 405 or 413) says `Connection: close` and the connection ends, so what follows is never read as a
request and no client waits on it; so does the answer to a request with both Content-Length and Transfer-Encoding
(RFC 9112 section 6.3, a request-smuggling guard); a transfer coding h11 does not take is a 400, not h11's 501.
And HTTP/2 is not served: Hypercorn switches a connection to HTTP/2 on the cleartext preface or an `Upgrade: h2c`,
where none of the guards above hold (a client that opens streams with a zero flow-control window holds each one's
task and answer for good: no send reaches the socket, so no send timeout ends it). The preface is answered 400 and
the connection closes; an `Upgrade: h2c` is ignored (RFC 9110 section 7.8 lets a server) and the request answered
in HTTP/1.1. A proxy in front speaks HTTP/2 to its clients and HTTP/1.1 to Herald.

This relies on Hypercorn internals (TCPServer's attributes, H11Protocol's methods), checked against the versions
in SUPPORTED when serving starts. Remove it when upstream has the fixes (docs/upstream/hypercorn.md says how).
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import struct
from collections.abc import Awaitable, Callable
from functools import partial
from importlib.metadata import version
from random import randint
from typing import Any

import h11
import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.events import Response
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ASGIFramework, ConnectionState, H11SendableEvent, LifespanState
from hypercorn.utils import ShutdownError, parse_socket_addr, raise_shutdown, repr_socket_addr, wrap_app

log = logging.getLogger("herald.http")

SUPPORTED = ("0.17.", "0.18.")  # the Hypercorn versions whose internals this module was checked against
LINGER_S = 2.0  # after our FIN, how long what the client still sends is read and dropped before the socket closes
LINGER_BYTES = 1 << 20  # and how much of it at most
SEND_LOCK_WAIT_S = 2.0  # how long a close waits for a send in progress (one stuck on a client that reads nothing)
SEND_TIMEOUT_S = 60.0  # a send the kernel has not taken in this long ends the connection (a client that stopped reading)
_SEND_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError)
_CLOSE = (b"connection", b"close")


def check_version() -> None:
    """Refuse to serve with a Hypercorn whose internals this module was not checked against."""
    found = version("hypercorn")
    if not found.startswith(SUPPORTED):
        checked = ", ".join(v + "x" for v in SUPPORTED)
        raise RuntimeError(f"Hypercorn {found}: actors/api/http_server.py was checked against {checked} (see docs/upstream)")


class ConnectionErrors:
    """Counts the connections an exception ended: each is a server bug that stayed on its connection."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


class ClosingH11(H11Protocol):
    """Hypercorn's HTTP/1.1, closing after early answers and ambiguous framing, and never raising on a refused send."""

    _ambiguous = False  # the current request has both Content-Length and Transfer-Encoding
    on_websocket: Callable[[], None] = staticmethod(lambda: None)  # the connection became a WebSocket (set by GuardedConnection)
    _head = b""  # a fixed-length answer's head, not written yet: it goes with the body (_send_h11_event)

    async def _check_protocol(self, event: h11.Request) -> None:
        """No switch to HTTP/2 (Hypercorn's raises to switch): an h2c upgrade is ignored, the preface is refused."""

    async def _create_stream(self, request: h11.Request) -> None:
        if request.method == b"PRI" and request.target == b"*":  # HTTP/2's cleartext preface ("prior knowledge")
            await self._send_error_response(400)
            await self.send(Closed())
            return
        names = {name.lower() for name, _ in request.headers}
        self._ambiguous = b"content-length" in names and b"transfer-encoding" in names
        await super()._create_stream(request)
        if isinstance(self.stream, WSStream):
            self.on_websocket()  # it is never idle between requests again: no keep-alive timer for it
        if self.stream is not None and self.stream.closed:
            # The stream answered at once and gave up (an invalid WebSocket handshake: 400; a Host the config does
            # not serve: 404) without ending itself, so Hypercorn would keep the connection open: end it.
            await self._maybe_recycle()

    async def stream_send(self, event: StreamEvent) -> None:
        if isinstance(event, Response) and event.status_code >= 200:
            body_pending = self.connection.their_state is h11.SEND_BODY  # answered before the request's body arrived
            if (body_pending or self._ambiguous) and not _says_close(event.headers):
                event = Response(stream_id=event.stream_id, headers=[*event.headers, _CLOSE], status_code=event.status_code)
        await super().stream_send(event)

    async def _send_error_response(self, status_code: int) -> None:
        """h11's answer to bytes it cannot frame: 400, 431, or 501 for a transfer coding other than one `chunked`,
        which is answered 400 here: a client's malformed bytes never get a 5xx."""
        await super()._send_error_response(400 if status_code >= 500 else status_code)

    async def _send_h11_event(self, event: H11SendableEvent) -> None:
        """An event h11 refuses to send (the connection's state does not allow it) closes the connection.

        The head of an answer with a Content-Length (not a stream: its body follows at once) waits for the
        body, and both go in one write; an empty write (the end of such a body) is not made. Three socket
        writes an answer (head, body, end) were a tenth of a small POST's CPU."""
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError as error:
            log.debug("h11 refused to send %s (%s): closing the connection", type(event).__name__, error)
            self._head = b""
            await self.send(Closed())
            return
        if type(event) is h11.Response and any(name == b"content-length" for name, _ in event.headers):
            self._head = data  # sent with the body, or with the end of the answer (no body: a 204, a HEAD)
            return
        if self._head:
            data, self._head = self._head + data, b""
        if data:
            await self.send(RawData(data=data))


def _says_close(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"connection" and b"close" in value.lower() for name, value in headers)


class GuardedConnection(TCPServer):
    """One client connection: Hypercorn's TCPServer, whose errors and closes stay on this connection.

    Three tasks touch the socket: the reader (this connection's own task, `run`), the app's tasks (answers) and the
    keep-alive timer. Sends and the half-close are serialised by `send_lock`. The protocol closing the connection,
    from any task, sends our FIN (`_close`) and stops the reader; `run` then waits for the app's tasks, lingers and
    closes the socket (`_finish`).
    """

    _stalled = False  # a send timed out: the socket is reset, not lingered (the client reads nothing)

    def __init__(self, *args: Any, on_error: Callable[[], None] = lambda: None) -> None:
        super().__init__(*args)
        self._closing = False  # the protocol is done with the connection: our FIN is sent or on its way
        self._closing_after_answer = False  # it is done, but an answer is still being sent: close when it ends
        self._closed = trio.Event()
        self._reading = trio.CancelScope()  # the reading loop, cancelled when another task closes the connection
        self._reader: trio.lowlevel.Task | None = None
        self._on_error = on_error
        self._idle_deadline = math.inf  # when an idle connection closes (inf while a request is served)
        self._idle_wait: trio.CancelScope | None = None  # what the keep-alive task waits in (_keep_alive)
        self._keep_alive_scope = trio.CancelScope()

    @property
    def closing(self) -> bool:
        """Whether the protocol is done with the connection (our FIN sent or on its way, or due after an answer)."""
        return self._closing or self._closing_after_answer

    async def run(self) -> None:
        try:
            await self._serve()
        except BaseExceptionGroup as group:
            passing, failures = group.split((trio.Cancelled, KeyboardInterrupt, SystemExit))
            if failures is not None:
                self._failed(failures)
            if passing is not None:
                raise passing from None  # cancellation goes on up; the failures stay here
        except Exception as error:
            self._failed(error)
        finally:
            await self._finish()

    async def _serve(self) -> None:
        """TCPServer.run without its final close (`run` does it), with ClosingH11 for HTTP/1.1."""
        try:
            try:
                with trio.fail_after(self.config.ssl_handshake_timeout):
                    await self.stream.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError):
                return
            alpn_protocol = self.stream.selected_alpn_protocol()
            socket = self.stream.transport_stream.socket
            ssl = True
        except AttributeError:  # not TLS
            alpn_protocol = "http/1.1"
            socket = self.stream.socket
            ssl = False
        try:
            client = parse_socket_addr(socket.family, socket.getpeername())
            server = parse_socket_addr(socket.family, socket.getsockname())
            async with TaskGroup() as task_group:
                self._task_group = task_group
                state = ConnectionState(self.state)
                args = (self.app, self.config, self.context, task_group, state, ssl, client, server, self.protocol_send)
                self.protocol = ProtocolWrapper(*args, alpn_protocol)
                if isinstance(self.protocol.protocol, H11Protocol):
                    self.protocol.protocol = ClosingH11(*args)
                    self.protocol.protocol.on_websocket = self._keep_alive_scope.cancel
                await self.protocol.initiate()
                self._set_idle(True)
                nursery = task_group._nursery  # Hypercorn's TaskGroup: where its own idle task ran
                assert nursery is not None
                nursery.start_soon(self._keep_alive)
                await self._read_data()
        except OSError:
            pass

    async def _send_locked(self, data: bytes) -> bool:
        """Send `data` while this task holds `send_lock` (shielded, within SEND_TIMEOUT_S); True if it failed."""
        try:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + SEND_TIMEOUT_S) as sending:
                await self.stream.send_all(data)
            self._stalled = sending.cancelled_caught  # the client has read nothing for SEND_TIMEOUT_S
            return self._stalled
        except _SEND_ERRORS:
            return True

    async def send_rest_held(self, data: bytes) -> None:
        """The rest of bytes whose start this task wrote straight to the socket holding `send_lock` (taken with
        acquire_nowait: actors/api/direct_frames.py): sent as protocol_send sends, then the lock released, so that
        nothing is written between the two parts."""
        try:
            failed = await self._send_locked(data)
        finally:
            self.send_lock.release()
        if failed:  # outside the lock: the close takes it
            await self._close()
            await self.protocol.handle(Closed())

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            async with self.send_lock:
                failed = await self._send_locked(event.data)
            if failed:  # outside the lock: the close takes it
                await self._close()
                await self.protocol.handle(Closed())
        elif isinstance(event, Closed):
            if not self._closing and self._answer_in_flight():
                # The client broke the framing (bytes after a request whose answer says `Connection: close`, a
                # bad chunk...) while an answer is half sent: the reader stops, the answer ends, then it closes.
                self._closing_after_answer = True
                return
            await self._close()
            await self.protocol.handle(Closed())
        elif isinstance(event, Updated):
            if self._closing:
                return  # no keep-alive timer for a connection that is ending
            self._set_idle(event.idle)

    async def _read_data(self) -> None:
        self._reader = trio.lowlevel.current_task()
        with self._reading:
            while not (self._closing or self._closing_after_answer):
                try:
                    if self.config.read_timeout is None:  # no cancel scope held by each of many idle connections
                        data = await self.stream.receive_some(MAX_RECV)
                    else:
                        with trio.fail_after(self.config.read_timeout):
                            data = await self.stream.receive_some(MAX_RECV)
                except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                    break
                await self.protocol.handle(RawData(bytes(data)))
                if data == b"":
                    break
            if self._closing_after_answer:
                await self._closed.wait()  # not reading meanwhile: TCP holds back what the client still sends
        self._keep_alive_scope.cancel()
        await self.protocol.handle(Closed())

    def _set_idle(self, idle: bool) -> None:
        """The connection waits for a request (idle) or serves one: moves the keep-alive timer's deadline."""
        was_idle = self._idle_deadline < math.inf
        self._idle_deadline = trio.current_time() + self.config.keep_alive_timeout if idle else math.inf
        if self._idle_wait is not None:
            if idle and not was_idle:
                self._idle_wait.cancel()  # wake it: now it waits for the server to stop, until the deadline
            else:
                self._idle_wait.deadline = self._idle_deadline

    async def _keep_alive(self) -> None:
        """Hypercorn's idle timeout as one task for the connection's life: the connection closes once it has been
        idle keep_alive_timeout seconds, or at once when the server stops while it is idle, never while it serves.

        Hypercorn starts its timer task anew for every request and stops it again (a lock, a cancel and a spawn
        each time): a tenth of a small POST's CPU. Here a request only moves a deadline (and wakes this task once).
        A connection upgraded to a WebSocket ends it (`ClosingH11.on_websocket`): a session costs no timer task."""
        terminated = self.context.terminated
        with self._keep_alive_scope:
            while True:
                idle = self._idle_deadline < math.inf
                with trio.CancelScope(deadline=self._idle_deadline) as self._idle_wait:
                    if idle:
                        await terminated.wait()
                    else:
                        await trio.sleep_forever()  # serving: _set_idle wakes it once the connection is idle again
                self._idle_wait = None
                if self._idle_deadline < math.inf and (terminated.is_set() or trio.current_time() >= self._idle_deadline):
                    break
            with trio.CancelScope(shield=True):
                await self._initiate_server_close()

    async def _close(self) -> None:
        """Our FIN after what was sent, from any task, a cancelled one included; `_finish` closes the socket."""
        if self._closing:
            return
        self._closing = True
        self._closed.set()
        if trio.lowlevel.current_task() is not self._reader:
            self._reading.cancel()  # it may wait for bytes, for the app or for h11 to resume: the connection is over
        with trio.CancelScope(shield=True):
            with trio.move_on_after(SEND_LOCK_WAIT_S) as waiting:
                async with self.send_lock:
                    try:
                        await self.stream.send_eof()
                    except (*_SEND_ERRORS, AttributeError):  # AttributeError: a TLS stream has no half-close
                        pass
            if waiting.cancelled_caught:
                await self.stream.aclose()  # the stuck send ends with ClosedResourceError

    async def _finish(self) -> None:
        """FIN if not yet sent, drop what the client still sends (bounded; skipped when cancelled), close the socket."""
        try:
            await self._close()
            if self._stalled:
                self._reset_on_close()
                return
            drained = 0
            with trio.move_on_after(LINGER_S):
                while drained < LINGER_BYTES and (data := await self.stream.receive_some(MAX_RECV)):
                    drained += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True), contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self.stream.aclose()

    def _reset_on_close(self) -> None:
        """SO_LINGER 0: the close sends a reset and drops what the kernel still holds for a client that reads nothing."""
        transport = getattr(self.stream, "transport_stream", self.stream)
        with contextlib.suppress(OSError, AttributeError):
            transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _answer_in_flight(self) -> bool:
        """An HTTP/1.1 answer is half sent by a stream that is still open (a stream that ended never finishes it)."""
        protocol = self.protocol.protocol
        if not isinstance(protocol, H11Protocol) or protocol.stream is None:
            return False
        return protocol.connection.our_state is h11.SEND_BODY

    def _failed(self, error: BaseException) -> None:
        self._on_error()
        log.warning("connection from %s ended by %r", self._peer(), error, exc_info=log.isEnabledFor(logging.DEBUG))

    def _peer(self) -> str:
        try:
            transport = getattr(self.stream, "transport_stream", self.stream)
            return repr_socket_addr(transport.socket.family, transport.socket.getpeername())
        except Exception:
            return "?"


async def serve(
    app: ASGIFramework,
    config: Config,
    *,
    shutdown_trigger: Callable[..., Awaitable[None]] | None = None,
    errors: ConnectionErrors | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI app on `config.bind` until `shutdown_trigger` returns, then drain for `config.graceful_timeout`.

    `task_status.started(binds)` once listening; an OSError creating the sockets (a port in use) propagates.
    """
    check_version()
    if config.quic_bind:
        raise ValueError("actors/api/http_server.py serves no HTTP/3 (QUIC)")
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    config.set_statsd_logger_class(StatsdLogger)
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    max_requests = None if config.max_requests is None else config.max_requests + randint(0, config.max_requests_jitter)
    context = WorkerContext(max_requests)
    on_error = errors if errors is not None else ConnectionErrors()

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()

        async with trio.open_nursery() as server_nursery:
            sockets = config.create_sockets()
            ssl_context = config.create_ssl_context()
            listeners: list[trio.SSLListener[trio.SocketStream] | trio.SocketListener] = []
            binds: list[str] = []
            for sock in sockets.secure_sockets:
                if ssl_context is None:  # hypercorn makes TLS sockets only with a certificate set
                    raise RuntimeError("TLS sockets without an SSL context")
                sock.listen(config.backlog)
                plain = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                listeners.append(trio.SSLListener(plain, ssl_context, https_compatible=True))
                binds.append(f"https://{repr_socket_addr(sock.family, sock.getsockname())}")
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            for bind in binds:
                await config.log.info(f"Running on {bind}")

            state = ConnectionState(lifespan_state.copy())
            handler = partial(_connection, wrapped, config, context, state, on_error)
            task_status.started(binds)
            try:
                async with trio.open_nursery(strict_exception_groups=True) as nursery:
                    if shutdown_trigger is not None:
                        nursery.start_soon(raise_shutdown, shutdown_trigger)
                    nursery.start_soon(raise_shutdown, context.terminate.wait)
                    nursery.start_soon(partial(trio.serve_listeners, handler, listeners, handler_nursery=server_nursery))
                    await trio.sleep_forever()
            except BaseExceptionGroup as error:
                _, other_errors = error.split((ShutdownError, KeyboardInterrupt))
                if other_errors is not None:
                    raise other_errors from None
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout

        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def _connection(
    app: AppWrapper, config: Config, context: WorkerContext, state: ConnectionState, on_error: ConnectionErrors,
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
) -> None:
    await GuardedConnection(app, config, context, state, stream, on_error=on_error).run()
