"""The HTTP/1.1 client of the Twilio and SendGrid clients (actors/clients/http1.py), attacked with raw Trio socket servers.

Each server is a few lines answering bytes as written (bad framing included), on a free
loopback port; it counts the requests it read and the connections it holds open, so a test
sees what reached it and that nothing was leaked. Every case ends in an answer or in the
right TransportError (the verdict: RetryLater), never in a hang: a test that hung would hit
the fixture's own bound (trio.fail_after) and fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio

from actors.clients.http1 import Http1Pool
from actors.clients.http_api import call, http_client
from actors.clients.http_errors import ConnectError, PoolTimeout, ReadError, ReadTimeout, RemoteProtocolError, TransportError
from actors.clients.provider_config import SendgridProvider, Secret, TwilioProvider
from actors.clients.sendgrid import SendgridClient
from actors.clients.twilio import TwilioClient
from protocol.channels import Channel
from protocol.content import Content, EmailContent
from protocol.messages import Delivery, RetryLater, Sent
from tests.providers.asgi_server import make_tls, serving
from tests.providers.test_twilio import delivery
from tests.providers.twilio_emulator import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioEmulator

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
BOUND_S = 20  # no test may take longer (a hang fails here, not in the suite's timeout)


@dataclass
class Server:
    port: int
    requests: int = 0  # request heads read
    connections: int = 0  # accepted
    open: int = 0  # still open on the server's side


Handler = Callable[[trio.SocketStream, Server, int], Awaitable[None]]


async def read_request(stream: trio.SocketStream, buffer: bytearray) -> bool:
    """Read one request (its head and a Content-Length body) off the stream; False at EOF."""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return False
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length:
        data = await stream.receive_some(65536)
        if not data:
            return False
        rest += data
    buffer[:] = rest[length:]
    return True


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[Server]:
    """A TCP server on a free loopback port; `handler(stream, server, n)` answers the connection's n-th request."""
    server = Server(0)

    async def connection(stream: trio.SocketStream) -> None:
        server.connections += 1
        server.open += 1
        buffer = bytearray()
        try:
            n = 0
            while await read_request(stream, buffer):
                server.requests += 1
                n += 1
                await handler(stream, server, n)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
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


async def never_answers(stream: trio.SocketStream, server: Server, n: int) -> None:
    """Read on (so the client's close is seen), answer nothing."""
    while await stream.receive_some(65536):
        pass


def pool_of(server: Server, timeout_s: float = 0.3, max_connections: int = 4) -> Http1Pool:
    return Http1Pool("http", "127.0.0.1", server.port, timeout_s=timeout_s, max_connections=max_connections, tls=None)


async def settle(server: Server) -> None:
    """Let the server see the client's closes (up to 5 s on a busy machine; at once as a rule)."""
    for _ in range(500):
        if server.open == 0:
            return
        await trio.sleep(0.01)


def answer(raw: bytes) -> Handler:
    async def handler(stream: trio.SocketStream, server: Server, n: int) -> None:
        await stream.send_all(raw)
    return handler


async def test_keep_alive_one_connection_for_many_requests_and_a_closed_pool_leaves_none_open() -> None:
    async with raw_server(answer(OK)) as server:
        pool = pool_of(server)
        for _ in range(5):
            assert await pool.request("POST", "/x", [], b"body", 1024) == (200, {"content-length": "2"}, b"ok")
        assert server.connections == 1 and server.requests == 5 and pool.open == 1
        await pool.aclose()
        await settle(server)
        assert pool.open == 0 and server.open == 0


async def test_connections_are_bounded_and_every_waiting_request_is_answered() -> None:
    async def slow(stream: trio.SocketStream, server: Server, n: int) -> None:
        await trio.sleep(0.05)
        await stream.send_all(OK)

    async with raw_server(slow) as server:
        pool = pool_of(server, timeout_s=5, max_connections=3)
        answers: list[int] = []

        async def one() -> None:
            answers.append((await pool.request("POST", "/", [], b"x", 64))[0])

        async with trio.open_nursery() as nursery:
            for _ in range(12):
                nursery.start_soon(one)
        assert answers == [200] * 12 and server.connections == 3 and pool.open == 3 and server.requests == 12
        await pool.aclose()


