"""A second reference for loadtests/bench_sessions.py: a WebSocket echo on trio-websocket's server.

`trio_websocket.serve_websocket` (wsproto under it, one reader task per connection, no ASGI,
no HTTP server in front): each message is echoed back until the client leaves. It shows
what an idle WebSocket costs without Hypercorn, for choosing the edge's WebSocket server
(issue 10 item 7). Same settings where they exist: a 4 KiB message limit, as Herald's front
end (protocol/frames.py MAX_CLIENT_MESSAGE_BYTES).

    .venv/bin/python loadtests/bare_trio_ws.py [--port 0]
    # trio-websocket: serving on http://127.0.0.1:PORT

It stops on SIGTERM/SIGINT. This file must not import Herald's packages.
"""

from __future__ import annotations

import argparse
import signal
import sys
from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

MAX_MESSAGE_BYTES = 4096


async def _echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


async def _main(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        serve = partial(serve_websocket, _echo, host, port, ssl_context=None, max_message_size=MAX_MESSAGE_BYTES)
        server = await nursery.start(serve)
        print(f"trio-websocket: serving on http://{host}:{server.port}", flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="WebSocket echo reference on trio-websocket's server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("loopback only")
    trio.run(_main, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
