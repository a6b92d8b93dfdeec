"""The separate metrics port (`metrics_port`, off by default): GET /metrics without a key, for a scraper.

Its own Hypercorn server (actors/api/http_server.py) on `metrics_host` (loopback by
default), serving nothing but the scrape: any other path is a 404, any other method a
405. It is the only HTTP a worker node serves (a worker has no front end). Whoever
reaches the port reads the metrics: bind it where only the scraper does.
"""

from __future__ import annotations

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from ..metrics import NodeMetrics
from .http_server import ConnectionErrors, serve

PATH = "/metrics"


class MetricsApp:
    """ASGI: GET (or HEAD) /metrics is the node's scrape; everything else is refused."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":  # a WebSocket: refused before the handshake
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
            return
        headers: list[tuple[bytes, bytes]] = []
        if scope["path"] != PATH:
            status, body, content_type = 404, b"not found: this port serves GET /metrics only\n", "text/plain; charset=utf-8"
        elif scope["method"] not in ("GET", "HEAD"):
            status, body, content_type = 405, b"method not allowed: GET /metrics\n", "text/plain; charset=utf-8"
            headers.append((b"allow", b"GET, HEAD"))
        else:
            accept = next((value.decode("latin-1") for name, value in scope["headers"] if name.lower() == b"accept"), None)
            body, content_type = await self.metrics.scrape(accept)
            status = 200
        headers += [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body, "more_body": False})


class MetricsPort:
    """The metrics port's server as a supervised child; stop() makes it return."""

    def __init__(self, metrics: NodeMetrics, host: str, port: int, grace_s: float) -> None:
        from .gateway import hypercorn_config  # gateway imports the front end's modules; this one only its config

        self.app = MetricsApp(metrics)
        self.config = hypercorn_config(host, port, grace_s)
        self.binds: list[str] = []
        self._stop = trio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, task_status: trio.TaskStatus[list[str] | None] = trio.TASK_STATUS_IGNORED) -> None:
        class _Status:
            def started(inner, binds: list[str] | None = None) -> None:  # noqa: N805
                self.binds = binds or []
                task_status.started(binds)

        await serve(self.app, self.config, shutdown_trigger=self._stop.wait, errors=ConnectionErrors(), task_status=_Status())

    def url(self) -> str:
        return self.binds[0] if self.binds else ""
