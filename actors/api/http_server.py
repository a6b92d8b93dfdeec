"""Hypercorn's trio worker, with a connection handler that keeps one connection's failure its own.

`serve` is `hypercorn.trio.serve` (the shape of `hypercorn.trio.run.worker_serve`: lifespan,
listeners, graceful drain with `shutdown_trigger` and `graceful_timeout`,
`task_status.started(binds)`), serving each connection with `GuardedConnection` instead of
Hypercorn's `TCPServer`. Three defects of Hypercorn 0.17/0.18's trio `TCPServer` are fixed
there (docs/upstream/hypercorn.md has the report, a reproduction and the upstream patch):

1. A race: `_close()` calls `stream.send_eof()` without the send lock, and trio's
   `SocketStream.send_eof` holds the stream's send-conflict detector across a checkpoint,
   so a concurrent `send_all` (an error answer from the reading task while the app's task
   closes, or the reverse) raises `BusyResourceError`. Nothing on the connection catches it:
   it escapes into `trio.serve_listeners`' handler nursery and stops the whole server, every
   other connection with it. Here the half-close takes the send lock, a send that fails in
   any way closes that connection only, and any exception a connection raises is logged
   and ends that connection, never the server.
2. A close from a cancelled task does nothing: Quart-Trio cancels its request nursery
   right after the last body message, so `_close()` (reached from that message when the
   request said `Connection: close`, was HTTP/1.0, or was answered before its body
   arrived) is cancelled at `send_eof`'s checkpoint and the socket stays open, unanswered
   clients waiting for EOF forever (pgjones/hypercorn#330, #106). Here the half-close is
   shielded and bounded, and the connection's own task closes the socket.
3. Closing with unread request bytes resets the connection, which can destroy the answer
   in flight to the client (an early 401/413 to an upload). Here the close is lingering:
   FIN after the answer, the rest of what the client sends is read and dropped (bounded
   in time and bytes), then the socket closes.

And two behaviours (`ClosingH11`): an answer that starts before the request's body has fully
arrived (an early 401, 405 or 413) carries `Connection: close` and the connection closes
after it, so the client never waits on a connection whose framing the server gave up on;
so does the answer to a request with both Content-Length and Transfer-Encoding (RFC 9112
section 6.3, against request smuggling).

The handler uses Hypercorn internals (TCPServer's attributes, H11Protocol), checked against
the versions in SUPPORTED at start-up. Remove this module when upstream has the fixes.
"""

from __future__ import annotations

import logging
import math
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
from hypercorn.protocol.events import Response
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import ShutdownError, parse_socket_addr, raise_shutdown, repr_socket_addr, wrap_app

log = logging.getLogger("herald.http")

SUPPORTED = ("0.17.", "0.18.")  # Hypercorn versions whose internals GuardedConnection was checked against
LINGER_S = 2.0  # after our FIN: how long the client's remaining bytes are read and dropped before the socket closes
LINGER_BYTES = 1 << 20  # and how many at most
_SEND_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError)


def check_version() -> None:
    """Refuse to serve with a Hypercorn whose internals this module was not checked against."""
    found = version("hypercorn")
    if not found.startswith(SUPPORTED):
        raise RuntimeError(
            f"Hypercorn {found}: actors/api/http_server.py was checked against {', '.join(v + 'x' for v in SUPPORTED)}; "
            "see docs/upstream/hypercorn.md before allowing another version"
        )


class ClosingH11(H11Protocol):
    """HTTP/1.1 that ends the connection after an answer given before its request's body arrived (an early 401, 405
    or 413: the rest of the body would be read as the next request), or to a request with both Content-Length and
    Transfer-Encoding (RFC 9112 section 6.3: a server MUST close after answering it); the answer says so."""

    _ambiguous = False  # the current request has both Content-Length and Transfer-Encoding

    async def _create_stream(self, request: h11.Request) -> None:
        names = {name.lower() for name, _ in request.headers}
        self._ambiguous = b"content-length" in names and b"transfer-encoding" in names
        await super()._create_stream(request)

    async def stream_send(self, event: Any) -> None:
        if isinstance(event, Response) and event.status_code >= 200:
            if self._ambiguous or self.connection.their_state is h11.SEND_BODY:
                if not any(name.lower() == b"connection" and b"close" in value.lower() for name, value in event.headers):
                    event = Response(stream_id=event.stream_id, headers=[*event.headers, (b"connection", b"close")], status_code=event.status_code)
        await super().stream_send(event)

    async def _send_h11_event(self, event: Any) -> None:
        """H11Protocol's, except that an event h11 refuses to send closes the connection instead of raising.

        Hypercorn raises h11's LocalProtocolError unless the client's side is in error; it is raised, for one, when a
        WebSocket handshake arrives with bytes after it in one packet (Hypercorn answers 400, then the app's accept
        is refused), and it ended the whole server from the reading task."""
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError as error:
            log.debug("h11 refused to send %s (%s): closing the connection", type(event).__name__, error)
            await self.send(Closed())
        else:
            await self.send(RawData(data=data))


