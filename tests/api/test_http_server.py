"""actors/api/http_server.py on its own, serving a small ASGI app: a connection's failure stays on that connection,
an in-flight request survives the drain, an unchecked Hypercorn is refused."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.events import RawData

from actors.api import http_server
from tests.api.raw_http import head, parse_responses


class App:
    """Answers 200; `?wait=<seconds>` first sets `started`, then waits; `?stream=<seconds>` sends the head, sets
    `started`, waits, then sends the body."""

    def __init__(self) -> None:
        self.started = trio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        query = scope["query_string"].decode()
        body = b"ok" * 1000
        if query.startswith("wait="):
            self.started.set()
            await trio.sleep(float(query[5:]))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
        if query.startswith("stream="):
            await send({"type": "http.response.body", "body": body[:10], "more_body": True})
            self.started.set()
            await trio.sleep(float(query[7:]))
            body = body[10:]
        await send({"type": "http.response.body", "body": body})


async def start(nursery: trio.Nursery, app: App, stop: trio.Event, **kwargs: Any) -> tuple[str, int]:
    """`http_server.serve` in `nursery` until `stop`; its address."""
    binds = await nursery.start(partial(http_server.serve, app, config(), shutdown_trigger=stop.wait, **kwargs))
    host, port = binds[0].removeprefix("http://").split(":")
    return host, int(port)


def config() -> Config:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 5
    config.accesslog = None
    return config


async def exchange(stream: trio.SocketStream, raw: bytes, answers: int = 1) -> list[int]:
    """Send `raw`; the statuses once `answers` responses arrived, or what arrived before the server closed."""
    await stream.send_all(raw)
    received = b""
    with trio.fail_after(10):
        while len(parse_responses(received)[0]) < answers:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                chunk = b""
            if not chunk:
                break
            received += chunk
    return parse_responses(received)[0]


async def test_an_exception_on_one_connection_ends_that_connection_only(monkeypatch):
    """Whatever a connection raises (here a fault injected in its HTTP/1.1 handling), the server and every other
    connection go on; with Hypercorn's own `serve`, the same fault ends the server."""
    handle = http_server.ClosingH11.handle

    async def faulty(self: Any, event: Any) -> None:
        if b"X-Fault" in getattr(event, "data", b""):
            raise RuntimeError("injected fault")
        await handle(self, event)

    monkeypatch.setattr(http_server.ClosingH11, "handle", faulty)
    errors = http_server.ConnectionErrors()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        host, port = await start(nursery, App(), stop, errors=errors)
        kept = await trio.open_tcp_stream(host, port)
        async with kept:
            assert await exchange(kept, head("GET", "/")) == [200]
            faulty_stream = await trio.open_tcp_stream(host, port)
            async with faulty_stream:
                assert await exchange(faulty_stream, head("GET", "/", extra="X-Fault: 1\r\n")) == []  # closed, unanswered
            assert errors.count == 1
            assert await exchange(kept, head("GET", "/")) == [200]  # the other connection lives on
            fresh = await trio.open_tcp_stream(host, port)
            async with fresh:
                assert await exchange(fresh, head("GET", "/")) == [200]  # and the server accepts
        stop.set()


async def test_a_request_in_flight_is_answered_through_the_drain():
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        app = App()
        host, port = await start(nursery, app, stop)
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(head("GET", "/?wait=0.3"))
            with trio.fail_after(10):
                await app.started.wait()
            stop.set()  # the server stops listening, lets the request finish, then closes the connection
            received = b""
            with trio.fail_after(10):
                while chunk := await stream.receive_some(65536):
                    received += chunk
            assert parse_responses(received)[0] == [200]
        with pytest.raises(OSError):
            await trio.open_tcp_stream(host, port)


async def test_a_hypercorn_whose_internals_were_not_checked_is_refused(monkeypatch):
    monkeypatch.setattr(http_server, "version", lambda name: "0.19.0")
    with pytest.raises(RuntimeError, match="Hypercorn 0.19.0"):
        await http_server.serve(App(), config())


