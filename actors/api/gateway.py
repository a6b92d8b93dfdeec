"""The HTTP and WebSocket front end: a Quart-Trio app served by Hypercorn's trio worker.

Routes live in actors/api/, one blueprint per area. Handlers validate with protocol's
schemas (msgspec), talk to the actors through their mailboxes, and answer errors as
application/problem+json naming the field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from quart import Response, has_request_context, has_websocket_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from protocol.channels import Channel
from protocol.frames import MAX_CLIENT_MESSAGE_BYTES
from protocol.problems import Problem
from reactor.mailbox import Mailbox
from reactor.ports import LogStore, SigningKeyStore

from ..clients.faults import SandboxFaults
from ..domain.tokens import SigningKeys
from ..messages import RecorderMessage, RegistryMessage, Submit
from ..provider import Provider
from ..services.credentials import ApiKeys
from ..services.dead_letters import DeadLetters
from ..services.template_service import TemplateService
from ..services.user_directory import UserDirectory
from . import admin, inbox, keys, notifications, openapi, realtime, request_rules, sandbox, template_routes, users
from .errors import ProblemError, json_response, problem_response
from .fast_path import FastSubmit
from .http_server import ConnectionErrors, serve
from .idempotency import Idempotency
from .subscriber import SubscriberLimits

log = logging.getLogger("herald.gateway")


@dataclass
class Gateway:
    """What the front end needs from the rest of the system."""

    ingress: Mailbox[Submit]
    registry: Mailbox[RegistryMessage]
    recorder: Mailbox[RecorderMessage]  # RecordEvents, and the inbox routes' ChangeInbox
    logstore: LogStore
    keys: ApiKeys
    secret: SigningKeys  # the token-signing key ring (subscriber and unsubscribe tokens)
    max_body_bytes: int
    heartbeat_s: float
    session_queue: int
    dead_letters: DeadLetters
    providers: dict[Channel, Provider]
    idempotency: Idempotency
    limits: SubscriberLimits  # what browsers may hold and ask (session caps, request rates, token issuance)
    ready: bool = False
    draining: trio.Event = field(default_factory=trio.Event)
    sessions_opened: int = 0
    templates: TemplateService | None = None  # the /v1/templates routes exist when set
    users: UserDirectory | None = None  # the preferences, devices and unsubscribe routes exist when set
    signing_key_store: SigningKeyStore | None = None  # where a rotation of `secret` is kept (POST /v1/admin/signing-keys)
    sandbox_faults: SandboxFaults | None = None  # the /v1/admin/sandbox/faults routes exist when set


def create_app(gw: Gateway) -> QuartTrio:
    app = QuartTrio("herald", static_folder=None)  # no static files: nothing is served without a key by accident
    app.config["MAX_CONTENT_LENGTH"] = gw.max_body_bytes
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True

    @app.errorhandler(ProblemError)
    async def _problem(error: ProblemError) -> Response:
        return problem_response(error.problem, error.headers)

    @app.errorhandler(HTTPException)
    async def _http(error: HTTPException) -> Response:
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
        if gw.ready and not gw.draining.is_set():
            return json_response({"status": "ready"})
        return problem_response(Problem("Service Unavailable", 503, "starting" if not gw.ready else "shutting down"))

    for area in (notifications, admin, keys, realtime, inbox):
        app.register_blueprint(area.blueprint(gw))
    if gw.templates is not None:
        app.register_blueprint(template_routes.blueprint(gw, gw.templates))
    if gw.users is not None:
        app.register_blueprint(users.blueprint(gw))
    if gw.sandbox_faults is not None:
        app.register_blueprint(sandbox.blueprint(gw, gw.sandbox_faults))
    app.register_blueprint(openapi.blueprint())  # /openapi.json and /docs: describes the routes registered above
    return app


def hypercorn_config(host: str, port: int, grace_s: float) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = grace_s
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75
    config.backlog = 1024
    config.websocket_max_message_size = MAX_CLIENT_MESSAGE_BYTES  # clients send small control frames only: 1009 past it
    return config


class FrontEnd:
    """The HTTP server (actors/api/http_server.py) as a supervised child; stop() makes it drain and return."""

    def __init__(self, gw: Gateway, host: str, port: int, grace_s: float) -> None:
        self.gw = gw
        self.app = FastSubmit(create_app(gw), gw)  # POST /v1/notifications skips Quart; the rest is the Quart app
        self.config = hypercorn_config(host, port, grace_s)
        self.binds: list[str] = []
        self.connection_errors = ConnectionErrors()  # connections an exception ended (each stayed that connection's)

    def stop(self) -> None:
        self.gw.draining.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if self.gw.draining.is_set():
            task_status.started()
            return

        class _Status:
            def started(inner, binds: list[str]) -> None:  # noqa: N805
                self.binds = binds
                self.gw.ready = True
                task_status.started(binds)

        await serve(
            self.app, self.config, shutdown_trigger=self.gw.draining.wait, errors=self.connection_errors, task_status=_Status()
        )

    def url(self) -> str:
        return self.binds[0] if self.binds else ""

