"""The HTTP and WebSocket front end: a Quart-Trio app served by Hypercorn's trio worker.

Routes live in actors/api/, one blueprint per area. Handlers validate with protocol's
schemas (msgspec), talk to the actors through their mailboxes (never their objects: the
Gateway holds mailboxes, ports and stateless services), and answer errors as
application/problem+json naming the field.

A node's role picks the areas its front end serves (AREAS): an `api` node everything but
the subscriber sessions and the inbox, an `edge` node those only, an `all` node every
area. A request for a route another role serves is a 421 (Misdirected Request) naming
this node's role and the roles that serve it; the /openapi.json of a node lists its own
routes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import ASGIFramework
from quart import Blueprint, Response, has_request_context, has_websocket_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import BaseConverter, Map, Rule

from protocol.channels import Channel
from protocol.frames import MAX_CLIENT_MESSAGE_BYTES, CloseCode
from protocol.problems import Problem
from reactor.mailbox import Mailbox
from reactor.port_health import PortHealth
from reactor.ports import LogStore, PortUnavailable, SigningKeyStore, Store

from ..clients.faults import SandboxFaults
from ..domain.tokens import SigningKeys
from ..jobs import JobMessage
from ..messages import CircuitQuery, IngressMessage, RecorderMessage, RegistryMessage
from ..metrics import NodeMetrics, RequestStats, SessionCounts
from ..services.credentials import ApiKeys, SharedSigningKeys
from ..services.dead_letters import DeadLetters
from ..services.receipts import Receipts
from ..services.digests import Digests
from ..services.template_service import TemplateService
from ..services.user_directory import UserDirectory
from . import admin, console_feed, inbox, keys, notifications, openapi, pages, realtime, request_rules, sandbox, template_routes, topics, users, webhooks
from .console_feed import ConsoleFeed
from .errors import UNAVAILABLE_RETRY_S, ProblemError, authorize, json_response, problem_response, to_response, unavailable
from .fast_path import FastSubmit
from .http_server import ConnectionErrors, serve
from .idempotency import Idempotency
from .request_metrics import RequestMetrics, note_route
from .subscriber import SubscriberLimits
from .websocket_endpoint import SessionSockets

log = logging.getLogger("herald.gateway")


# The front end's areas (its blueprints) and the roles whose nodes serve each. An area needing a
# service the node has not got (templates, users, sandbox faults) is left out where it is None.
FRONT_ROLES_ALL = ("all", "api", "edge")
AREAS: dict[str, tuple[str, ...]] = {
    "notifications": ("all", "api"),  # sending, statuses, histories, subscriber tokens
    "admin": ("all", "api"),  # circuits, dead letters, jobs
    "keys": ("all", "api"),
    "topics": ("all", "api"),  # subscriptions (a topic send is a notification)
    "templates": ("all", "api"),
    "users": ("all", "api"),
    "sandbox": ("all",),  # the sandbox clients' faults: in the process that runs the clients, the worker, which has no front end
    "realtime": ("all", "edge"),  # WebSocket, SSE, long-poll
    "inbox": ("all", "edge"),
    "console": ("all", "api"),  # the operator console's live feed (GET /v1/admin/stream)
    "pages": FRONT_ROLES_ALL,  # /ui/{asset}: the pages' scripts and style sheets (actors/web/), no credential to load
    "console_page": ("all", "api"),  # /console: a static page (with the admin API it calls)
    "inbox_page": ("all", "edge"),  # /demo/inbox: a static page (with the subscriber sessions it holds)
    "webhooks": ("all", "api"),  # providers' delivery receipts (POST /v1/webhooks/{provider}), signed by the provider
}
FRONT_ROLES = FRONT_ROLES_ALL  # the roles with a front end (a worker has none)


class NotificationSegment(BaseConverter):
    """A path segment naming a notification (`<notification:nid>`): anything but `batch`, so that
    /v1/notifications/batch is POST's alone (a GET there is a 405, not a status lookup of "batch")."""

    regex = r"(?!batch\Z)[^/]+"


CONVERTERS: dict[str, type[BaseConverter]] = {"notification": NotificationSegment}