async def test_bytes_after_a_closing_request_do_not_cut_its_answer():
    """The client asked to close, then sent more while the answer was half sent: h11 calls that a protocol error
    ("Got data when expected EOF", pgjones/hypercorn#203); the answer is finished before the connection closes."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        app = App()
        host, port = await start(nursery, app, stop)
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(head("GET", "/?stream=0.2", close=True))
            with trio.fail_after(10):
                await app.started.wait()
                await stream.send_all(head("GET", "/"))
                received = b""
                while chunk := await stream.receive_some(65536):
                    received += chunk
            assert parse_responses(received) == ([200], 0), received[:300]
        stop.set()


class Streaming(App):
    """`?chunked=<seconds>`: a head with no Content-Length (a stream, as SSE), then a wait, then the body."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        query = scope.get("query_string", b"").decode()
        if scope["type"] != "http" or not query.startswith("chunked="):
            await super().__call__(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        self.started.set()
        await trio.sleep(float(query[8:]))
        await send({"type": "http.response.body", "body": b"data: x\n\n"})


async def test_a_fixed_length_answer_is_one_write_and_a_stream_head_is_not_held(monkeypatch):
    """Head and body of an answer with a Content-Length go to the socket in one write, with no empty write after;
    the head of a stream (no Content-Length) is written at once, before its body exists."""
    writes: list[bytes] = []
    protocol_send = http_server.GuardedConnection.protocol_send

    async def recording(self: Any, event: Any) -> None:
        if isinstance(event, RawData):
            writes.append(bytes(event.data))
        await protocol_send(self, event)

    monkeypatch.setattr(http_server.GuardedConnection, "protocol_send", recording)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        app = Streaming()
        host, port = await start(nursery, app, stop)
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            assert await exchange(stream, head("GET", "/")) == [200]
            assert len(writes) == 1
            assert writes[0].startswith(b"HTTP/1.1 200") and writes[0].endswith(b"ok" * 1000)
            writes.clear()
            await stream.send_all(head("GET", "/?chunked=5"))
            with trio.fail_after(10):
                await app.started.wait()
                while not writes:  # the head alone, while the app still waits for its body
                    await trio.sleep(0.01)
            assert writes[0].startswith(b"HTTP/1.1 200") and b"data: x" not in writes[0]
        stop.set()


class SpawnCounter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.spawned = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1


async def test_keep_alive_requests_spawn_no_timer_task_each_and_the_idle_timeout_still_closes():
    """Requests on a keep-alive connection spawn only their app task (Hypercorn also restarted a keep-alive timer
    task for each, twice); a connection idle keep_alive_timeout closes; one serving a longer request does not."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        settings = config()
        settings.keep_alive_timeout = 0.5
        binds = await nursery.start(partial(http_server.serve, App(), settings, shutdown_trigger=stop.wait))
        host, port = binds[0].removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            assert await exchange(stream, head("GET", "/")) == [200]
            counter = SpawnCounter()
            trio.lowlevel.add_instrument(counter)
            try:
                for _ in range(20):
                    assert await exchange(stream, head("GET", "/")) == [200]
            finally:
                trio.lowlevel.remove_instrument(counter)
            assert counter.spawned <= 20 + 2  # one app task a request (and slack for a timer waking)
            assert await exchange(stream, head("GET", "/?wait=1.2")) == [200]  # served past the idle timeout
            with trio.fail_after(5):  # then idle: closed after about 0.5 s
                assert await stream.receive_some(65536) == b""
        idle = await trio.open_tcp_stream(host, int(port))
        async with idle:
            assert await exchange(idle, head("GET", "/")) == [200]
            stop.set()  # the server stops: an idle connection closes at once, not after its timeout
            with trio.fail_after(2):
                assert await idle.receive_some(65536) == b""


async def read_to_end(stream: trio.SocketStream) -> bytes:
    received = b""
    with trio.fail_after(10):
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


async def test_http2_is_not_served_by_its_preface_nor_by_an_h2c_upgrade():
    """HTTP/2 would take a connection away from every guard of this module (a stream that a zero flow-control window
    holds stays for good: no send reaches the socket to time out). The cleartext preface is a 400 and the end of the
    connection, never HTTP/2 SETTINGS; an `Upgrade: h2c` is ignored: answered in HTTP/1.1, never a 101."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        host, port = await start(nursery, App(), stop)
        settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame, as a client sends after the preface
        async with await trio.open_tcp_stream(host, port) as stream:
            await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings)
            received = await read_to_end(stream)
            assert received.startswith(b"HTTP/1.1 400 "), received[:100]
            assert parse_responses(received) == ([400], 0)
        h2c = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
        async with await trio.open_tcp_stream(host, port) as stream:
            await stream.send_all(head("GET", "/", extra=h2c) + head("GET", "/", close=True))
            assert parse_responses(await read_to_end(stream)) == ([200, 200], 1)
        stop.set()