async def test_a_server_that_never_answers_times_out_and_the_connection_is_closed() -> None:
    silent = never_answers  # half-open: the request read, nothing answered, the connection kept

    async with raw_server(silent) as server:
        pool = pool_of(server)
        with pytest.raises(ReadTimeout):
            await pool.request("POST", "/", [], b"x", 64)
        await settle(server)
        assert pool.open == 0 and server.open == 0 and server.requests == 1  # a POST is never sent twice


async def test_an_answer_trickled_forever_is_cut_at_the_calls_deadline() -> None:
    async def trickle(stream: trio.SocketStream, server: Server, n: int) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(10_000):  # each byte well within the read timeout; the whole far beyond the call's
            await stream.send_all(b"x")
            await trio.sleep(0.05)

    async with raw_server(trickle) as server:
        pool = pool_of(server, timeout_s=1.0)  # each byte 20 times within it, the whole cut at 2 s
        with pytest.raises(ReadTimeout, match="no whole answer"):
            await pool.request("POST", "/", [], b"x", 1_000_000)
        await settle(server)
        assert pool.open == 0 and server.open == 0


async def test_a_connection_dropped_mid_answer_is_a_read_error_and_a_post_is_not_sent_again() -> None:
    async def drop(stream: trio.SocketStream, server: Server, n: int) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        await stream.aclose()

    async with raw_server(drop) as server:
        pool = pool_of(server)
        with pytest.raises(ReadError):
            await pool.request("POST", "/", [], b"x", 64)
        assert pool.open == 0 and server.requests == 1


@pytest.mark.parametrize("raw", [
    b"HELLO WORLD\r\n\r\n",  # not a status line
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",  # two lengths
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",  # a chunk size that is no number
    b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",  # a negative length
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 100_000 + b"\r\n\r\n",  # a head beyond its limit
])
async def test_bad_framing_is_a_protocol_error_and_the_connection_is_closed(raw: bytes) -> None:
    async with raw_server(answer(raw)) as server:
        pool = pool_of(server)
        with pytest.raises(RemoteProtocolError):
            await pool.request("POST", "/", [], b"x", 64)
        await settle(server)
        assert (pool.open, server.open, server.requests) == (0, 0, 1)


