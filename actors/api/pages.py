"""The pages people look at, served as static files from actors/web/: /console and /demo/inbox, and their assets.

No credential loads a page: each asks for one (the console an admin key, kept in the
tab's sessionStorage and sent in the `Authorization` header only; the inbox demo an API
key and a user id, to mint that user's subscriber token). Nothing is fetched from
another origin: the Content-Security-Policy lets a page load scripts and styles from
this node only, run no inline script, and connect only back to this node.
The files are read once, when the app is made, and kept.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from quart import Blueprint, Response

from protocol.problems import Problem

from .errors import ProblemError

if TYPE_CHECKING:  # gateway.py imports this module
    from .gateway import Gateway

HTML = "text/html; charset=utf-8"
# The assets under /ui/ and their types: nothing else is served (a name not listed is a 404).
ASSETS = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "inbox.js": "text/javascript; charset=utf-8",
    "inbox.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> bytes:
    return (resources.files("actors") / "web" / name).read_bytes()


def blueprints(gw: Gateway) -> list[Blueprint]:
    """Three areas: `pages` (GET /ui/{asset}, every role with a front end), `console_page` (GET /console, with the
    admin API: all, api) and `inbox_page` (GET /demo/inbox, with the subscriber sessions: all, edge)."""
    files = {name: _file(name) for name in ("console.html", "inbox.html", *ASSETS)}

    def page(name: str, content_type: str) -> Response:
        return Response(files[name], content_type=content_type, headers=HEADERS)

    assets = Blueprint("pages", __name__)
    console = Blueprint("console_page", __name__)
    demo = Blueprint("inbox_page", __name__)

    @console.get("/console")
    async def console_html() -> Response:
        return page("console.html", HTML)

    @demo.get("/demo/inbox")
    async def demo_inbox() -> Response:
        return page("inbox.html", HTML)

    @assets.get("/ui/<asset>")
    async def asset(asset: str) -> Response:
        content_type = ASSETS.get(asset)
        if content_type is None:
            raise ProblemError(Problem("Not Found", 404, f"no asset {asset[:64]!r}: the assets are {', '.join(sorted(ASSETS))}"))
        return page(asset, content_type)

    return [assets, console, demo]