class GuardedConnection(TCPServer):
    """One client connection: Hypercorn's TCPServer, whose errors and closes stay on this connection."""

    def __init__(self, *args: Any, on_error: Callable[[], None] = lambda: None) -> None:
        super().__init__(*args)
        self._closing = False  # the protocol is done: our FIN is sent or being sent
        self._reading = trio.CancelScope()  # the reading loop; cancelled when another task closes the connection
        self._reader: trio.lowlevel.Task | None = None
        self._on_error = on_error

    async def run(self) -> None:
        try:
            await self._serve()
        except BaseExceptionGroup as group:
            passing, failures = group.split((trio.Cancelled, KeyboardInterrupt, SystemExit))
            if failures is not None:
                self._failed(failures)
            if passing is not None:
                raise passing  # noqa: B904 (cancellation goes on up; the failures stay here)
        except Exception as error:
            self._failed(error)
        finally:
            await self._finish()

    async def _serve(self) -> None:
        """TCPServer.run without its `finally: _close()`: `run` ends the connection."""
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
                self.protocol = ProtocolWrapper(
                    self.app, self.config, self.context, task_group, state, ssl, client, server, self.protocol_send, alpn_protocol
                )
                if isinstance(self.protocol.protocol, H11Protocol):
                    self.protocol.protocol = ClosingH11(
                        self.app, self.config, self.context, task_group, state, ssl, client, server, self.protocol_send
                    )
                await self.protocol.initiate()
                await self.idle_task.restart(self._task_group, self._idle_timeout)
                await self._read_data()
        except OSError:
            pass

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            failed = False
            async with self.send_lock:
                try:
                    with trio.CancelScope(shield=True):
                        await self.stream.send_all(event.data)
                except _SEND_ERRORS:
                    failed = True
            if failed:  # outside the lock: closing takes it
                await self._close()
                await self.protocol.handle(Closed())
        elif isinstance(event, Closed):
            await self._close()
            await self.protocol.handle(Closed())
        elif isinstance(event, Updated):
            if self._closing:
                return  # no keep-alive timer on a connection that is ending
            if event.idle:
                await self.idle_task.restart(self._task_group, self._idle_timeout)
            else:
                await self.idle_task.stop()

    async def _read_data(self) -> None:
        self._reader = trio.lowlevel.current_task()
        with self._reading:
            while not self._closing:
                try:
                    with trio.fail_after(self.config.read_timeout or math.inf):
                        data = await self.stream.receive_some(MAX_RECV)
                except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                    break
                await self.protocol.handle(RawData(bytes(data)))
                if data == b"":
                    break
        await self.idle_task.stop()
        await self.protocol.handle(Closed())

    async def _close(self) -> None:
        """Half-close after what was sent, from any task (a cancelled one too); `_finish` closes the socket."""
        if self._closing:
            return
        self._closing = True
        if trio.lowlevel.current_task() is not self._reader:
            self._reading.cancel()  # the reader may wait on data or on the app; cancelled mid-event is fine, we are closing
        with trio.CancelScope(shield=True):
            await self._send_eof()

    async def _send_eof(self) -> None:
        with trio.move_on_after(LINGER_S) as waited:  # a send stuck on a client that reads nothing holds the lock
            async with self.send_lock:
                try:
                    await self.stream.send_eof()
                except (*_SEND_ERRORS, AttributeError):  # AttributeError: a TLS stream has no half-close
                    pass
        if waited.cancelled_caught:
            await self.stream.aclose()  # wakes the stuck send with ClosedResourceError

    async def _finish(self) -> None:
        """FIN (if not sent), drop what the client still sends (bounded; skipped when cancelled), close the socket."""
        try:
            await self._close()
            drained = 0
            with trio.move_on_after(LINGER_S):
                while drained < LINGER_BYTES and (data := await self.stream.receive_some(MAX_RECV)):
                    drained += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    def _failed(self, error: BaseException) -> None:
        self._on_error()
        log.warning("connection %s ended by %r", self._peer(), error, exc_info=log.isEnabledFor(logging.DEBUG))

    def _peer(self) -> str:
        try:
            transport = getattr(self.stream, "transport_stream", self.stream)
            return repr_socket_addr(transport.socket.family, transport.socket.getpeername())
        except Exception:
            return "?"


class ConnectionErrors:
    """How many connections an exception ended (for tests and logs: each is a Hypercorn bug that stayed local)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


async def serve(
    app: Any,
    config: Config,
    *,
    shutdown_trigger: Callable[..., Awaitable[None]] | None = None,
    errors: ConnectionErrors | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI app on `config.bind` until `shutdown_trigger` returns, then drain for `config.graceful_timeout`."""
    check_version()
    if config.quic_bind:
        raise ValueError("http_server.serve has no HTTP/3 (QUIC) listener")
    app = wrap_app(app, config.wsgi_max_body_size, "asgi")
    config.set_statsd_logger_class(StatsdLogger)
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(app, config, lifespan_state)
    max_requests = None if config.max_requests is None else config.max_requests + randint(0, config.max_requests_jitter)
    context = WorkerContext(max_requests)
    on_error = errors if errors is not None else ConnectionErrors()

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()

        async with trio.open_nursery() as server_nursery:
            sockets = config.create_sockets()  # an OSError (port in use) propagates: the boot fails with it
            listeners: list[Any] = []
            binds: list[str] = []
            ssl_context = config.create_ssl_context()
            for sock in sockets.secure_sockets:
                sock.listen(config.backlog)
                listeners.append(trio.SSLListener(trio.SocketListener(trio.socket.from_stdlib_socket(sock)), ssl_context, https_compatible=True))
                binds.append(f"https://{repr_socket_addr(sock.family, sock.getsockname())}")
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            for bind in binds:
                await config.log.info(f"Running on {bind}")

            handler = partial(_connection, app, config, context, ConnectionState(lifespan_state.copy()), on_error)
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
                    raise other_errors
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout

        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def _connection(app: Any, config: Config, context: WorkerContext, state: ConnectionState, on_error: ConnectionErrors, stream: Any) -> None:
    await GuardedConnection(app, config, context, state, stream, on_error=on_error).run()