@dataclass
class Gateway:
    """What the front end needs from the rest of the system: mailboxes of actors, ports, stateless services.

    The fields a role does not use are None (an edge node has no ingress; an api node no registry).
    """

    recorder: Mailbox[RecorderMessage]  # RecordEvents, and the inbox routes' ChangeInbox
    logstore: LogStore
    keys: ApiKeys
    secret: SigningKeys  # the token-signing key ring (subscriber and unsubscribe tokens)
    max_body_bytes: int
    heartbeat_s: float
    session_queue: int
    limits: SubscriberLimits  # what browsers may hold and ask (session caps, request rates, token issuance)
    role: str = "all"
    max_batch_body_bytes: int = 4 * 1024 * 1024  # POST /v1/notifications/batch, read by the ASGI fast path
    body_timeout_s: float = 60.0  # Quart's BODY_TIMEOUT and the ASGI fast path's: a body trickled slower is a 408
    ingress: Mailbox[IngressMessage] | None = None  # api, all
    idempotency: Idempotency | None = None  # api, all
    dead_letters: DeadLetters | None = None  # api, all: listing the queue (the Store port)
    jobs: Mailbox[JobMessage] | None = None  # api, all: replays and purges run by the Jobs actor
    circuits: Mapping[Channel, Mailbox[CircuitQuery]] = field(default_factory=dict)  # each Provider's queries mailbox, where local
    query_timeout_s: float = 1.0  # how long a query to an actor may take before it is shown as unavailable
    registry: Mailbox[RegistryMessage] | None = None  # edge, all
    ready: bool = False
    draining: trio.Event = field(default_factory=trio.Event)
    sessions_opened: int = 0
    templates: TemplateService | None = None  # the /v1/templates routes exist when set
    users: UserDirectory | None = None  # the preferences, devices and unsubscribe routes exist when set
    signing_key_store: SigningKeyStore | None = None  # where a rotation of `secret` is kept (POST /v1/admin/signing-keys)
    key_ring: SharedSigningKeys | None = None  # keeps `secret` in step with the stored ring (a key made on another node)
    sandbox_faults: SandboxFaults | None = None  # the /v1/admin/sandbox/faults routes exist when set
    store: Store | None = None  # api, all: topics' subscriptions and topic sends' progress
    digests: Digests | None = None  # api, all: GET /v1/users/{id}/digests
    metrics: NodeMetrics | None = None  # GET /metrics (an admin key) serves its scrape
    requests: RequestStats = field(default_factory=RequestStats)  # herald_http_requests_total and its durations
    sessions: SessionCounts = field(default_factory=SessionCounts)  # herald_sessions_open / _opened_total per transport
    console: ConsoleFeed = field(default_factory=ConsoleFeed)  # what the operator console's feed keeps (console_feed.py)
    receipts: Receipts | None = None  # api, all: providers' delivery receipts (actors/services/receipts.py)
    health: PortHealth = field(default_factory=PortHealth)  # ports known unavailable now: GET /readyz answers 503 while any is

    def serves(self, area: str) -> bool:
        return self.role in AREAS[area]


def _blueprints(gw: Gateway) -> dict[str, Blueprint]:
    """Every area's blueprint this gateway has the services for, whatever its role."""
    built = [area.blueprint(gw) for area in (notifications, admin, keys, realtime, inbox, console_feed, webhooks)] + pages.blueprints(gw)
    areas = {bp.name: bp for bp in built}
    if gw.templates is not None:
        areas["templates"] = template_routes.blueprint(gw, gw.templates)
    if gw.users is not None:
        areas["users"] = users.blueprint(gw, gw.users)
    if gw.sandbox_faults is not None:
        areas["sandbox"] = sandbox.blueprint(gw, gw.sandbox_faults)
    if gw.store is not None:
        areas["topics"] = topics.blueprint(gw)
    return areas


class Misdirected:
    """The routes of the areas this node's role does not serve: a request for one is a 421 naming the roles that do."""

    def __init__(self, gw: Gateway) -> None:
        self.role = gw.role
        others = QuartTrio("herald-other-roles", static_folder=None)
        others.url_map.converters.update(CONVERTERS)
        for area, bp in _blueprints(gw).items():
            if not gw.serves(area):
                others.register_blueprint(bp)
        self.map = Map([
            Rule(rule.rule, methods=rule.methods, endpoint=rule.endpoint, websocket=rule.websocket)
            for rule in others.url_map.iter_rules() if rule.endpoint != "static"
        ], converters=CONVERTERS)

    def roles_serving(self, method: str, path: str, websocket: bool = False) -> tuple[str, ...] | None:
        """The roles that serve this request, if its route is another role's; None otherwise."""
        try:
            endpoint, _ = self.map.bind("herald").match(path, method=method, websocket=websocket)
        except HTTPException:
            return None
        return AREAS[str(endpoint).partition(".")[0]]

    def problem(self, method: str, path: str, roles: tuple[str, ...]) -> Problem:
        others = " or ".join(r for r in roles if r != "all")
        served = f"nodes of the role {others} (or all)" if others else "a node of the role all"
        return Problem("Misdirected Request", 421, f"this node's role is {self.role}: {method} {path} is served by {served}")


