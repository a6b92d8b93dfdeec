"""The reference for the load test: a raw ASGI app (no framework) on Hypercorn's trio worker.

It reads the whole request body, then answers a POST with 202 and a small JSON body the
size of Herald's receipt (`{"notification_id": <26 chars>, "status": "accepted"}` plus a
Location header), and a GET with 200. A WebSocket (any path) is accepted and each message
echoed back, until the client leaves (the reference of loadtests/bench_sessions.py: what
an idle WebSocket costs on the same server). Nothing else: no validation, no storage.
Herald's figures are reported as ratios of this one's, measured the same way on the same
machine, because absolute numbers move with the machine and its noise.

Run it either with Hypercorn's CLI (from the repository's root, so `loadtests` imports):

    .venv/bin/python -m hypercorn --worker-class trio loadtests.bare_asgi:app --bind 127.0.0.1:8081

or on its own, which binds a free port (port 0), prints the bound URL and stops on
SIGTERM/SIGINT. It uses the same Hypercorn settings as Herald's front end
(actors/api/gateway.py: hypercorn_config): no access log, keep-alive 75 s, backlog 1024:

    .venv/bin/python loadtests/bare_asgi.py [--port 0]
    # bare: serving on http://127.0.0.1:PORT

This file must not import Herald's packages: it is the part of the comparison Herald
is not in.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import signal
import sys
from typing import Any

import trio

_counter = itertools.count()
_HEADERS_202 = [(b"content-type", b"application/json")]


def _receipt() -> tuple[bytes, bytes]:
    nid = f"{next(_counter):026d}"  # as long as a notification id
    body = b'{"notification_id":"%s","status":"accepted"}' % nid.encode()
    return body, b"/v1/notifications/" + nid.encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The whole app: lifespan, then POST -> 202 JSON after reading the body, else 200."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await _echo(receive, send)
        return
    if scope["type"] != "http":
        return
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    if scope["method"] == "POST":
        payload, location = _receipt()
        headers = [*_HEADERS_202, (b"content-length", str(len(payload)).encode()), (b"location", location)]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
    else:
        payload = b'{"status":"ok"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


async def _echo(receive: Any, send: Any) -> None:
    """A WebSocket: accept, then send each message back, until the client disconnects."""
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
        else:  # websocket.disconnect
            return


def _config(host: str, port: int) -> Any:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75
    config.backlog = 1024
    config.graceful_timeout = 5
    return config


async def _main(host: str, port: int) -> None:
    from hypercorn.trio import serve

    stop = trio.Event()

    async def on_signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                stop.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_signals)
        binds = await nursery.start(
            lambda task_status: serve(app, _config(host, port), shutdown_trigger=stop.wait, task_status=task_status)
        )
        print(f"bare: serving on {binds[0]}", flush=True)
        await stop.wait()
    # the nursery returns once serve() drained after the trigger


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bare ASGI reference on Hypercorn's trio worker")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("loopback only")
    logging.basicConfig(level=logging.WARNING)
    trio.run(_main, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
