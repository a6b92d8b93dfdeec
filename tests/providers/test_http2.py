"""The HTTP/2 client of the FCM and APNs clients (actors/clients/http2.py), attacked with raw h2 servers and Hypercorn.

Each raw server is the h2 library's server side on Trio's TLS, on a free loopback port, with
ALPN h2 and a throwaway CA the client trusts through its ca_file. A behaviour decides what
happens to each request (answered, never answered, reset, a GOAWAY, a cut answer, a huge
body); the server records each request it read whole and each it answered, and the
connections it holds open, so a test sees what reached it, that a request refused by a
GOAWAY was processed exactly once, and that nothing was leaked. Every case ends in an answer
or in the right TransportError, never in a hang: a test bounded by BOUND_S fails rather than hangs.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
import trio
from hpack import NeverIndexedHeaderTuple
from hyperframe.frame import GoAwayFrame
from hypercorn.config import Config
from hypercorn.trio import serve

from actors.clients.apns import ApnsClient
from actors.clients.http2 import Http2Pool
from actors.clients.http_api import HttpClients, call, http_client
from actors.clients.http_errors import (
    ConnectError,
    ConnectTimeout,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    RequestError,
    TransportError,
)
from protocol.messages import RetryLater, Sent
from tests.providers.apns_emulator import ApnsEmulator
from tests.providers.asgi_server import App, Tls, make_tls
from tests.providers.test_apns import TOKEN, delivery, spec

BOUND_S = 20  # no test may take longer (a hang fails here, not in the suite's timeout)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("h2tls"))


@dataclass
class Server:
    port: int = 0
    connections: int = 0  # accepted
    open: int = 0  # still open on the server's side
    received: list[str] = field(default_factory=list)  # each request read whole (its x-n header), in order
    answered: list[str] = field(default_factory=list)  # each request answered 200
    reset: list[str] = field(default_factory=list)  # each request the client reset
    bodies: list[int] = field(default_factory=list)  # the size of each request body read whole
    most_in_flight: int = 0  # the most requests open at once on one connection
    heads: list[list[tuple[bytes, bytes]]] = field(default_factory=list)  # each request's header list, as decoded
    goaways: list[int] = field(default_factory=list)  # the error code of each GOAWAY the client sent
    peers: list[Peer] = field(default_factory=list)


class Peer:
    """The server's side of one connection: h2's state, the TLS stream, what is still to send."""

    def __init__(self, server: Server, stream: trio.SSLStream[trio.SocketStream], number: int) -> None:
        self.server = server
        self.stream = stream
        self.number = number  # 1 for the server's first connection
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.open: dict[int, str] = {}  # stream id -> x-n, read whole and not answered
        self.outgoing: dict[int, bytes] = {}  # bodies still to send within the client's windows
        self.closed = False

    def answer(self, stream_id: int, status: int = 200, body: bytes = b'{"ok":1}', end: bool = True) -> None:
        n = self.open.pop(stream_id, "?")
        self.h2.send_headers(stream_id, [(b":status", str(status).encode()), (b"content-type", b"application/json")])
        if status == 200 and end:
            self.server.answered.append(n)
        if len(body) <= self.h2.local_flow_control_window(stream_id) and len(body) <= self.h2.max_outbound_frame_size:
            self.h2.send_data(stream_id, body, end_stream=end)
        else:
            self.outgoing[stream_id] = body

    def push(self) -> None:
        """Send what the client's windows allow of the bodies still to send."""
        for stream_id, body in list(self.outgoing.items()):
            while body and (window := min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)) > 0:
                self.h2.send_data(stream_id, body[:window], end_stream=len(body) <= window)
                body = body[window:]
            if body:
                self.outgoing[stream_id] = body
            else:
                del self.outgoing[stream_id]

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed:
            await self.stream.send_all(data)

    async def goaway(self, last_stream_id: int) -> None:
        """A GOAWAY written as is (h2's own close_connection would forbid answering the streams it covers)."""
        await self.flush()
        await self.stream.send_all(GoAwayFrame(0, last_stream_id=last_stream_id).serialize())

    async def close(self) -> None:
        self.closed = True
        await trio.aclose_forcefully(self.stream)


