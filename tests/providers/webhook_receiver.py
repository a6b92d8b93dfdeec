"""A webhook endpoint for the tests: an ASGI app (tests/providers/asgi_server.py) that records every request and
answers from a script (2xx by default), and a raw TCP server that answers with a body larger than anyone should read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import trio

from tests.providers.asgi_server import Answer


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records each request; answers the next scripted Answer, else 204."""

    script: list[Answer] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes, http_version: str) -> Answer:
        self.received.append(Received(method, path, headers, body))
        return self.script.pop(0) if self.script else Answer(204)


@dataclass
class Flood:
    """How much of its huge answer the flooding server wrote before the client dropped the connection."""

    url: str = ""
    written: int = 0
    total: int = 0
    requests: int = 0
    closed: trio.Event = field(default_factory=trio.Event)


@asynccontextmanager
async def flooding(total: int = 64 * 1024 * 1024, status: int = 500) -> AsyncIterator[Flood]:
    """A server on a free loopback port answering every request `status` with a `total`-byte body, written in chunks
    until the client goes away (then `closed` is set)."""
    flood = Flood(total=total)
    chunk = b"x" * 65536

    async def handle(stream: trio.SocketStream) -> None:
        flood.requests += 1
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                data = await stream.receive_some(65536)
                if not data:
                    return
                head += data
            await stream.send_all(f"HTTP/1.1 {status} Oops\r\nContent-Length: {total}\r\n\r\n".encode())
            while flood.written < total:
                await stream.send_all(chunk)
                flood.written += len(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            flood.closed.set()
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        flood.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/hook"
        try:
            yield flood
        finally:
            nursery.cancel_scope.cancel()
