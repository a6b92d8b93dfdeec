"""When the server closes a connection (issue 7, items 1 and 13): after answering `Connection: close` and HTTP/1.0,
after an answer given before the request's body arrived, after a request with both Content-Length and chunked;
and when it does not (ordinary keep-alive requests). Clients read to EOF, bounded: a server that keeps the socket
open fails here instead of hanging the client."""

from __future__ import annotations

import json
import socket

import pytest
import trio

from tests.api.raw_http import head, parse_responses, request, run_case, Case
from tests.helpers import running_node, web_notification

NOTIFICATION = json.dumps(web_notification()).encode()
BIG = 100_000  # over the node's max_body_bytes (64 KiB)


def address(herald) -> tuple[str, int]:
    host, port = herald.url.removeprefix("http://").split(":")
    return host, int(port)


@pytest.mark.parametrize(
    "raw, status",
    [
        (head("GET", "/healthz", close=True), 200),
        (head("GET", "/v1/admin/keys", close=True), 200),
        (head("GET", "/nowhere", close=True), 404),
        (head("GET", "/healthz", auth=None, version="1.0"), 200),
        (head("GET", "/v1/admin/keys", version="1.0"), 200),
        (request("POST", "/v1/notifications", NOTIFICATION, close=True), 202),  # the ASGI fast path
        (request("POST", "/v1/notifications", NOTIFICATION, version="1.0"), 202),
    ],
    ids=["close-quart", "close-quart-auth", "close-404", "http10-quart", "http10-quart-auth", "close-fast", "http10-fast"],
)
async def test_connection_close_and_http10_are_answered_then_closed(tmp_path, raw, status):
    async with running_node(tmp_path, shutdown_grace_s=1) as herald:
        outcome = await run_case(*address(herald), Case("close", [raw], 1), bound_s=10)
        assert not outcome.hung, "the server answered but kept the connection open"
        assert outcome.statuses == [status] and outcome.closed


async def read_to_eof(stream: trio.SocketStream, received: bytearray) -> None:
    """Read until the server closes (a reset counts as closed); the caller bounds it."""
    try:
        while chunk := await stream.receive_some(65536):
            received.extend(chunk)
    except trio.BrokenResourceError:
        pass


async def read_answer(stream: trio.SocketStream, received: bytearray) -> None:
    """Read until one whole response is in `received` (bounded by the caller)."""
    while not parse_responses(bytes(received))[0]:
        chunk = await stream.receive_some(65536)
        assert chunk, f"closed before a whole answer: {bytes(received)!r}"
        received.extend(chunk)


@pytest.mark.parametrize(
    "raw, status",
    [
        (head("PATCH", "/v1/users/u1/preferences", extra="Content-Length: 2\r\n"), 405),
        (head("PUT", "/v1/users/u1/preferences", auth=None, extra="Content-Length: 2\r\n"), 401),
        (head("POST", "/v1/notifications", auth=None, extra="Content-Length: 2\r\n"), 401),
        (head("PUT", "/v1/users/u1/preferences", extra=f"Content-Length: {BIG}\r\n"), 413),
        (head("POST", "/v1/notifications", extra=f"Content-Length: {BIG}\r\n"), 413),
    ],
    ids=["405-quart", "401-quart", "401-fast-path", "413-quart", "413-fast-path"],
)
async def test_an_answer_before_the_body_arrives_closes_the_connection(tmp_path, raw, status):
    """The body (and the next request) sent after the early answer are not read as a request: the answer said
    `Connection: close` and the connection ends."""
    async with running_node(tmp_path, shutdown_grace_s=1) as herald:
        stream = await trio.open_tcp_stream(*address(herald))
        async with stream:
            received = bytearray()
            await stream.send_all(raw)
            with trio.fail_after(10):
                await read_answer(stream, received)
            try:
                await stream.send_all(b"{}" + head("GET", "/healthz"))
            except trio.BrokenResourceError:
                pass  # already closed: fine
            with trio.fail_after(10):  # EOF, not a hang
                await read_to_eof(stream, received)
        statuses, closing = parse_responses(bytes(received))
        assert statuses == [status] and closing == 0, bytes(received)


async def test_an_early_413_lets_the_client_finish_sending_and_read_it(tmp_path):
    """The server answers 413 from the Content-Length while the client is still sending its body. Closing with unread
    bytes would reset the connection: the client's send fails and, off loopback, an answer still in the server's
    send queue is lost. The close lingers instead (reads and drops up to 1 MiB for up to 2 s) after its FIN.
    The client's send buffer is small so that the upload cannot hide in kernel buffers."""
    body = b"x" * (512 << 10)
    async with running_node(tmp_path, shutdown_grace_s=1) as herald:
        for path, method in (("/v1/notifications", "POST"), ("/v1/users/u1/preferences", "PUT")):
            stream = await trio.open_tcp_stream(*address(herald))
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            received = bytearray()
            send_failed = False
            async with stream:
                with trio.fail_after(10):
                    await stream.send_all(head(method, path, extra=f"Content-Length: {len(body)}\r\n"))
                    await read_answer(stream, received)
                    try:
                        await stream.send_all(body)
                    except trio.BrokenResourceError:
                        send_failed = True
                    await read_to_eof(stream, received)
            assert parse_responses(bytes(received)) == ([413], 0), bytes(received)
            assert not send_failed, f"{path}: the server reset the connection under the upload"