def create_app(gw: Gateway) -> QuartTrio:
    if gw.role not in FRONT_ROLES:
        raise ValueError(f"a node of the role {gw.role!r} has no front end (the roles with one: {', '.join(FRONT_ROLES)})")
    app = QuartTrio("herald", static_folder=None)  # no static files: nothing is served without a key by accident
    app.url_map.converters.update(CONVERTERS)
    app.config["MAX_CONTENT_LENGTH"] = gw.max_body_bytes
    app.config["BODY_TIMEOUT"] = gw.body_timeout_s
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True

    app.before_request(note_route)  # first: the route template for herald_http_requests_total, whatever hook refuses after

    @app.errorhandler(ProblemError)
    async def _problem(error: ProblemError) -> Response:
        return problem_response(error.problem, error.headers)

    misdirected = Misdirected(gw)

    @app.errorhandler(PortUnavailable)
    async def _unavailable(error: PortUnavailable) -> Response:
        return to_response(unavailable(error))

    @app.errorhandler(HTTPException)
    async def _http(error: HTTPException) -> Response:
        if isinstance(error, (NotFound, MethodNotAllowed)):
            asked = websocket if has_websocket_context() else request if has_request_context() else None
            roles = None if asked is None else misdirected.roles_serving(asked.method, asked.path, has_websocket_context())
            if asked is not None and roles is not None:
                return problem_response(misdirected.problem(asked.method, asked.path, roles))
        status = error.code or 500
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}  # Allow, on a 405 (RFC 9110)
        return problem_response(Problem(title=error.name, status=status, detail=error.description or ""), headers)

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        if has_request_context():
            log.exception("unhandled error on %s %s", request.method, request.path)
        elif has_websocket_context():
            log.exception("unhandled error on WebSocket %s", websocket.path)
        else:
            log.exception("unhandled error")
        return problem_response(Problem(title="Internal Server Error", status=500, detail="unexpected error; see the server log"))

    @app.before_request
    async def _gate() -> None:
        if gw.draining.is_set() and request.path.startswith("/v1/"):
            raise ProblemError(Problem("Service Unavailable", 503, "shutting down"), {"Retry-After": "5"})

    app.before_request(request_rules.check_request)  # unknown query parameters (400), a body that is not JSON (415)
    app.before_websocket(request_rules.check_websocket)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        down = gw.health.down()
        if gw.ready and not gw.draining.is_set() and not down:
            return json_response({"status": "ready"})
        if gw.ready and not gw.draining.is_set():  # a port this node needs is known unavailable (reactor/port_health.py)
            detail = "unavailable: " + "; ".join(f"{port} ({why})" for port, why in sorted(down.items()))
            return problem_response(Problem("Service Unavailable", 503, detail), {"Retry-After": str(UNAVAILABLE_RETRY_S)})
        return problem_response(Problem("Service Unavailable", 503, "starting" if not gw.ready else "shutting down"))

    @app.get("/metrics")
    async def metrics() -> Response:
        await authorize(gw, "admin")
        if gw.metrics is None:
            return problem_response(Problem("Not Found", 404, "this node keeps no metrics"))
        body, content_type = await gw.metrics.scrape(request.headers.get("Accept"))
        return Response(body, content_type=content_type)

    for area, bp in _blueprints(gw).items():
        if gw.serves(area):
            app.register_blueprint(bp)
    app.register_blueprint(openapi.blueprint())  # /openapi.json and /docs: describes the routes registered above
    return app


def hypercorn_config(host: str, port: int, grace_s: float) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = grace_s
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75
    config.alpn_protocols = ["http/1.1"]  # HTTP/2 is not served (actors/api/http_server.py, ClosingH11), over TLS either
    config.backlog = 1024
    config.websocket_max_message_size = MAX_CLIENT_MESSAGE_BYTES  # clients send small control frames only: 1009 past it
    return config


class FrontEnd:
    """The HTTP server (actors/api/http_server.py) as a supervised child; stop() makes it drain and return."""

    def __init__(self, gw: Gateway, host: str, port: int, grace_s: float) -> None:
        self.gw = gw
        self.quart = app = create_app(gw)
        # POST /v1/notifications and the WebSocket skip Quart where they are served; the rest is the Quart app
        self.fast = FastSubmit(app, gw) if gw.serves("notifications") else None
        self.app: ASGIFramework = RequestMetrics(self.fast or app, gw.requests)
        if gw.serves("realtime"):
            self.app = SessionSockets(self.app, gw)  # outermost: a session's task keeps no frame of the layers inside
        self.config = hypercorn_config(host, port, grace_s)
        self.binds: list[str] = []
        self.connection_errors = ConnectionErrors()  # connections an exception ended (each stayed that connection's)

    def stop(self) -> None:
        self.gw.draining.set()
        self.gw.limits.caps.close_all(CloseCode.SHUTTING_DOWN, "server shutting down; reconnect later")

    async def run(self, *, task_status: trio.TaskStatus[list[str] | None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.gw.draining.is_set():
            task_status.started()
            return

        class _Status:  # a trio.TaskStatus[list[str]]: serve() calls started(binds) once it listens
            def started(inner, binds: list[str] | None = None) -> None:  # noqa: N805
                self.binds = binds or []
                self.gw.ready = True
                task_status.started(binds)

        await serve(
            self.app, self.config, shutdown_trigger=self.gw.draining.wait, errors=self.connection_errors, task_status=_Status()
        )

    def url(self) -> str:
        return self.binds[0] if self.binds else ""

