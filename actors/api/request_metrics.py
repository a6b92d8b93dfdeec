"""ASGI: counts every HTTP request by (method, route template, status) and times it to its response's headers.

It wraps the front end inside SessionSockets (the subscriber WebSocket counts its own
handshake: websocket_endpoint.serve), so an idle session keeps no frame of it. The route
is the template the request matched: the Quart app's rule, which `note_route` (a
before_request hook) writes into the ASGI scope, or the fast path's own paths; a
request nothing matched is `unmatched`. Never the raw path: the series stay bounded
whatever paths clients send.

The time is taken when the response's headers go out, not when its body ends: an SSE
stream's opening, a long-poll's answer. The cost per request is two clock reads and a
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
        answered: list[float | int] = []  # status, seconds: set when the headers go out

        async def sending(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start":
                answered[:] = (message["status"], trio.current_time() - started)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method, path = scope["method"], scope["path"]
            noted = cast(dict[str, object], scope).get(ROUTE_KEY)
            route = noted if isinstance(noted, str) else path if method == "POST" and path in _FAST else UNMATCHED
            # No headers went out: the client left, or the app failed after Hypercorn's own 500 (status 0 then).
            status, seconds = answered if answered else (0, trio.current_time() - started)
            self.stats.observe(method, route, int(status), float(seconds))


async def note_route() -> None:
    """Quart before_request (registered first): the matched rule's template, for RequestMetrics."""
    rule = request.url_rule
    if rule is not None:
        cast(dict[str, object], request.scope)[ROUTE_KEY] = rule.rule
