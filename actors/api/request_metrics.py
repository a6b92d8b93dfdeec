"""ASGI: counts every HTTP request by (method, route template, status) and times it to its response's headers.

It wraps the front end inside SessionSockets (the subscriber WebSocket counts its own
handshake: websocket_endpoint.serve), so an idle session keeps no frame of it. The route
is the template the request matched: the Quart app's rule, which `note_route` (a
before_request hook) writes into the ASGI scope, or the fast path's own paths; a
request nothing matched is `unmatched`. Never the raw path: the series stay bounded
whatever paths clients send.

A request is counted, and its time taken, when its response's headers go out, not when
its body ends: an SSE stream counts as it opens; a request that never answered (the
client left first) counts with the status 0 when it ends. The cost per request is two clock reads and a
few integer increments (docs/metrics.md, "Cost").
"""

from __future__ import annotations

from typing import cast

import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope
from quart import request

from ..metrics import UNMATCHED, RequestStats
from .fast_path import PATH as FAST_PATH
from .notifications import BATCH_PATH

ROUTE_KEY = "herald.route"  # the scope key the matched rule's template is written under
_FAST = frozenset({FAST_PATH, BATCH_PATH})


class RequestMetrics:
    def __init__(self, app: ASGIFramework, stats: RequestStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = trio.current_time()
        answered = False

        def observe(status: int) -> None:
            method, path = scope["method"], scope["path"]
            noted = cast(dict[str, object], scope).get(ROUTE_KEY)
            route = noted if isinstance(noted, str) else path if method == "POST" and path in _FAST else UNMATCHED
            self.stats.observe(method, route, status, trio.current_time() - started)

        async def sending(message: ASGISendEvent) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True  # counted when its headers go out: a stream (SSE) is counted as it opens
                observe(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if not answered:  # no headers went out: the client left first, or the app failed (status 0)
                observe(0)


async def note_route() -> None:
    """Quart before_request (registered first): the matched rule's template, for RequestMetrics."""
    rule = request.url_rule
    if rule is not None:
        cast(dict[str, object], request.scope)[ROUTE_KEY] = rule.rule