async def test_a_huge_body_is_read_up_to_the_limit_and_its_connection_not_reused() -> None:
    async def huge(stream: trio.SocketStream, server: Server, n: int) -> None:
        size = 50 * 1024 * 1024
        await stream.send_all(b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % size)
        chunk = b"y" * 65536
        for _ in range(size // len(chunk)):
            await stream.send_all(chunk)

    async with raw_server(huge) as server:
        pool = pool_of(server)
        status, _, body = await pool.request("POST", "/", [], b"x", 4096)
        assert status == 500 and body == b"y" * 4096 and pool.open == 0 and pool.idle == []
        await settle(server)
        assert server.open == 0


async def test_a_chunked_body_is_decoded_and_a_huge_chunked_one_cut_at_the_limit() -> None:
    async def chunked(stream: trio.SocketStream, server: Server, n: int) -> None:
        if n < 3:
            await stream.send_all(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        else:
            await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(100_000):
                await stream.send_all(b"400\r\n" + b"z" * 1024 + b"\r\n")

    async with raw_server(chunked) as server:
        pool = pool_of(server)
        assert await pool.request("POST", "/", [], b"x", 64) == (201, {"transfer-encoding": "chunked"}, b"hello world")
        assert pool.idle and server.connections == 1  # a whole chunked answer: the connection is reused
        assert (await pool.request("POST", "/", [], b"x", 64))[2] == b"hello world"
        status, _, body = await pool.request("POST", "/", [], b"x", 10_000)  # the same connection's third answer: a huge one
        assert status == 200 and body == b"z" * 10_000 and pool.open == 0
        await settle(server)
        assert server.open == 0


async def test_an_answer_without_a_length_is_read_to_the_close_and_connection_close_is_honoured() -> None:
    async def closing(stream: trio.SocketStream, server: Server, n: int) -> None:
        if server.requests == 1:
            await stream.send_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        else:
            await stream.send_all(b"HTTP/1.1 200 OK\r\n\r\nto the end")
        await stream.aclose()

    async with raw_server(closing) as server:
        pool = pool_of(server)
        assert (await pool.request("POST", "/", [], b"x", 64))[2] == b"ok"
        assert (await pool.request("POST", "/", [], b"x", 64))[2] == b"to the end"
        assert server.connections == 2 and pool.open == 0 and pool.idle == []


async def test_an_idle_connection_the_server_closed_is_dropped_before_a_post_uses_it() -> None:
    async def once(stream: trio.SocketStream, server: Server, n: int) -> None:
        await stream.send_all(OK)  # keep-alive promised, then closed (a server's idle timeout)
        await stream.aclose()

    async with raw_server(once) as server:
        pool = pool_of(server)
        assert (await pool.request("POST", "/", [], b"x", 64))[0] == 200
        await settle(server)
        assert (await pool.request("POST", "/", [], b"x", 64))[0] == 200  # on a new connection, sent once
        assert server.connections == 2 and server.requests == 2


async def test_bytes_after_an_answer_are_never_taken_as_the_next_requests_answer() -> None:
    async def smuggles(stream: trio.SocketStream, server: Server, n: int) -> None:
        await stream.send_all(OK + b"HTTP/1.1 500 Smuggled\r\nContent-Length: 0\r\n\r\n" if n == 1 else OK)

    async with raw_server(smuggles) as server:
        pool = pool_of(server)
        assert (await pool.request("POST", "/", [], b"x", 64))[0] == 200
        assert (await pool.request("POST", "/", [], b"x", 64))[0] == 200  # on a new connection
        assert server.connections == 2 and server.requests == 2


async def test_a_reused_connection_broken_before_the_answer_retries_a_get_once_but_never_a_post() -> None:
    async def breaks_second(stream: trio.SocketStream, server: Server, n: int) -> None:
        if n == 1:
            await stream.send_all(OK)
        else:  # the second request on a connection: read, then the connection dropped without an answer
            await stream.aclose()

    async with raw_server(breaks_second) as server:
        pool = pool_of(server)
        assert (await pool.request("GET", "/", [], b"", 64))[0] == 200
        assert (await pool.request("GET", "/", [], b"", 64))[0] == 200  # broken, then sent again on a new connection
        assert server.requests == 3 and server.connections == 2
        with pytest.raises(ReadError):  # the new connection's second request: a POST that reached the server
            await pool.request("POST", "/", [], b"x", 64)
        assert server.requests == 4 and server.connections == 2 and pool.open == 0


async def test_a_request_waits_for_a_connection_only_up_to_its_timeout() -> None:
    async def dripping(stream: trio.SocketStream, server: Server, n: int) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):  # each byte within the read timeout: the connection is held up to the call's deadline
            await stream.send_all(b"x")
            await trio.sleep(0.1)

    async with raw_server(dripping) as server:
        pool = pool_of(server, timeout_s=1.0, max_connections=1)  # the first holds the connection 2 s, the second waits 1
        failures: list[type[TransportError]] = []

        async def one() -> None:
            try:
                await pool.request("POST", "/", [], b"x", 64)
            except TransportError as exc:
                failures.append(type(exc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            await trio.sleep(0.05)
            nursery.start_soon(one)
        assert sorted(f.__name__ for f in failures) == ["PoolTimeout", "ReadTimeout"] and PoolTimeout in failures
        assert server.connections == 1 and pool.open == 0 and pool.slots.value == 1


async def test_a_request_cancelled_from_outside_closes_its_connection_and_frees_its_slot() -> None:
    silent = never_answers
    async with raw_server(silent) as server:
        pool = pool_of(server, timeout_s=10, max_connections=1)
        with trio.move_on_after(0.1) as scope:
            await pool.request("POST", "/", [], b"x", 64)
        assert scope.cancelled_caught and pool.open == 0 and pool.slots.value == 1
        await settle(server)
        assert server.open == 0


async def test_an_unreachable_server_is_a_connect_error() -> None:
    async with raw_server(answer(OK)) as server:
        port = server.port
    pool = Http1Pool("http", "127.0.0.1", port, timeout_s=1, max_connections=1, tls=None)
    with pytest.raises(ConnectError):
        await pool.request("POST", "/", [], b"x", 64)
    assert pool.open == 0 and pool.slots.value == 1


async def test_tls_with_the_providers_ca_file_and_a_certificate_it_does_not_trust(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    (tmp_path / "other").mkdir()
    other = make_tls(tmp_path / "other")
    emulator = TwilioEmulator()
    async with serving(emulator, tls) as url:
        trusted = http_client(5, 2, tls.ca_file, http2=False)
        answer = await call(trusted, "GET", f"{url}/2010-04-01/Accounts/{ACCOUNT_SID}.json", auth=(ACCOUNT_SID, AUTH_TOKEN))
        assert answer.status == 200 and answer.http_version == "HTTP/1.1"
        untrusted = http_client(5, 2, other.ca_file, http2=False)
        with pytest.raises(ConnectError, match="TLS"):
            await call(untrusted, "GET", f"{url}/2010-04-01/Accounts/{ACCOUNT_SID}.json")
        sms = TwilioClient(TwilioProvider(account_sid=ACCOUNT_SID, auth_token=Secret(AUTH_TOKEN), from_number=FROM_NUMBER,
                                          base_url=url, ca_file=tls.ca_file, timeout_s=5))
        for _ in range(3):
            assert isinstance(await sms.send(delivery()), Sent)
        [pool] = sms._http.pools.values()
        assert len(emulator.accepted) == 3 and pool.opened == 1 and pool.open == 1  # one TLS connection, kept alive
        await sms.aclose()
        await trusted.aclose()
        await untrusted.aclose()


async def test_a_credential_with_a_line_break_is_never_sent_nor_shown() -> None:
    async with raw_server(answer(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")) as server:
        mail = SendgridClient(SendgridProvider(api_key=Secret("SG.secret-42\r\nX-Injected: 1"),
                                               base_url=f"http://127.0.0.1:{server.port}", timeout_s=5), "Herald <noreply@example.org>")
        outcome = await mail.send(Delivery("n-1", "u1", Channel.EMAIL, 0, Content(email=EmailContent("Hi", "Hello")),
                                           address="ann@example.org"))
        assert isinstance(outcome, RetryLater) and "RequestError" in outcome.error and "secret-42" not in outcome.error, outcome
        assert server.requests == 0 and server.connections == 0


@pytest.mark.parametrize(("handler_raw", "text"), [
    (None, "timed out (ReadTimeout)"),
    (b"HTTP/1.1 201 Created\r\nContent-Length: 9999\r\n\r\n{", "ReadError"),
    (b"SMTP 220 hello\r\n\r\n", "RemoteProtocolError"),
])
async def test_each_transport_failure_is_twilios_retryable_failure(handler_raw: bytes | None, text: str) -> None:
    async def handler(stream: trio.SocketStream, server: Server, n: int) -> None:
        if handler_raw is None:
            return await never_answers(stream, server, n)
        await stream.send_all(handler_raw)
        await stream.aclose()

    async with raw_server(handler) as server:
        sms = TwilioClient(TwilioProvider(account_sid=ACCOUNT_SID, auth_token=Secret(AUTH_TOKEN), from_number=FROM_NUMBER,
                                          base_url=f"http://127.0.0.1:{server.port}", timeout_s=0.3))
        outcome = await sms.send(delivery())
        assert isinstance(outcome, RetryLater) and text in outcome.error and AUTH_TOKEN not in outcome.error, outcome
        assert server.requests == 1
        await sms.aclose()
        await settle(server)
        assert server.open == 0


async def test_each_request_carries_its_own_head_however_many_heads_the_pool_keeps() -> None:
    from actors.clients.http1 import HEADS_KEPT

    heads: list[bytes] = []

    async def recording(stream: trio.SocketStream) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(buffer) < length:
                buffer += await stream.receive_some(65536)
            heads.append(head + b"|" + buffer[:length])
            buffer = buffer[length:]
            await stream.send_all(OK)

    with trio.fail_after(BOUND_S):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, recording, 0, host="127.0.0.1"))
            pool = Http1Pool("http", "127.0.0.1", listeners[0].socket.getsockname()[1], timeout_s=5, max_connections=1, tls=None)
            sent = [f"v{i % (HEADS_KEPT + 7)}" for i in range(3 * HEADS_KEPT)]  # more distinct heads than kept, each again
            for value in sent:
                assert (await pool.request("POST", "/p", [("X-N", value)], value.encode() * 2, 64))[0] == 200
            await pool.aclose()
            nursery.cancel_scope.cancel()
    assert heads == [b"POST /p HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: herald\r\nX-N: %s\r\nContent-Length: %d|%s"
                     % (pool.port, v.encode(), 2 * len(v), v.encode() * 2) for v in sent]
    assert 0 < len(pool._heads) <= HEADS_KEPT