Behaviour = Callable[[Peer, int], Awaitable[None]]  # a request read whole on a stream: answer it (or not)


async def answer_ok(peer: Peer, stream_id: int) -> None:
    peer.answer(stream_id)


def server_context(tls: Tls, alpn: str = "h2") -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    context.set_alpn_protocols([alpn])
    return context


@asynccontextmanager
async def h2_server(tls: Tls, behaviour: Behaviour = answer_ok, *, max_streams: int = 100, alpn: str = "h2", window: int = 65535,
                    on_connect: Callable[[Peer], Awaitable[bool]] | None = None, early: bool = False) -> AsyncIterator[Server]:
    """An HTTP/2 server over TLS on a free loopback port; `behaviour(peer, stream_id)` for each request read whole
    (with `early`, as soon as its headers came);
    `on_connect(peer)` after the TLS handshake (False: the connection is left to it, no HTTP/2 from the server)."""
    server = Server()
    context = server_context(tls, alpn)

    async def connection(tcp: trio.SocketStream) -> None:
        server.connections += 1
        server.open += 1
        stream = trio.SSLStream(tcp, context, server_side=True)
        peer = Peer(server, stream, server.connections)
        server.peers.append(peer)
        names: dict[int, str] = {}
        sizes: dict[int, int] = {}
        try:
            await stream.do_handshake()
            if on_connect is not None and not await on_connect(peer):
                return
            peer.h2.local_settings = h2.settings.Settings(client=False, initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams, h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
            peer.h2.initiate_connection()
            await peer.flush()
            while not peer.closed:
                data = await stream.receive_some(65536)
                if not data:
                    return
                for event in peer.h2.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        peer.open[event.stream_id] = names[event.stream_id] = dict(event.headers).get(b"x-n", b"?").decode()
                        server.heads.append(list(event.headers))
                        sizes[event.stream_id] = 0
                        server.most_in_flight = max(server.most_in_flight, len(peer.open))
                        if early:
                            await behaviour(peer, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id in peer.open:
                        server.received.append(peer.open[event.stream_id])
                        server.bodies.append(sizes[event.stream_id])
                        await behaviour(peer, event.stream_id)
                    elif isinstance(event, h2.events.StreamReset):
                        peer.outgoing.pop(event.stream_id, None)
                        peer.open.pop(event.stream_id, None)
                        server.reset.append(names.get(event.stream_id, "?"))
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        server.goaways.append(event.error_code)
                    elif isinstance(event, h2.events.DataReceived):
                        sizes[event.stream_id] = sizes.get(event.stream_id, 0) + len(event.data)
                        peer.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if peer.closed:
                        return
                peer.push()
                await peer.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass
        finally:
            server.open -= 1
            await trio.aclose_forcefully(stream)

    with trio.fail_after(BOUND_S):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, connection, 0, host="127.0.0.1"))
            server.port = listeners[0].socket.getsockname()[1]
            yield server
            nursery.cancel_scope.cancel()


def client(tls: Tls, timeout_s: float = 5, max_connections: int = 4) -> HttpClients:
    return http_client(timeout_s, max_connections, tls.ca_file, http2=True)


def pool_of(http: HttpClients, server: Server) -> Http2Pool:
    return http.h2_pool("127.0.0.1", server.port)


async def post(http: HttpClients, server: Server, n: int | str = 1, limit: int = 16 * 1024) -> tuple[int, bytes]:
    answer = await call(http, "POST", f"https://127.0.0.1:{server.port}/3/device/x", json={"n": n},
                        headers={"x-n": str(n), "authorization": "bearer tok-secret"}, limit=limit)
    assert answer.http_version == "HTTP/2"
    return answer.status, answer.body


async def settle(server: Server) -> None:
    """Let the server see the client's closes (up to 5 s on a busy machine; at once as a rule)."""
    for _ in range(500):
        if server.open == 0:
            return
        await trio.sleep(0.01)


