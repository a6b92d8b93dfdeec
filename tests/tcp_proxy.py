"""A Trio TCP proxy in front of a server, for outage tests: forward, or blackhole (a server stopped, SIGSTOP-like).

`open_proxy(target_port, listen_port)` forwards every connection to 127.0.0.1:target_port.
`proxy.blackhole()`: from then on nothing is forwarded either way on any connection, and new
connections are accepted and left silent, as a server that stopped answering looks to a client
(its requests time out; nothing is refused). `proxy.restore()` closes the silent connections (the
clients reconnect) and forwards again. Every task stops with the block.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


class Proxy:
    def __init__(self, target_port: int, nursery: trio.Nursery) -> None:
        self.target_port = target_port
        self._nursery = nursery
        self.forwarding = True
        self._streams: set[trio.SocketStream] = set()
        self.connections = 0

    def blackhole(self) -> None:
        self.forwarding = False

    def restore(self) -> None:
        for stream in list(self._streams):
            self._nursery.start_soon(_close, stream)
        self._streams.clear()
        self.forwarding = True

    async def handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        self._streams.add(client)
        try:
            if not self.forwarding:
                await _drain(client)
                return
            server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
            self._streams.add(server)
            async with server, trio.open_nursery() as pumps:
                pumps.start_soon(self._pump, client, server, pumps.cancel_scope)
                pumps.start_soon(self._pump, server, client, pumps.cancel_scope)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._streams.discard(client)
            await _close(client)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope) -> None:
        try:
            while True:
                data = await source.receive_some(65536)
                if not data:
                    break
                if self.forwarding:
                    await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        scope.cancel()


async def _drain(stream: trio.SocketStream) -> None:
    while await stream.receive_some(65536):
        pass


async def _close(stream: trio.SocketStream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


@asynccontextmanager
async def open_proxy(target_port: int, listen_port: int) -> AsyncIterator[Proxy]:
    async with trio.open_nursery() as nursery:
        proxy = Proxy(target_port, nursery)
        listeners = await trio.open_tcp_listeners(listen_port, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, proxy.handle, listeners)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