async def test_ordinary_requests_keep_the_connection_open(tmp_path):
    """Answers given after the whole request arrived do not close: four requests, pipelined, then a fifth."""
    async with running_node(tmp_path, shutdown_grace_s=1) as herald:
        stream = await trio.open_tcp_stream(*address(herald))
        async with stream:
            await stream.send_all(
                request("POST", "/v1/notifications", NOTIFICATION)
                + request("POST", "/v1/notifications", b"{}")
                + request("PUT", "/v1/users/u1/preferences", b'{"channels": {"sms": false}}')
                + head("GET", "/healthz")
            )
            received = bytearray()
            with trio.fail_after(10):
                while len(parse_responses(bytes(received))[0]) < 4:
                    chunk = await stream.receive_some(65536)
                    assert chunk, bytes(received)
                    received.extend(chunk)
                statuses, closing = parse_responses(bytes(received))
                assert statuses == [202, 400, 200, 200] and closing is None, bytes(received)
                await stream.send_all(head("GET", "/readyz"))
                while len(parse_responses(bytes(received))[0]) < 5:
                    chunk = await stream.receive_some(65536)
                    assert chunk, bytes(received)
                    received.extend(chunk)
            assert parse_responses(bytes(received)) == ([202, 400, 200, 200, 200], None)


async def test_a_request_with_both_content_length_and_chunked_is_answered_then_closed(tmp_path):
    """RFC 9112 section 6.3: the server MUST close after answering it (a request-smuggling guard); the request
    pipelined behind it is not answered."""
    raw = head("POST", "/v1/notifications", extra="Content-Length: 5\r\nTransfer-Encoding: chunked\r\n")
    async with running_node(tmp_path, shutdown_grace_s=1) as herald:
        case = Case("ambiguous", [raw + b"0\r\n\r\n" + head("GET", "/healthz")], 1)
        outcome = await run_case(*address(herald), case, bound_s=10)
        assert not outcome.hung and outcome.closing == 0 and len(outcome.statuses) == 1, outcome
        assert 400 <= outcome.statuses[0] < 500, outcome


@pytest.mark.parametrize("coding", ["Transfer-Encoding: gzip\r\n", "Transfer-Encoding: chunked\r\n" * 2])
async def test_a_transfer_coding_other_than_one_chunked_is_a_400_then_closed(tmp_path, coding):
    """h11 refuses it with a 501; a client's malformed bytes never get a 5xx here."""
    async with running_node(tmp_path, shutdown_grace_s=1) as herald:
        case = Case("coding", [head("POST", "/v1/notifications", extra=coding)], 1)
        outcome = await run_case(*address(herald), case, bound_s=10)
        assert outcome.statuses == [400] and outcome.closing == 0 and not outcome.hung, outcome


@pytest.mark.parametrize(
    "key, version",
    [("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n", "99"), ("", "13"), ("Sec-WebSocket-Key: zzz\r\n", "13"),
     ("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAA\r\n", "13")],
    ids=["version", "no-key", "key-not-base64", "key-not-16-bytes"],
)
async def test_an_invalid_websocket_handshake_is_a_400_then_closed(tmp_path, key, version):
    """Hypercorn answers 400 with `Connection: close` and then kept the connection open; and it upgraded a handshake
    whose key was not the base64 of 16 bytes (RFC 6455 4.2.1), which Herald now refuses with 400."""
    upgrade = f"Connection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: {version}\r\n{key}"
    async with running_node(tmp_path, shutdown_grace_s=1) as herald:
        case = Case("ws", [head("GET", "/v1/ws?token=x", extra=upgrade)], 1)
        outcome = await run_case(*address(herald), case, bound_s=10)
        assert outcome.statuses == [400] and outcome.closing == 0 and not outcome.hung, outcome


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/notifications"),  # the ASGI fast path
        ("POST", "/v1/notifications/batch"),  # the fast path, its own body limit
        ("POST", "/v1/webhooks/sendgrid"),  # the fast path's receipts
        ("PUT", "/v1/users/u1/preferences"),  # Quart
    ],
    ids=["fast-single", "fast-batch", "fast-receipt", "quart"],
)
async def test_a_body_that_stops_coming_is_answered_408_and_the_connection_closed(tmp_path, method, path):
    """A client that sends its head and part of its body, then nothing, held the fast path's routes open for as long as
    it liked (a request task and a connection each: a slowloris). Every route answers 408 once `body_timeout_s`
    has passed without the whole body, names the body, and closes."""
    async with running_node(tmp_path, shutdown_grace_s=1, body_timeout_s=1.0) as herald:
        stream = await trio.open_tcp_stream(*address(herald))
        async with stream:
            await stream.send_all(head(method, path, extra="Content-Type: application/json\r\nContent-Length: 1000\r\n") + b'{"a')
            received = bytearray()
            with trio.fail_after(15):  # EOF after the answer, not a hang
                await read_to_eof(stream, received)
        statuses, closing = parse_responses(bytes(received))
        assert statuses == [408] and closing == 0, bytes(received)
        assert b"application/problem+json" in received
        if path != "/v1/users/u1/preferences":  # Quart's own 408 does not name a field
            assert b'"field":"body"' in received, bytes(received)