async def closed(http: HttpClients, server: Server) -> None:
    """The client closed: no connection left open on either side."""
    pools = list(http.h2_pools.values())
    await http.aclose()
    await settle(server)
    assert all(pool.open == 0 for pool in pools) and server.open == 0, (server, [pool.open for pool in pools])


async def test_many_requests_share_one_connection_and_a_closed_client_leaves_none_open(tls: Tls) -> None:
    async with h2_server(tls) as server:
        http = client(tls)
        results: list[tuple[int, bytes]] = []

        async def one(n: int) -> None:
            results.append(await post(http, server, n))

        async with trio.open_nursery() as nursery:
            for n in range(30):
                nursery.start_soon(one, n)
        for n in range(5):  # and one after another on the same connection
            results.append(await post(http, server, 100 + n))
        assert results == [(200, b'{"ok":1}')] * 35
        assert server.connections == 1 and sorted(server.answered) == sorted(str(n) for n in [*range(30), *range(100, 105)])
        assert pool_of(http, server).open == 1
        await closed(http, server)


async def test_headers_are_coded_without_the_servers_table_and_the_credential_never_indexed(tls: Tls) -> None:
    async with h2_server(tls) as server:
        http = client(tls)
        for n in range(20):  # x-n is new each time (as APNs's apns-id is), authorization the same (the provider token)
            assert await post(http, server, f"unique-{n}") == (200, b'{"ok":1}')
        assert server.received == [f"unique-{n}" for n in range(20)]  # every header block decoded whole by the server
        for n, head in enumerate(server.heads):
            fields = dict(head)
            assert fields[b":method"] == b"POST" and fields[b":scheme"] == b"https" and fields[b":path"] == b"/3/device/x"
            assert fields[b":authority"] == f"127.0.0.1:{server.port}".encode() and fields[b"x-n"] == f"unique-{n}".encode()
            assert fields[b"user-agent"] == b"herald" and fields[b"content-length"] == str(len(f'{{"n":"unique-{n}"}}')).encode()
            (credential,) = [h for h in head if h[0] == b"authorization"]
            assert credential == (b"authorization", b"bearer tok-secret") and isinstance(credential, NeverIndexedHeaderTuple)
        (peer,) = server.peers
        assert list(peer.h2.decoder.header_table.dynamic_entries) == []  # nothing of ours kept in the server's table
        await closed(http, server)


async def test_streams_are_bounded_by_the_servers_setting_and_more_connections_open_up_to_the_limit(tls: Tls) -> None:
    async with h2_server(tls, max_streams=2) as server:  # eight at once: two streams on each of two connections
        http = client(tls, max_connections=2)
        statuses: list[int] = []

        async def one(n: int) -> None:
            statuses.append((await post(http, server, n))[0])

        async with trio.open_nursery() as nursery:
            for n in range(8):
                nursery.start_soon(one, n)
        assert statuses == [200] * 8 and server.most_in_flight <= 2 and server.connections == 2
        assert sorted(server.answered) == [str(n) for n in range(8)] and pool_of(http, server).opened == 2
        await closed(http, server)


async def test_a_slow_answer_times_out_its_stream_is_reset_and_the_connection_goes_on(tls: Tls) -> None:
    async def silent_second(peer: Peer, stream_id: int) -> None:
        if stream_id != 3:
            peer.answer(stream_id)

    async with h2_server(tls, silent_second) as server:
        http = client(tls, timeout_s=5)
        assert await post(http, server, 1) == (200, b'{"ok":1}')  # connected (the TLS handshake is not timed below)
        pool = pool_of(http, server)
        pool.timeout_s = 0.3
        with pytest.raises(ReadTimeout, match="no whole answer within"):
            await post(http, server, 2)
        assert await post(http, server, 3) == (200, b'{"ok":1}')
        for _ in range(500):  # the reset reaches the server (at once as a rule)
            if server.reset:
                break
            await trio.sleep(0.01)
        assert server.connections == 1 and server.answered == ["1", "3"] and server.reset == ["2"]
        await closed(http, server)


async def test_a_reset_stream_is_a_read_error_and_the_connection_goes_on(tls: Tls) -> None:
    async def reset_first(peer: Peer, stream_id: int) -> None:
        if stream_id == 1:
            peer.open.pop(stream_id)
            peer.h2.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        else:
            peer.answer(stream_id)

    async with h2_server(tls, reset_first) as server:
        http = client(tls)
        with pytest.raises(ReadError, match="reset the stream .INTERNAL_ERROR"):
            await post(http, server, 1)
        assert await post(http, server, 2) == (200, b'{"ok":1}')
        assert server.connections == 1 and server.received == ["1", "2"]
        await closed(http, server)


async def test_a_refused_stream_is_sent_again_and_processed_once(tls: Tls) -> None:
    async def refuse_first(peer: Peer, stream_id: int) -> None:
        if stream_id == 1 and peer.number == 1:
            peer.open.pop(stream_id)
            peer.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        else:
            peer.answer(stream_id)

    async with h2_server(tls, refuse_first) as server:
        http = client(tls)
        assert await post(http, server, 1) == (200, b'{"ok":1}')
        assert server.received == ["1", "1"] and server.answered == ["1"]
        await closed(http, server)


async def test_a_goaway_mid_flight_sends_the_unprocessed_requests_again_on_a_new_connection_once(tls: Tls) -> None:
    async def goaway_at_four(peer: Peer, stream_id: int) -> None:
        if peer.number > 1:
            peer.answer(stream_id)
        elif len(peer.open) == 4:  # four in flight: the first two processed, the others not
            first, second = sorted(peer.open)[:2]
            await peer.goaway(second)
            peer.answer(first)
            peer.answer(second)
            for other in sorted(peer.open):
                peer.open.pop(other)

    async with h2_server(tls, goaway_at_four) as server:
        http = client(tls)
        results: dict[int, tuple[int, bytes]] = {}

        async def one(n: int) -> None:
            results[n] = await post(http, server, n)

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(one, n)
        assert results == {n: (200, b'{"ok":1}') for n in range(4)}
        assert server.connections == 2 and len(server.received) == 6  # two were read on the first connection, not processed
        assert sorted(server.answered) == ["0", "1", "2", "3"]  # each processed exactly once
        assert pool_of(http, server).opened == 2
        await closed(http, server)


async def test_after_a_goaway_a_stream_it_covers_that_breaks_fails_and_is_never_sent_again(tls: Tls) -> None:
    async def goaway_then_close(peer: Peer, stream_id: int) -> None:
        if len(peer.open) == 2:
            peer.h2.close_connection(last_stream_id=max(peer.open))  # both covered: the server may have acted on them
            await peer.flush()
            await peer.close()

    async with h2_server(tls, goaway_then_close) as server:
        http = client(tls)
        errors: list[BaseException] = []

        async def one(n: int) -> None:
            try:
                await post(http, server, n)
            except TransportError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for n in range(2):
                nursery.start_soon(one, n)
        assert len(errors) == 2 and all(isinstance(e, ReadError) for e in errors), errors
        assert server.connections == 1 and sorted(server.received) == ["0", "1"] and server.answered == []
        await closed(http, server)


async def test_a_connection_closed_mid_answer_fails_its_streams_and_is_dropped(tls: Tls) -> None:
    async def cut(peer: Peer, stream_id: int) -> None:
        if peer.number == 1:
            peer.answer(stream_id, body=b'{"na', end=False)
            await peer.flush()
            await peer.close()
        else:
            peer.answer(stream_id)

    async with h2_server(tls, cut) as server:
        http = client(tls)
        with pytest.raises(ReadError, match="closed the connection before a whole answer"):
            await post(http, server, 1)
        assert pool_of(http, server).open == 0
        assert await post(http, server, 2) == (200, b'{"ok":1}')  # a new connection
        assert server.connections == 2
        await closed(http, server)


@pytest.mark.parametrize("then", ["goaway", "close"])
async def test_an_idle_connection_the_server_retired_or_closed_is_dropped_before_use(tls: Tls, then: str) -> None:
    async def answer_then_leave(peer: Peer, stream_id: int) -> None:
        peer.answer(stream_id)
        if peer.number == 1:
            if then == "goaway":
                await peer.goaway(stream_id)
            else:
                await peer.flush()
                await peer.close()

    async with h2_server(tls, answer_then_leave) as server:
        http = client(tls)
        assert await post(http, server, 1) == (200, b'{"ok":1}')
        for _ in range(500):  # the GOAWAY or the close reaches the client (at once as a rule)
            if pool_of(http, server).connections[0].looks_closed():
                break
            await trio.sleep(0.01)
        assert await post(http, server, 2) == (200, b'{"ok":1}')  # on a new connection, the idle one dropped
        assert server.connections == 2 and server.received == ["1", "2"] and pool_of(http, server).open == 1
        await closed(http, server)


async def test_an_answer_with_a_bad_status_is_a_protocol_error(tls: Tls) -> None:
    async def bad_status(peer: Peer, stream_id: int) -> None:
        peer.open.pop(stream_id)
        peer.h2.send_headers(stream_id, [(b":status", b"abc")], end_stream=True)

    async with h2_server(tls, bad_status) as server:
        http = client(tls)
        with pytest.raises(RemoteProtocolError, match="without a valid :status"):
            await post(http, server, 1)
        await closed(http, server)


async def test_a_huge_body_is_cut_at_the_limit_and_the_connection_goes_on(tls: Tls) -> None:
    async def huge(peer: Peer, stream_id: int) -> None:
        peer.answer(stream_id, body=b"x" * (8 * 1024 * 1024) if stream_id == 1 else b"small")

    async with h2_server(tls, huge) as server:
        http = client(tls)
        assert await post(http, server, 1, limit=1000) == (200, b"x" * 1000)
        assert await post(http, server, 2, limit=1000) == (200, b"small")
        assert server.connections == 1
        await closed(http, server)


@pytest.mark.parametrize("garbage", [b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", b"\x00" * 9 + b"junk" * 100])
async def test_garbage_instead_of_a_preface_is_a_protocol_error(tls: Tls, garbage: bytes) -> None:
    async def garbage_first(peer: Peer) -> bool:
        await peer.stream.send_all(garbage)
        while await peer.stream.receive_some(65536):  # the connection stays open until the client closes it
            pass
        return False

    async with h2_server(tls, on_connect=garbage_first) as server:
        http = client(tls)
        with pytest.raises(RemoteProtocolError, match="not an HTTP/2"):
            await post(http, server)
        assert pool_of(http, server).open == 0
        await closed(http, server)


async def test_a_server_that_sends_no_settings_times_out_connecting(tls: Tls) -> None:
    async def silent(peer: Peer) -> bool:
        while await peer.stream.receive_some(65536):
            pass
        return False

    async with h2_server(tls, on_connect=silent) as server:
        http = client(tls, timeout_s=0.3)
        with pytest.raises(ConnectTimeout):
            await post(http, server)
        await closed(http, server)


async def test_a_server_that_refuses_http2_in_alpn_or_an_untrusted_one_is_a_connect_error(tls: Tls, tmp_path: Path) -> None:
    async with h2_server(tls, alpn="http/1.1") as server:
        http = client(tls)
        with pytest.raises(ConnectError, match="did not agree to HTTP/2"):
            await post(http, server)
        await closed(http, server)
    other = make_tls(tmp_path)
    async with h2_server(tls) as server:
        http = client(other)
        with pytest.raises(ConnectError, match="TLS failed .*certificate"):
            await post(http, server)
        assert server.received == []
        await closed(http, server)


async def test_a_credential_with_a_line_break_is_never_sent_nor_shown(tls: Tls) -> None:
    async with h2_server(tls) as server:
        http = client(tls)
        with pytest.raises(RequestError) as caught:
            await call(http, "POST", f"https://127.0.0.1:{server.port}/x", json={},
                       headers={"authorization": "bearer tok-secret\r\nx-injected: 1"})
        assert "tok-secret" not in str(caught.value) and server.received == []
        await closed(http, server)


@pytest.mark.parametrize(("name", "value"), [
    ("authorization", "bearer a\nb"), ("authorization", "bearer a\rb"), ("authorization", "bearer a\x00b"),
    ("x-a\nb", "1"), ("x-a\x00", "1"), ("x a", "1"), (":path", "/other"), ("", "1"),
])
async def test_a_header_http2_refuses_is_a_request_error_and_nothing_is_sent(tls: Tls, name: str, value: str) -> None:
    async with h2_server(tls) as server:
        http = client(tls)
        with pytest.raises(RequestError):
            await call(http, "POST", f"https://127.0.0.1:{server.port}/x", json={}, headers={name: value})
        assert await post(http, server, "after") == (200, b'{"ok":1}')  # the refusal sent nothing, broke nothing
        assert server.received == ["after"]
        await closed(http, server)


async def test_a_cancelled_request_resets_its_stream_and_leaks_nothing(tls: Tls) -> None:
    async def never(peer: Peer, stream_id: int) -> None:
        pass

    async with h2_server(tls, never) as server:
        http = client(tls)
        async with trio.open_nursery() as nursery:
            for n in range(5):
                nursery.start_soon(post, http, server, n)
            while len(server.received) < 5:  # all five sent and read by the server: then cancelled
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        pool = pool_of(http, server)
        assert pool.open == 1 and all(not c.streams and not c.parked and not c.reading for c in pool.connections)
        for _ in range(500):  # the resets reach the server (at once as a rule)
            if len(server.reset) == 5:
                break
            await trio.sleep(0.01)
        assert sorted(server.reset) == ["0", "1", "2", "3", "4"] and server.answered == []
        await closed(http, server)


async def test_a_body_beyond_the_servers_window_is_sent_as_its_window_updates_allow(tls: Tls) -> None:
    async with h2_server(tls) as server:
        http = client(tls)
        body = b"y" * (300 * 1024)  # the server's windows: 64 KiB
        answer = await call(http, "POST", f"https://127.0.0.1:{server.port}/x", content=body, headers={"x-n": "big"})
        assert answer.status == 200 and server.bodies == [len(body)] and server.answered == ["big"]
        await closed(http, server)


async def test_an_answer_before_the_whole_body_ends_the_request_and_the_connection_goes_on(tls: Tls) -> None:
    async def refuse_big(peer: Peer, stream_id: int) -> None:
        if stream_id == 1:
            peer.answer(stream_id, status=413, body=b'{"reason":"PayloadTooLarge"}')
        elif stream_id in peer.open and peer.open[stream_id] != "small":
            return
        else:
            peer.answer(stream_id)

    async with h2_server(tls, refuse_big, early=True) as server:
        http = client(tls)
        answer = await call(http, "POST", f"https://127.0.0.1:{server.port}/x", content=b"z" * (300 * 1024))
        assert answer.status == 413 and answer.body == b'{"reason":"PayloadTooLarge"}'
        assert await post(http, server, "small") == (200, b'{"ok":1}')
        assert server.connections == 1
        await closed(http, server)


@pytest.mark.parametrize(("frame", "code"), [
    (b"\0\0\4\x08\0\0\0\0\0" + b"\0\0\0\0", h2.errors.ErrorCodes.PROTOCOL_ERROR),  # WINDOW_UPDATE of 0
    (b"\0\x40\x01\0\0\0\0\0\1" + b"\0" * 16385, h2.errors.ErrorCodes.FRAME_SIZE_ERROR),  # DATA beyond our frame size
    (b"\0\0\5\5\4\0\0\0\1" + b"\0\0\0\2\x82", h2.errors.ErrorCodes.PROTOCOL_ERROR),  # PUSH_PROMISE, push being disabled
    (b"\0\0\4\1\5\0\0\0\1" + b"\xff\xff\xff\xff", h2.errors.ErrorCodes.COMPRESSION_ERROR),  # a header block HPACK refuses
], ids=["window-update-of-0", "frame-too-large", "push-promise", "bad-hpack"])
async def test_a_frame_that_breaks_http2_fails_the_connection_with_a_goaway_naming_why(tls: Tls, frame: bytes,
                                                                                       code: h2.errors.ErrorCodes) -> None:
    async def broken_first(peer: Peer, stream_id: int) -> None:
        if peer.number == 1:
            await peer.flush()
            await peer.stream.send_all(frame)  # written as is (h2's server side would refuse to)
        else:
            peer.answer(stream_id)

    async with h2_server(tls, broken_first) as server:
        http = client(tls)
        with pytest.raises(RemoteProtocolError, match=f"not an HTTP/2 answer .{code.name}"):
            await post(http, server, 1)
        for _ in range(500):  # the GOAWAY reaches the server (at once as a rule)
            if server.goaways:
                break
            await trio.sleep(0.01)
        assert server.goaways == [code]
        assert await post(http, server, 2) == (200, b'{"ok":1}')  # on a new connection
        assert server.connections == 2 and pool_of(http, server).open == 1
        await closed(http, server)


async def test_a_body_is_sent_within_a_tiny_window_the_server_advertises(tls: Tls) -> None:
    async with h2_server(tls, window=100) as server:  # h2's server side fails the connection on DATA beyond its window
        http = client(tls)
        body = bytes(range(256)) * 20
        answer = await call(http, "POST", f"https://127.0.0.1:{server.port}/x", content=body, headers={"x-n": "tiny"})
        assert answer.status == 200 and server.bodies == [len(body)] and server.answered == ["tiny"]
        await closed(http, server)


async def test_a_long_answer_is_read_whole_as_the_client_gives_its_window_back(tls: Tls) -> None:
    async def long(peer: Peer, stream_id: int) -> None:
        peer.answer(stream_id, body=b"L" * (1024 * 1024))

    async with h2_server(tls, long) as server:
        http = client(tls)
        assert await post(http, server, 1, limit=2 * 1024 * 1024) == (200, b"L" * (1024 * 1024))
        assert await post(http, server, 2, limit=2 * 1024 * 1024) == (200, b"L" * (1024 * 1024))
        assert server.connections == 1
        await closed(http, server)


async def test_hypercorn_retiring_connections_with_goaway_sends_no_apns_push_twice(tmp_path: Path) -> None:
    """Hypercorn sends a GOAWAY after a connection's `keep_alive_max_requests` (1,000 by default; 7 here), naming the
    last stream it took; its h2 then cannot answer those it took and it drops the connection. The requests above
    the GOAWAY's last stream go again on a new connection; those it took fail (RetryLater), never sent again: no
    push reaches the emulator twice, and every push sent reached it."""
    tls = make_tls(tmp_path)
    emulator = ApnsEmulator()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.certfile, config.keyfile = str(tls.cert_file), str(tls.key_file)
    config.keep_alive_max_requests = 7
    stop = trio.Event()
    with trio.fail_after(BOUND_S):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(lambda task_status: serve(App(emulator), config, shutdown_trigger=stop.wait,  # type: ignore[arg-type]
                                                                  task_status=task_status))
            apns = ApnsClient(spec(binds[0], tls))
            outcomes: dict[str, object] = {}
            limiter = trio.Semaphore(3)  # three in flight at a time

            async def one(n: int) -> None:
                async with limiter:
                    outcomes[f"n-{n}"] = await apns.send(delivery(TOKEN, nid=f"n-{n}"))

            async with trio.open_nursery() as senders:
                for n in range(60):
                    senders.start_soon(one, n)
            sent = {nid for nid, outcome in outcomes.items() if isinstance(outcome, Sent)}
            failed = {nid: o for nid, o in outcomes.items() if nid not in sent}
            assert all(isinstance(o, RetryLater) and "ReadError" in o.error for o in failed.values()), failed
            reached = [payload["herald_notification_id"] for _, _, payload in emulator.accepted]
            assert len(reached) == len(set(reached)) and sent <= set(reached), (sorted(reached), sorted(sent))
            assert len(sent) >= 30 and len(outcomes) == 60, len(sent)
            pool = next(iter(apns.http.h2_pools.values()))
            assert pool.opened >= 60 // 8
            await apns.aclose()
            assert pool.open == 0
            stop.set()
