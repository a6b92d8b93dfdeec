"""The OpenAPI 3.1 description of Herald's HTTP API: /openapi.json, and the /docs page made from it.

OPERATIONS is the catalogue: one entry per route and method, with its auth (and the API
key scope it needs), parameters and their constraints, request body, answers and
problems. The schemas are not written here: they come from protocol's msgspec Structs
through `msgspec.json.schema_components`, the very types the handlers decode requests
with and encode answers from, so the description follows the validation.

Route files need no edits for this. tests/api/test_openapi.py checks the catalogue
against the app's url_map both ways (a new route fails until it has an entry here) and
each operation's scope against tests/auth's ROUTE_SCOPES; tests/api/test_schemathesis.py
runs schemathesis with it against a real `herald serve`.

The served document lists the operations whose route the app has (the templates and
users routes exist only when their services are configured), built once per app on the
first request.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal, get_args

import msgspec
from quart import Blueprint, Response, current_app

from protocol.api import (
    BatchProblem,
    BatchReceipt,
    BatchRequest,
    Cancellation,
    CircuitView,
    ConsoleSnapshot,
    DeadLetterPage,
    DlqSelection,
    HistoryPage,
    JobView,
    NotificationRequest,
    NotificationStatus,
    Receipt,
    TokenRequest,
    TokenResponse,
)
from protocol.channels import Channel
from protocol.faults import SANDBOX_CHANNELS, FaultList, FaultSpec, FaultView
from protocol.frames import MAX_CLIENT_MESSAGE_BYTES, Ack, CloseCode, Ping, Pong, ServerFrame, Sync
from protocol.ids import NOTIFICATION_ID_RE, USER_ID_RE, USER_ID_RULE
from protocol.inbox import InboxItem, InboxPage, ReadAllRequest, ReadAllResult, UnreadCount
from protocol.keys import CreatedKey, KeyList, KeyRequest, KeyView, SigningKeyList
from protocol.parsing import DEVICE_TOKEN_PATTERN
from protocol.topics import (
    MAX_SUBSCRIBERS_PER_CALL,
    TOPIC_PATTERN,
    TOPIC_RULE,
    SubscribersChange,
    SubscribersPage,
    SubscribersRequest,
    TopicSendStatus,
)
from protocol.digests import PendingDigests
from protocol.preferences import Device, DeviceList, DeviceRequest, Preferences, Unsubscribed
from protocol.problems import PROBLEM_CONTENT_TYPE, Problem
from protocol.template_schemas import TEMPLATE_ID_RE, RenderRequest, RenderResult, TemplateSpec, TemplateView, VersionList

from ..domain.receipts import ReceiptCounts
from . import docs_page

OPENAPI_VERSION = "3.1.0"
SCHEMA_REF = "#/components/schemas/{name}"
# Methods the framework answers for every route without a catalogue entry: HEAD for each
# GET (same status and headers, no body), OPTIONS (200 with Allow and no body, no credential needed).
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
HTML_TYPE = "text/html"


# -- shapes the handlers build inline: the same fields, typed for the description


class Health(msgspec.Struct, frozen=True):
    """GET /healthz and GET /readyz."""

    status: Literal["ok", "ready"]


class CircuitList(msgspec.Struct, frozen=True):
    """GET /v1/admin/circuits: one entry per channel."""

    circuits: list[CircuitView]


class PollResponse(msgspec.Struct, frozen=True):
    """GET /v1/poll: the frames in delivery order, and the cursor for the next poll.

    `last_id` is the id of the last notification in `items`, or the `after` the poll was
    given when none arrived, so a client can always pass it back as `after`.
    """

    items: list[ServerFrame]
    last_id: str | None


# -- the catalogue's vocabulary


class Auth(str, enum.Enum):
    """What an operation takes as a credential."""

    NONE = "none"
    API_KEY = "api_key"  # Authorization: Bearer <API key> granting the operation's scope
    API_KEY_OR_SUBSCRIBER = "api_key_or_subscriber_token"  # or the subscriber token of the user in the path
    SUBSCRIBER = "subscriber_token"  # ?token= or Authorization: Bearer <subscriber token>
    UNSUBSCRIBE = "unsubscribe_token"  # the signed ?token= of an email's unsubscribe link
    PROVIDER = "provider_signature"  # a provider's signature over the request (delivery receipts)


@dataclass(frozen=True)
class Param:
    name: str
    location: Literal["path", "query", "header"]
    schema: dict[str, Any]
    description: str
    required: bool = False
    example: Any = None


@dataclass(frozen=True)
class Body:
    """A request body: a msgspec type (application/json) or a raw JSON Schema, per media type; an example of the JSON one."""

    content: dict[str, Any]
    description: str
    required: bool = True
    example: Any = None  # tests/api/test_openapi.py decodes it with the body's type


@dataclass(frozen=True)
class Link:
    """An OpenAPI link: where the answer leads, and which of its values fill the next operation's parameters."""

    operation_id: str
    parameters: dict[str, str]  # name -> runtime expression ($request.path.user_id, $response.body#/token)


@dataclass(frozen=True)
class Reply:
    """One answer: per media type a msgspec type or a raw JSON Schema (none: no body); headers name -> required."""

    description: str
    content: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, bool] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    method: str
    rule: str  # the app's rule, e.g. /v1/notifications/<nid>
    operation_id: str
    tag: str
    summary: str
    auth: Auth
    scope: str | None  # the API key scope (API_KEY, API_KEY_OR_SUBSCRIBER)
    replies: dict[int, Reply]
    params: tuple[Param, ...] = ()
    body: Body | None = None
    problems: tuple[int, ...] = ()  # beyond those its auth, parameters and body imply (problem_statuses)
    description: str = ""

    @property
    def path(self) -> str:
        """The OpenAPI path: /v1/notifications/{nid}."""
        return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", self.rule)

    def problem_statuses(self) -> list[int]:
        statuses = set(self.problems)
        if self.rule.startswith("/v1/"):
            statuses.add(503)  # draining: every /v1 route answers 503 with Retry-After
        if self.auth in (Auth.API_KEY, Auth.API_KEY_OR_SUBSCRIBER):
            statuses |= {401, 403, 429}
        if self.auth is Auth.SUBSCRIBER:
            statuses |= {401, 429}  # 429: the token's user is over its request rate, or at its session cap
        if self.auth is Auth.PROVIDER:
            statuses |= {401, 403}  # unsigned; badly signed, stale or replayed
        statuses.add(400)  # a query parameter the operation does not list, on every route (request_rules)
        if any(p.location == "path" for p in self.params):
            statuses.add(404)  # no such resource, or a value the router cannot match (e.g. with a `/`)
        if self.body is not None:
            statuses |= {400, 413}
            if "application/json" in self.body.content:
                statuses.add(415)  # a Content-Type other than JSON (request_rules)
        return sorted(statuses - set(self.replies))


def json_reply(schema: Any, description: str, headers: dict[str, bool] | None = None, links: dict[str, Link] | None = None) -> Reply:
    return Reply(description, {"application/json": schema}, headers or {}, links or {})


def problem(description: str, headers: dict[str, bool] | None = None) -> Reply:
    return Reply(description, {PROBLEM_CONTENT_TYPE: Problem}, headers or {})


def body(schema: Any, description: str, *, required: bool = True, example: Any = None) -> Body:
    return Body({"application/json": schema}, description, required, example)


# The receipts' 401: not the API key's challenge (Bearer realm="herald") but the provider's signature's
UNSIGNED_RECEIPT = problem('Unsigned: the provider\'s signature header is missing (`errors` names it); '
                           '`WWW-Authenticate: Signature realm="<provider>"`.')


# -- parameters

# The lengths the patterns imply, stated too: tools that generate boundary values read minLength/maxLength, not regexes.
USER_ID_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": USER_ID_RE.pattern}
USER_ID = Param("user_id", "path", USER_ID_SCHEMA, f"The user: {USER_ID_RULE}.", True, "alice")
NOTIFICATION_ID_SCHEMA = {"type": "string", "minLength": 26, "maxLength": 26, "pattern": NOTIFICATION_ID_RE.pattern}
# A resume point, where an empty value means none (the handlers read `value or None`).
RESUME_ID_SCHEMA = {"type": "string", "maxLength": 26, "pattern": f"^({NOTIFICATION_ID_RE.pattern[1:-1]})?$"}
NID = Param("nid", "path", NOTIFICATION_ID_SCHEMA, "A notification id: 26 characters, Crockford base32 (a ULID).", True)
TEMPLATE_ID = Param(
    "template_id", "path", {"type": "string", "minLength": 1, "maxLength": 100, "pattern": TEMPLATE_ID_RE.pattern},
    "The template: 1-100 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit.", True, "onboarding",
)
VERSION = Param("version", "path", {"type": "integer", "minimum": 1, "maximum": 2**31}, "A version number (1, 2, ...).", True)
KID = Param("kid", "path", {"type": "string"}, "The signing key's id, as GET /v1/admin/signing-keys lists it.", True)
KEY_ID = Param(
    "key_id", "path", {"type": "string"},
    "The key's id: the 12 hex digits after `hk_`. `bootstrap` names the configured key, which cannot be revoked (409).", True,
)
DEVICE_TOKEN = Param(
    "token", "path", {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": DEVICE_TOKEN_PATTERN},
    "The push device token, as registered.", True,
)
TOPIC = Param(
    "topic", "path", {"type": "string", "minLength": 1, "maxLength": 100, "pattern": TOPIC_PATTERN},
    f"The topic: {TOPIC_RULE}.", True, "release-notes",
)
CHANNEL = Param("channel", "query", {"type": "string", "enum": [c.value for c in Channel]}, "Only this channel.")
CURSOR = Param(
    "cursor", "query", {"type": "string", "minLength": 1},
    "The `next_cursor` of the previous page of this user's listing (absent: the first page); another is a 400.",
)


def limit(default: int) -> Param:
    return Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200, "default": default}, "Items per page (ASCII digits).")


def flag(name: str, description: str) -> Param:
    return Param(name, "query", {"type": "boolean", "default": False}, f"{description} (`true`/`false`, or `1`/`0`).")


# One Server-Sent Event, as OpenAPI 3.1 describes an event stream (each event; 3.2 would call it itemSchema).
SSE_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": [frame.__struct_config__.tag for frame in get_args(ServerFrame) if frame is not Pong]},
        "data": {
            "type": "string", "contentMediaType": "application/json",
            "contentSchema": {"$ref": SCHEMA_REF.format(name="ServerFrame")},
            "description": "The frame's JSON, on one line; its `type` is the event's name.",
        },
        "id": {**NOTIFICATION_ID_SCHEMA, "description": "On notification events: resume after it with Last-Event-ID."},
        "retry": {"type": "integer", "minimum": 0},
    },
}
CONSOLE_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["snapshot", "end"]},
        "data": {
            "type": "string", "contentMediaType": "application/json",
            "contentSchema": {"anyOf": [
                {"$ref": SCHEMA_REF.format(name="ConsoleSnapshot")},
                {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}},
            ]},
            "description": "`snapshot`: the node now, on one line; `end`: why the stream ends (`detail`), the last event.",
        },
        "retry": {"type": "integer", "minimum": 0},
    },
}
TIME = {"type": "string", "minLength": 1, "examples": ["2024-05-01T12:00:00Z", "1714564800000"]}

# -- headers of answers

HEADERS: dict[str, dict[str, Any]] = {
    "Location": {"description": "Where the resource is.", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "WWW-Authenticate": {
        "description": 'The Bearer challenge: `Bearer realm="herald"`, with `error="invalid_token"` for a credential that is not '
        'valid, or `error="insufficient_scope", scope="<scope>"` for a key without the scope.',
        "schema": {"type": "string", "pattern": '^Bearer realm="herald"'},
    },
    "Idempotent-Replayed": {
        "description": "`true` on the stored answer to an earlier request with the same Idempotency-Key and body.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Cache-Control": {"description": "`no-store`: the answer holds a secret.", "schema": {"type": "string"}},
    "Allow": {"description": "The methods the path takes (RFC 9110).", "schema": {"type": "string"}},
}

# -- problems: application/problem+json (RFC 9457), `errors` naming each field

PROBLEMS: dict[int, tuple[str, str, dict[str, bool]]] = {
    400: ("BadRequest", ("A parameter or the body does not fit its schema, the JSON is malformed, or a query parameter is "
                         "unknown: `errors` names each field."), {}),
    401: ("Unauthorized", ("No credential, or one that is not valid (unknown, malformed, revoked, expired, tampered). "
                           "`errors` names where it was looked for (`Authorization` or `token`)."), {"WWW-Authenticate": True}),
    403: ("Forbidden", ("The API key lacks the operation's scope (named in `WWW-Authenticate`), or a subscriber token was "
                        "issued for another user."), {"WWW-Authenticate": False}),
    404: ("NotFound", "No such resource, or a path the router does not match (a path parameter with a `/` in it, for one).", {}),
    405: ("MethodNotAllowed", "The path exists but not with this method: `Allow` lists those it takes.", {"Allow": True}),
    409: ("Conflict", "The request conflicts with the resource's state: see the operation.", {"Retry-After": False}),
    413: ("ContentTooLarge", "The body is over the node's `max_body_bytes`.", {}),
    415: ("UnsupportedMediaType", ("The body's Content-Type is not JSON: send `application/json` (a `+json` type, "
                                   "`charset=utf-8`, or no Content-Type also do). `errors` names `Content-Type`."), {}),
    422: ("UnprocessableContent", "The body fits the schema but not the rules the schema cannot state: `errors` names each field.", {}),
    429: (
        "TooManyRequests",
        "The API key (or a subscriber token's user) is over its rate limit, or the user or token holds as many "
        "real-time sessions as allowed; a refused request still costs a token.",
        {"Retry-After": True},
    ),
    503: ("ServiceUnavailable", "The node is starting, draining or saturated, or a shared backend it needs (Redis) cannot be reached: retry after `Retry-After` seconds.", {"Retry-After": True}),
}


# -- the catalogue

TEMPLATE_EXAMPLE = {
    "name": "Welcome",
    "default_locale": "en",
    "locales": {
        "en": {"email": {"subject": "Welcome, {{name}}", "html": "<p>Hi {{name}}</p>"}, "web": {"title": "Hi {{name}}"}},
        "fr": {"email": {"subject": "Bienvenue, {{name}}", "text": "Salut {{name}}"}, "web": {"title": "Salut {{name}}"}},
    },
    "variants": {"A": {"weight": 1}, "B": {"weight": 1, "locales": {"en": {"web": {"title": "Hey {{name}}!"}}}}},
}
_RECEIPT_HEADERS = {"Location": True, "Idempotent-Replayed": False}
_NOTIFICATION_DOC = (
    "Exactly one of `content` (per channel) and `template_id` (with `data` and `locale`). `to` gives the addresses; "
    "an email subject (as given, or as the template renders it from `data`) or `to.email` holding a line break, a control "
    "character, U+2028/U+2029 or an RFC 2047 encoded word (`=?...?=`), or an address Python's email package cannot parse, "
    "is a 422 naming the field (or the `data.<name>` it came from). "
    "when absent, the user's preferences and devices do. 202 once the notification is durably on the bus. "
    "Exactly one of `user_id` and `topic`: with `topic` (no `to`) the send goes to every subscriber of the topic, each "
    "with their own preferences, locale, quiet hours and template locale; 202 once the topic send is durable, and its "
    "status (GET /v1/notifications/{nid}) shows the fan-out's progress. "
    "`send_at` schedules the send (not with `topic`): an RFC 3339 time with an offset, at most 366 days ahead (up to 60 s "
    "past: sent now; further past or without an offset: a 422), or `{\"local\": \"09:00\", \"in\": \"user\"}`, the next "
    "time the user's clock shows it in their preferences' time zone (a time skipped by DST: as many minutes after the "
    "change; shown twice: the first showing still ahead). Each channel is `scheduled` until then, held durably before the "
    "202; preferences are read at both ends (a channel off now fails now; an opt-out or quiet hours at fire time win). "
    "DELETE /v1/notifications/{nid} cancels it until it fires. "
    "`digest` (with `template_id`; not with `topic` or `send_at`) collects the send into the user's digest of that key: "
    "each channel is `scheduled` (`digest <key>`) until its window fires, then `digested`, its detail naming the "
    "notification that carried it (`in <id>`); one notification of the template goes out per window, its `data` the "
    "events' (`events`, each event's data with `at`; `count`; `first`; `last`), in the user's locale. Windows: "
    "`{\"kind\": \"fixed\", \"every\": \"1h\"}` (1m-7d after the first event), `{\"kind\": \"sliding\", "
    "\"after_quiet\": \"10m\", \"max_wait\": \"2h\"}` (no event for after_quiet, 10s-1d; at most max_wait after the first, "
    "up to 7d), `{\"kind\": \"daily\", \"at\": \"08:00\"}` (the user's clock, after their quiet hours); a user's "
    "preferences (`digests`) may choose another window per key or category; a critical send flushes the window at once. "
    "A wrong window is a 422 naming the field (`digest.window.every`). GET /v1/users/{id}/digests lists what is pending. "
    "An `Idempotency-Key` makes a retry safe: the same key and body within 24 h get the original answer (marked "
    "`Idempotent-Replayed: true`), the same key with another body is a 422, a key whose first request is still running a 409."
)

_BATCH_DOC = (
    "`items`: 1 to 1,000 bodies of POST /v1/notifications, each checked as that route checks one (schema, content, "
    "addresses, headers, template, preferences) and at most `max_body_bytes`; the whole body at most "
    "`max_batch_body_bytes` (4 MiB by default: a 413 says the limit). An item that fails gets its problem, its fields "
    "named `items[i].<field>`, and does not stop the others: the accepted ones go to the bus in one durable append. "
    "The answer: 202 if at least one item was accepted (`accepted`, `rejected`, and `items` in order, each "
    "`{notification_id}` or `{problem}`); 422 if none was (a problem with the same `items`). A batch of N items costs "
    "N tokens of the API key's rate limit, every call, a replay too (429 with Retry-After, nothing accepted; a 422 if N "
    "is over the key's burst). "
    "One `Idempotency-Key` covers the batch: the same key and body within 24 h get the original answer, the same key "
    "with another body is a 422, a key whose first request is still running a 409."
)

SANDBOX_CHANNEL = Param(
    "channel", "path", {"type": "string", "enum": [c.value for c in SANDBOX_CHANNELS]},
    "A channel served by a sandbox client (404 for another, or one whose client is not the sandbox's).", True, "sms",
)
_FAULTS_DOC = (
    "Only the sandbox clients (the email outbox, the SMS, push and webhook files) take faults. Each call first waits `latency_ms`, "
    "then fails while the outage window (`fail_for_s` from now) runs, or with probability `error_rate` (seeded by `seed`); "
    "a failed call answers `kind`: `retryable` (retried with backoff, counts against the breaker, dead-lettered after "
    "max_attempts) or `permanent` (the channel fails at once). The setting lasts until changed or the node restarts; "
    "`[herald.faults.<channel>]` in the config file sets it at start."
)

_JOB_DOC = (
    "The job runs on the node off the request path, a page of entries at a time, one job after another; follow it at "
    "`Location` (GET /v1/admin/jobs/{job_id}) until its `state` is `done` or `failed`. 503 with Retry-After when 16 jobs "
    "are queued already. 422 naming the fields unless exactly one of `ids`, a filter, or `all: true` is given "
    "(`ids` with a filter field is refused), or when `notification_id` is not a notification id or `before` not a time. "
    "A filter's fields must all match; `before`: dead-lettered before that time (RFC 3339 or milliseconds since the epoch)."
)
JOB_ID = Param("job_id", "path", {"type": "string", "minLength": 1, "maxLength": 64}, "The job's id, from the 202 that started it.", True)
_JOB_LINK = {"follow": Link("getJob", {"job_id": "$response.body#/id"})}

OPERATIONS: tuple[Operation, ...] = (
    # service
    Operation("GET", "/healthz", "getHealth", "service", "Liveness", Auth.NONE, None, {200: json_reply(Health, "The process serves HTTP.")}),
    Operation(
        "GET", "/readyz", "getReadiness", "service", "Readiness", Auth.NONE, None,
        {200: json_reply(Health, "Ready to take requests."), 503: problem("Starting, or draining before a shutdown.")},
    ),
    Operation(
        "GET", "/openapi.json", "getOpenApi", "service", "This OpenAPI description", Auth.NONE, None,
        {200: json_reply({"type": "object"}, "The OpenAPI 3.1 document.")},
    ),
    Operation(
        "GET", "/docs", "getDocs", "service", "The API reference as a web page", Auth.NONE, None,
        {200: Reply("This document as HTML, self-contained.", {HTML_TYPE: {"type": "string"}})},
    ),
    Operation(
        "GET", "/console", "getConsole", "service", "The operator console (a web page)", Auth.NONE, None,
        {200: Reply("A static page (actors/web/console.html): it asks for an admin key, keeps it in the tab's session "
                    "storage and sends it in the Authorization header only; its live view is GET /v1/admin/stream.",
                    {HTML_TYPE: {"type": "string"}})},
    ),
    Operation(
        "GET", "/demo/inbox", "getInboxDemo", "service", "The inbox widget demo (a web page)", Auth.NONE, None,
        {200: Reply("A static page (actors/web/inbox.html): a bell and an inbox, live over WebSocket, SSE or long-poll; "
                    "its form mints a subscriber token for one user with an API key.", {HTML_TYPE: {"type": "string"}})},
    ),
    Operation(
        "GET", "/ui/<asset>", "getPageAsset", "service", "A script or style sheet of the pages", Auth.NONE, None,
        {200: Reply("The asset.", {"text/javascript": {"type": "string"}, "text/css": {"type": "string"}})},
        params=(Param("asset", "path", {"type": "string", "enum": ["console.js", "console.css", "inbox.js", "inbox.css"]},
                      "The asset's name.", True),),
    ),
    Operation(
        "GET", "/metrics", "getMetrics", "service", "Prometheus metrics", Auth.API_KEY, "admin",
        {200: Reply("The node's herald_* families in the Prometheus text format (OpenMetrics if the Accept header asks).",
                    {"text/plain": {"type": "string"}})},
        description="Every family and its labels: docs/metrics.md. A node shows what its role runs. The same scrape "
                    "without a key on the metrics port (`metrics_port`), where it is set.",
    ),
    # notifications
    Operation(
        "POST", "/v1/notifications", "createNotification", "notifications", "Send a notification", Auth.API_KEY, "send",
        {202: json_reply(Receipt, "Accepted: durably on the bus.", _RECEIPT_HEADERS, {
            "status": Link("getNotification", {"nid": "$response.body#/notification_id"}),
            "history": Link("listUserNotifications", {"user_id": "$request.body#/user_id"}),
            "markRead": Link("markRead", {"user_id": "$request.body#/user_id", "nid": "$response.body#/notification_id"}),
            "archive": Link("archive", {"user_id": "$request.body#/user_id", "nid": "$response.body#/notification_id"}),
        })},
        params=(Param("Idempotency-Key", "header", {"type": "string", "minLength": 1, "maxLength": 255},
                      "Makes a retry safe: the same key and body within 24 h get the original answer."),),
        body=body(NotificationRequest, "The notification.", example={
            "user_id": "alice", "channels": ["web", "email"], "to": {"email": "alice@example.org"},
            "content": {"web": {"title": "Welcome", "body": "Hello Alice"}, "email": {"subject": "Welcome", "text": "Hello Alice"}},
        }),
        problems=(409, 422),
        description=_NOTIFICATION_DOC,
    ),
    Operation(
        "POST", "/v1/notifications/batch", "createNotificationBatch", "notifications", "Send up to 1,000 notifications",
        Auth.API_KEY, "send",
        {
            202: json_reply(BatchReceipt, "At least one item accepted: those durably on the bus, in one append.", {"Idempotent-Replayed": False}),
            422: Reply(
                "No item accepted (`items` has each one's problem, `errors` every field as `items[i].<field>`); or the "
                "batch is over the key's burst, or its Idempotency-Key was used with another body (a plain problem).",
                {PROBLEM_CONTENT_TYPE: BatchProblem},
            ),
        },
        params=(Param("Idempotency-Key", "header", {"type": "string", "minLength": 1, "maxLength": 255},
                      "Makes a retry of the whole batch safe: the same key and body within 24 h get the original answer."),),
        body=body(BatchRequest, "The notifications: each item is a body of POST /v1/notifications.", example={"items": [
            {"user_id": "alice", "channels": ["web"], "content": {"web": {"title": "Welcome", "body": "Hello Alice"}}},
            {"user_id": "bob", "channels": ["web"], "content": {"web": {"title": "Welcome", "body": "Hello Bob"}}},
        ]}),
        problems=(409,),
        description=_BATCH_DOC,
    ),
    Operation(
        "GET", "/v1/notifications/<notification:nid>", "getNotification", "notifications", "Status and attempt timeline",
        Auth.API_KEY, "read", {200: json_reply(
            {"oneOf": [{"$ref": SCHEMA_REF.format(name=t.__name__)} for t in (NotificationStatus, TopicSendStatus)]},
            "Per-channel status and attempts; `final` once every channel is settled. A topic send: its fan-out's progress "
            "(subscribers expanded, per-channel counts); each subscriber's copy names it in `topic_send`.",
        )},
        params=(NID,),
    ),
    Operation(
        "DELETE", "/v1/notifications/<notification:nid>", "cancelNotification", "notifications", "Cancel a notification",
        Auth.API_KEY, "send", {200: json_reply(
            Cancellation,
            "Per channel: `cancelled` (now, or by an earlier DELETE: its status is `cancelled`), or in `already_gone` with "
            "its status (sent, on the bus, or settled).",
        )},
        params=(NID,),
        problems=(409,),
        description=(
            "Cancels, per channel, what Herald still holds: a scheduled send (`send_at`) before it fires, a hold by the "
            "user's quiet hours, a retry waiting for its next attempt. Atomic against the Scheduler: a channel is either "
            "cancelled (never sent) or already gone (sent), never both. Repeating the DELETE answers the same. Any key "
            "with the `send` scope may cancel any notification (as any `read` key reads any status). 404: no such "
            "notification; 409: a topic send (cancel its subscribers' copies)."
        ),
    ),
    Operation(
        "PUT", "/v1/topics/<topic>/subscribers", "addTopicSubscribers", "topics", "Subscribe users to a topic",
        Auth.API_KEY, "send", {200: json_reply(SubscribersChange, "`changed`: the users not subscribed before.")},
        params=(TOPIC,),
        body=body(SubscribersRequest, f"1 to {MAX_SUBSCRIBERS_PER_CALL:,} user ids (a repeat counts once); more is a 422 naming `user_ids`.",
                  example={"user_ids": ["alice", "bob"]}),
        problems=(422,),
    ),
    Operation(
        "DELETE", "/v1/topics/<topic>/subscribers", "removeTopicSubscribers", "topics", "Unsubscribe users from a topic",
        Auth.API_KEY, "send", {200: json_reply(SubscribersChange, "`changed`: the users that were subscribed.")},
        params=(TOPIC,),
        body=body(SubscribersRequest, f"1 to {MAX_SUBSCRIBERS_PER_CALL:,} user ids; more is a 422 naming `user_ids`.",
                  example={"user_ids": ["bob"]}),
        problems=(422,),
    ),
    Operation(
        "GET", "/v1/topics/<topic>/subscribers", "listTopicSubscribers", "topics", "A topic's subscribers",
        Auth.API_KEY, "read", {200: json_reply(SubscribersPage, "By user id; pass `next_cursor` back as `cursor` until it is null.")},
        params=(TOPIC, Param("cursor", "query", {"type": "string", "minLength": 1},
                             "The `next_cursor` of the previous page of this topic (absent: the first page); another is a 400."),
                limit(100)),
    ),
    Operation(
        "GET", "/v1/users/<user_id>/notifications", "listUserNotifications", "notifications", "A user's history",
        Auth.API_KEY, "read", {200: json_reply(HistoryPage, "Newest first, one item per notification and channel.")},
        params=(
            USER_ID, CHANNEL,
            Param("since", "query", TIME, "Created at or after: RFC 3339, or milliseconds since the epoch."),
            Param("until", "query", TIME, "Created before: RFC 3339, or milliseconds since the epoch."),
            CURSOR, limit(50),
        ),
        description="Cursor pagination: pass `next_cursor` back as `cursor` until it is null.",
    ),
    Operation(
        "POST", "/v1/users/<user_id>/tokens", "createSubscriberToken", "realtime", "Issue a subscriber token",
        Auth.API_KEY, "read", {201: json_reply(TokenResponse, "A signed token for the user, and when it expires.")},
        params=(USER_ID,),
        body=body(TokenRequest, "Optional: `ttl_s` from 60 s to a day (default an hour).", required=False, example={"ttl_s": 3600}),
        description="The token opens the user's WebSocket, SSE stream and long-poll, and reads the user's inbox. "
        "It cannot be revoked, only expire; it needs `read` since it reads the user's notifications. It also marks "
        "read and archives in that inbox only if the key that mints it has `send`.",
    ),
    # real-time fallbacks (the WebSocket is described in x-websockets)
    Operation(
        "GET", "/v1/sse", "streamEvents", "realtime", "Server-Sent Events", Auth.SUBSCRIBER, None,
        {200: Reply(
            "An event stream: `retry: 1000`, the replay after the resume point, `synced`, then live events and a "
            "`: heartbeat` comment after 30 s of silence. Each event is named after its frame's `type` (see ServerFrame), "
            "`data:` its JSON; notification events carry `id:`. A stream that ends says why in an `error` event.",
            {"text/event-stream": SSE_EVENT},
        )},
        params=(
            Param("Last-Event-ID", "header", RESUME_ID_SCHEMA, "Resume after this notification (browsers send it); empty: none."),
            Param("last_event_id", "query", RESUME_ID_SCHEMA, "Resume after this notification, as a parameter; empty: none."),
        ),
        description="Without a resume point it starts from now. The subscriber token comes as `?token=` or "
        "`Authorization: Bearer`.",
    ),
    Operation(
        "GET", "/v1/poll", "poll", "realtime", "Long-poll", Auth.SUBSCRIBER, None,
        {200: json_reply(PollResponse, "What came after `after` at once, else the next arrivals within `timeout`; `items` is "
                   "empty on timeout.")},
        params=(
            Param("after", "query", RESUME_ID_SCHEMA, "The `last_id` of the previous answer (absent or empty: from now)."),
            Param("timeout", "query", {"type": "number", "minimum": 0, "maximum": 60, "default": 30},
                  "Seconds to wait when nothing is there yet: ASCII digits, optionally with a decimal point (`0.5`, `30`)."),
            limit(100),
        ),
        description="The subscriber token comes as `?token=` or `Authorization: Bearer`.",
    ),
    # inbox
    Operation(
        "GET", "/v1/users/<user_id>/inbox", "listInbox", "inbox", "The in-app inbox", Auth.API_KEY_OR_SUBSCRIBER, "read",
        {200: json_reply(InboxPage, "Newest first (delivery order), with read and archived state.")},
        params=(USER_ID, flag("unread", "Only unread ones"), flag("archived", "Only the archived ones (left out otherwise)"), CURSOR, limit(50)),
        description="An API key with `read`, or the subscriber token of this user (another user's token: 403).",
    ),
    Operation(
        "GET", "/v1/users/<user_id>/inbox/unread_count", "countUnread", "inbox", "Unread count",
        Auth.API_KEY_OR_SUBSCRIBER, "read", {200: json_reply(UnreadCount, "Unread and not archived.")}, params=(USER_ID,),
    ),
    Operation(
        "POST", "/v1/users/<user_id>/inbox/<nid>/read", "markRead", "inbox", "Mark one read",
        Auth.API_KEY_OR_SUBSCRIBER, "send", {200: json_reply(InboxItem, "The item, read.")}, params=(USER_ID, NID),
        description="The web channel's status becomes `read`; a `read` frame goes to the user's open sessions.",
    ),
    Operation(
        "POST", "/v1/users/<user_id>/inbox/read_all", "markAllRead", "inbox", "Mark all read",
        Auth.API_KEY_OR_SUBSCRIBER, "send", {200: json_reply(ReadAllResult, "How many were marked, through which notification.")},
        params=(USER_ID,),
        body=body(ReadAllRequest, "Optional: `through` the newest one to mark (every one when absent).", required=False, example={}),
        description="Marks what `unread_count` counts: unread and not archived (archived ones stay as they are). "
        "A `read_all` frame goes to the user's open sessions. 404 when `through` is not in the inbox.",
    ),
    Operation(
        "POST", "/v1/users/<user_id>/inbox/<nid>/archive", "archive", "inbox", "Archive one",
        Auth.API_KEY_OR_SUBSCRIBER, "send", {200: json_reply(InboxItem, "The item, archived.")}, params=(USER_ID, NID),
        description="It leaves the inbox listing; an `archived` frame goes to the user's open sessions.",
    ),
    # preferences and devices
    Operation(
        "GET", "/v1/users/<user_id>/preferences", "getPreferences", "users", "A user's preferences", Auth.API_KEY, "read",
        {200: json_reply(Preferences, "The preferences (the defaults for a user who has none).")}, params=(USER_ID,),
    ),
    Operation(
        "PUT", "/v1/users/<user_id>/preferences", "putPreferences", "users", "Replace a user's preferences", Auth.API_KEY, "send",
        {200: json_reply(Preferences, "The preferences as stored.")}, params=(USER_ID,),
        body=body(Preferences, "The whole preferences: absent fields take their defaults.", example={
            "contact": {"email": "alice@example.org", "phone": "+15555550100"}, "locale": "fr-CA", "timezone": "Europe/Paris",
            "channels": {"sms": False}, "opt_out": ["marketing"], "quiet_hours": {"start": "22:00", "end": "07:00"},
        }), problems=(422,),
        description="422 for what the schema cannot state: a time zone that does not exist, an empty quiet-hours "
        "window, a category twice, a contact email that cannot go in an email header, a digest window that is wrong "
        "(`digests.<key>.<field>`: as a send's `digest.window`).",
    ),
    Operation(
        "GET", "/v1/users/<user_id>/digests", "listDigests", "users", "A user's pending digests", Auth.API_KEY_OR_SUBSCRIBER, "read",
        {200: json_reply(PendingDigests, "Earliest to fire first; `firing`: its notification is being made.")}, params=(USER_ID,),
        description="Each digest collecting this user's sends (a send's `digest`): its key, how many events it holds, "
        "its first and last event, and when it fires (`fires_at`: its window's rule, the user's override, time zone "
        "and quiet hours applied). A subscriber token sees its own user's only.",
    ),
    Operation(
        "GET", "/v1/users/<user_id>/devices", "listDevices", "users", "A user's push devices", Auth.API_KEY, "read",
        {200: json_reply(DeviceList, "Oldest registration first.")}, params=(USER_ID,),
    ),
    Operation(
        "POST", "/v1/users/<user_id>/devices", "registerDevice", "users", "Register a push device", Auth.API_KEY, "send",
        {201: json_reply(Device, "The device as registered.", links={
            "forget": Link("deleteDevice", {"user_id": "$request.path.user_id", "token": "$response.body#/token"}),
        })}, params=(USER_ID,), body=body(DeviceRequest, "The device.", example={"platform": "fcm", "token": "fcm-token-1"}),
        description="At most 20 per user (the oldest go). A token registered for another user moves to this one.",
    ),
    Operation(
        "DELETE", "/v1/users/<user_id>/devices/<token>", "deleteDevice", "users", "Forget a push device", Auth.API_KEY, "send",
        {204: Reply("Forgotten.")}, params=(USER_ID, DEVICE_TOKEN),
    ),
    Operation(
        "GET", "/v1/unsubscribe", "unsubscribePage", "users", "Unsubscribe confirmation page", Auth.UNSUBSCRIBE, None,
        {200: Reply("A page whose button POSTs the unsubscribe. A GET never unsubscribes (mail scanners follow links).",
                    {HTML_TYPE: {"type": "string"}})},
        params=(Param("token", "query", {"type": "string", "minLength": 1}, "The signed token of the email's link.", True),),
        description="No API key: the signed token is the credential; a tampered one is a 400 naming `token`.",
    ),
    Operation(
        "POST", "/v1/unsubscribe", "unsubscribe", "users", "One-click unsubscribe (RFC 8058)", Auth.UNSUBSCRIBE, None,
        {200: Reply("Opted out (idempotent): JSON, or a page when the client prefers HTML.",
                    {"application/json": Unsubscribed, HTML_TYPE: {"type": "string"}})},
        params=(Param("token", "query", {"type": "string", "minLength": 1}, "The signed token of the email's link.", True),),
        body=Body({"application/x-www-form-urlencoded": {"type": "object", "properties": {"List-Unsubscribe": {"const": "One-Click"}}}},
                  "What a mail client sends (`List-Unsubscribe=One-Click`); any body is accepted.", required=False),
        problems=(409,),
        description="No API key: the signed token is the credential, and all it can do is opt its user out of its "
        "category. 409 when the user already has as many opt-outs as allowed.",
    ),
    # delivery receipts
    Operation(
        "POST", "/v1/webhooks/sendgrid", "sendgridReceipts", "receipts", "SendGrid Event Webhook (delivery receipts)",
        Auth.PROVIDER, None,
        {200: json_reply(ReceiptCounts, "Taken: what was recorded, skipped as seen before, or named no delivery Herald sent."),
         401: UNSIGNED_RECEIPT},
        body=Body({"application/json": {"type": "array", "items": {"type": "object"}}},
                  "SendGrid's batch of events, signed (ECDSA P-256) over the timestamp header and this raw body."),
        params=(
            Param("X-Twilio-Email-Event-Webhook-Signature", "header", {"type": "string"}, "base64 DER ECDSA signature."),
            Param("X-Twilio-Email-Event-Webhook-Timestamp", "header", {"type": "string"}, "Unix seconds; at most 5 min from now."),
        ),
        problems=(404, 422),
        description="No API key: SendGrid's signature is the credential, verified with the `webhook_key` of a configured "
        "sendgrid provider (404 if none has one). 401 unsigned; 403 badly signed, stale or replayed (the same signature "
        "again). Events seen before (by `sg_event_id`) are skipped. 422 names what in a signed body is wrong. "
        "Bodies up to 1 MiB. docs/providers.md, \"Receipts\".",
    ),
    Operation(
        "POST", "/v1/webhooks/twilio", "twilioReceipts", "receipts", "Twilio status callback (delivery receipts)",
        Auth.PROVIDER, None,
        {200: json_reply(ReceiptCounts, "Taken: what was recorded, skipped as seen before, or named no delivery Herald sent."),
         401: UNSIGNED_RECEIPT},
        body=Body({"application/x-www-form-urlencoded": {"type": "object", "properties": {
            "MessageSid": {"type": "string"}, "MessageStatus": {"type": "string"}, "AccountSid": {"type": "string"},
            "ErrorCode": {"type": "string"}, "To": {"type": "string"}}}},
                  "Twilio's status callback form, signed with the account's auth token (X-Twilio-Signature)."),
        params=(
            Param("n", "query", NOTIFICATION_ID_SCHEMA, "The notification, as Herald put it in the StatusCallback URL."),
            Param("X-Twilio-Signature", "header", {"type": "string"}, "base64 HMAC-SHA1 of the URL and the sorted parameters."),
        ),
        problems=(404, 415, 422),
        description="No API key: Twilio's signature over the configured `public_url` + this path and query + the "
        "parameters is the credential (404 if no twilio provider is configured). 401 unsigned; 403 badly signed "
        "or replayed. 415 unless the body is a form; 422 names what in a signed form is wrong.",
    ),
    # templates
    Operation(
        "POST", "/v1/templates/<template_id>", "createTemplate", "templates", "Create a template (version 1)", Auth.API_KEY, "admin",
        {201: json_reply(TemplateView, "Version 1, active.", {"Location": True}, {
            name: Link(op, {"template_id": "$response.body#/id"})
            for name, op in (("get", "getTemplate"), ("versions", "listTemplateVersions"), ("update", "updateTemplate"),
                             ("render", "renderTemplate"))
        })}, params=(TEMPLATE_ID,),
        body=body(TemplateSpec, "The template.", example=TEMPLATE_EXAMPLE), problems=(409, 422),
        description="409 when it exists (PUT saves a new version); 422 names a source that does not parse "
        "(`locales.fr.email.subject`) or a default locale it lacks.",
    ),
    Operation(
        "PUT", "/v1/templates/<template_id>", "updateTemplate", "templates", "Save a new version and activate it",
        Auth.API_KEY, "admin", {200: json_reply(TemplateView, "The new version, active.", links={
            "rollBack": Link("activateTemplateVersion", {"template_id": "$response.body#/id", "version": "1"}),
        })}, params=(TEMPLATE_ID,),
        body=body(TemplateSpec, "The template.", example=TEMPLATE_EXAMPLE), problems=(422,), description="404 when it does not exist (POST creates it).",
    ),
    Operation(
        "GET", "/v1/templates/<template_id>", "getTemplate", "templates", "Read a template", Auth.API_KEY, "read",
        {200: json_reply(TemplateView, "The active version (or `?version=`), with the `variables` it reads.")},
        params=(TEMPLATE_ID, Param("version", "query", {"type": "integer", "minimum": 1, "maximum": 2**31}, "This version.")),
    ),
    Operation(
        "GET", "/v1/templates/<template_id>/versions", "listTemplateVersions", "templates", "List versions",
        Auth.API_KEY, "read", {200: json_reply(VersionList, "Newest first.")}, params=(TEMPLATE_ID,),
    ),
    Operation(
        "POST", "/v1/templates/<template_id>/versions/<version>/activate", "activateTemplateVersion", "templates",
        "Activate a version (roll back)", Auth.API_KEY, "admin", {200: json_reply(TemplateView, "That version, now active.")},
        params=(TEMPLATE_ID, VERSION),
    ),
    Operation(
        "POST", "/v1/templates/<template_id>/render", "renderTemplate", "templates", "Preview a rendering", Auth.API_KEY, "read",
        {200: json_reply(RenderResult, "The rendered parts, SMS segments and push payload size.")}, params=(TEMPLATE_ID,),
        body=body(RenderRequest, "Optional: data, locale, and user_id (picks the variant as a send would) or variant.",
                  required=False, example={"data": {"name": "Alice"}, "locale": "fr-CA", "user_id": "alice"}),
        problems=(422,), description="422 names missing data (`data.<name>`), a channel the template lacks, an SMS "
        "over the segment limit or a push payload over 4096 bytes.",
    ),
    # operators
    Operation(
        "GET", "/v1/admin/circuits", "listCircuits", "admin", "Circuit breakers and token buckets", Auth.API_KEY, "admin",
        {200: json_reply(CircuitList, "Breaker state, counters and tokens per channel.")},
        description="Each channel's Provider is asked, all at once; one that does not answer within a second (or that "
        "runs on another node: an api node's providers are on the workers) shows the state `unavailable`, with its "
        "numbers 0 and `detail` saying why.",
    ),
    Operation(
        "GET", "/v1/admin/stream", "streamConsole", "admin", "The operator console's live feed", Auth.API_KEY, "admin",
        {200: Reply(
            "An event stream: a `snapshot` event a second, `data:` the JSON of the node's counters (accepted per channel, "
            "consumer outcomes per channel), circuits, breaker transitions, consumer lag per partition, DLQ depth per "
            "channel, open sessions per transport and the latest notifications; an `end` event when the node drains.",
            {"text/event-stream": CONSOLE_EVENT},
        )},
        problems=(429,),
        description="The admin key comes in the Authorization header (never in the URL); at most 16 streams at once per node.",
    ),
    Operation(
        "GET", "/v1/admin/dlq", "listDeadLetters", "admin", "Dead letters", Auth.API_KEY, "admin",
        {200: json_reply(DeadLetterPage, "Oldest first, with each one's error and attempt history (attempts counted across replays).")},
        params=(CHANNEL, Param("notification_id", "query", NOTIFICATION_ID_SCHEMA, "Only the entries of this notification."),
                Param("before", "query", TIME, "Only entries dead-lettered before this time: RFC 3339 or milliseconds since the epoch."),
                Param("cursor", "query", {"type": "string", "pattern": "^[0-9]+$"}, "The `next_cursor` of the previous page."),
                limit(50)),
    ),
    Operation(
        "POST", "/v1/admin/dlq/replay", "replayDeadLetters", "admin", "Replay dead letters (a job)", Auth.API_KEY, "admin",
        {202: json_reply(JobView, "The job, queued: it puts the entries back on the bus as first attempts.", {"Location": True}, _JOB_LINK)},
        body=body(DlqSelection, "`ids`, a filter (`channel`, `notification_id`, `before`), or `all: true`.", required=False,
                  example={"channel": "sms", "before": "2024-05-01T12:00:00Z"}),
        problems=(422, 503), description=_JOB_DOC,
    ),
    Operation(
        "DELETE", "/v1/admin/dlq", "discardDeadLetters", "admin", "Discard dead letters (a job)", Auth.API_KEY, "admin",
        {202: json_reply(JobView, "The job, queued: it deletes the entries.", {"Location": True}, _JOB_LINK)},
        body=body(DlqSelection, "`ids`, a filter (`channel`, `notification_id`, `before`), or `all: true`.", required=False,
                  example={"ids": [1, 2]}),
        problems=(422, 503), description=_JOB_DOC,
    ),
    Operation(
        "GET", "/v1/admin/jobs/<job_id>", "getJob", "admin", "A job's state and progress", Auth.API_KEY, "admin",
        {200: json_reply(JobView, "`queued`, `running`, `done` or `failed`, with what it has done so far.")}, params=(JOB_ID,),
        description="Jobs live in the memory of the node that runs them: after a restart (or past the last 100 finished "
        "ones) the job is a 404 saying so; what it did stays done, and GET /v1/admin/dlq shows what is left.",
    ),
    # the sandbox providers' faults (actors/api/sandbox.py)
    Operation(
        "GET", "/v1/admin/sandbox/faults", "listSandboxFaults", "admin", "Sandbox fault settings", Auth.API_KEY, "admin",
        {200: json_reply(FaultList, "Per sandbox channel: its setting, since when, and the calls it saw and failed.")},
    ),
    Operation(
        "PUT", "/v1/admin/sandbox/faults/<channel>", "setSandboxFaults", "admin", "Make a sandbox provider fail or slow",
        Auth.API_KEY, "admin", {200: json_reply(FaultView, "The channel's setting, in effect from now.")},
        params=(SANDBOX_CHANNEL,),
        body=body(FaultSpec, "The whole setting (absent fields: no fault).",
                  example={"error_rate": 0.5, "kind": "retryable", "latency_ms": 50}),
        description=_FAULTS_DOC,
    ),
    Operation(
        "DELETE", "/v1/admin/sandbox/faults/<channel>", "clearSandboxFaults", "admin", "Clear a sandbox provider's faults",
        Auth.API_KEY, "admin", {200: json_reply(FaultView, "The channel's setting, cleared.")}, params=(SANDBOX_CHANNEL,),
    ),
    Operation(
        "POST", "/v1/admin/keys", "createApiKey", "admin", "Create an API key", Auth.API_KEY, "admin",
        {201: json_reply(CreatedKey, "The key: the only time it is shown in full.", {"Cache-Control": True}, {
            "revoke": Link("revokeApiKey", {"key_id": "$response.body#/key_id"}),
        })},
        body=body(KeyRequest, "Its scopes, name and rate limit.", example={"scopes": ["send", "read"], "name": "backend", "rate_per_s": 50, "burst": 100}),
    ),
    Operation(
        "GET", "/v1/admin/keys", "listApiKeys", "admin", "List API keys", Auth.API_KEY, "admin",
        {200: json_reply(KeyList, "Every key but its secret, the bootstrap key first.")},
    ),
    Operation(
        "DELETE", "/v1/admin/keys/<key_id>", "revokeApiKey", "admin", "Revoke an API key", Auth.API_KEY, "admin",
        {200: json_reply(KeyView, "The key, revoked.")}, params=(KEY_ID,), problems=(409,),
        description="409 for the bootstrap key, which comes from configuration.",
    ),
    Operation(
        "GET", "/v1/admin/signing-keys", "listSigningKeys", "admin", "List the token-signing keys", Auth.API_KEY, "admin",
        {200: json_reply(SigningKeyList, "The signing keys by id and age, the current one marked: never a secret.")},
    ),
    Operation(
        "POST", "/v1/admin/signing-keys", "rotateSigningKey", "admin", "Rotate the token-signing key", Auth.API_KEY, "admin",
        {201: json_reply(SigningKeyList, "The signing keys after the rotation, the new one current.")}, problems=(409,),
        description="New subscriber and unsubscribe tokens are signed with a new key from now on; the tokens signed "
        "before stay valid (subscriber tokens until they expire, unsubscribe links for good) until their key is retired. "
        "`herald keys rotate-secret`.",
    ),
    Operation(
        "DELETE", "/v1/admin/signing-keys/<kid>", "retireSigningKey", "admin", "Retire a token-signing key", Auth.API_KEY, "admin",
        {200: json_reply(SigningKeyList, "The signing keys left.")}, params=(KID,), problems=(409,),
        description="Every token the key signed stops working at once (subscriber tokens, unsubscribe links). "
        "409 for the current key: rotate first. `herald keys rotate-secret --retire-previous` rotates, then retires the others.",
    ),
)

TAGS = (
    ("notifications", "Send notifications; read their status and a user's history."),
    ("realtime", "Subscriber tokens and the live session's HTTP transports: SSE and long-poll (the WebSocket is in `x-websockets`)."),
    ("inbox", "The in-app inbox of the web channel."),
    ("users", "Preferences, push devices, pending digests, one-click unsubscribe."),
    ("topics", "Named audiences: subscribe users in batches; a notification with `topic` goes to every subscriber."),
    ("templates", "Mustache templates: immutable versions, locales, A/B variants."),
    ("receipts", "Providers' delivery receipts (SendGrid, Twilio), signed by the provider: no API key."),
    ("admin", "Operators: circuits, the dead-letter queue and its jobs, API keys, the sandbox providers' faults."),
    ("service", "Liveness, readiness, and this description."),
)

# The app's routes that are not Herald's API, and why they are left out.
NOT_IN_SPEC: dict[str, str] = {
    "/v1/ws": "the WebSocket: OpenAPI does not describe WebSockets; see the document's `x-websockets`",
}

WEBSOCKET: dict[str, dict[str, Any]] = {  # x-websockets: a fragment of the JSON document, as the rest of it below
    "/v1/ws": {
        "summary": "The live session over a WebSocket",
        "description": (
            "Connect with `?token=<subscriber token>` (and optionally `&last_id=<id>` to resume at once). The server "
            "holds live frames until the client's first frame, so a `sync` sent first replays before them. Client "
            "frames: `sync` (answered by `synced`), `ping` every 30 s (3 missed: close 4000), `ack` (marks the web "
            "channel of that notification delivered). Server frames: ServerFrame."
        ),
        "x-herald-auth": {"kind": Auth.SUBSCRIBER.value},
        "parameters": [
            {"name": "token", "in": "query", "required": True, "schema": {"type": "string"}, "description": "A subscriber token."},
            {"name": "last_id", "in": "query", "schema": NOTIFICATION_ID_SCHEMA, "description": "Replay what came after it."},
        ],
        "clientFrames": [{"$ref": SCHEMA_REF.format(name=t.__name__)} for t in (Sync, Ping, Ack)],
        "serverFrames": {"$ref": SCHEMA_REF.format(name="ServerFrame")},
        "closeCodes": {
            str(CloseCode.HEARTBEAT_MISSED): "heartbeat missed: reconnect",
            str(CloseCode.SLOW_CONSUMER): "slow consumer: reconnect",
            str(CloseCode.SHUTTING_DOWN): "server shutting down: reconnect later",
            str(CloseCode.TOKEN_EXPIRED): "the token expired: fetch a new token, then reconnect and resume",
            str(CloseCode.TOO_MANY_SESSIONS): "the user or token holds as many sessions as allowed: reconnect later, with backoff",
            str(CloseCode.RATE_LIMITED): "over the user's request rate (connects and syncs count): reconnect after a pause",
            str(CloseCode.UNAUTHORIZED): "unauthorized: terminal",
            str(CloseCode.PROTOCOL_ERROR): "a bad last_id (not an id, or another user's notification): terminal",
            "1009": f"a client message over {MAX_CLIENT_MESSAGE_BYTES} bytes (clients send only small control frames): terminal",
        },
    },
}

DESCRIPTION = """\
Herald delivers notifications by email, SMS, mobile push, in-app web and signed webhooks, with a delivery log, \
per-channel status and an attempt timeline.

**Auth.** Every `/v1` route needs `Authorization: Bearer <API key>` granting the operation's scope \
(`send`, `read` or `admin`; `x-herald-auth` and the security requirement name it), except: the inbox \
routes also take the subscriber token of the user in the path; SSE, long-poll and the WebSocket take \
only a subscriber token (`?token=` or the header); `/v1/unsubscribe` takes the signed token of an \
email's link. Checks run in the order 401 (no valid key), 429 (over the key's rate limit), 403 (scope). \
A subscriber token's requests count against its user's rate (429 with `Retry-After`).

**Errors** are `application/problem+json` (RFC 9457): `title`, `status`, `detail`, and `errors` naming \
each field. A path the router does not know is a 404, a method a path does not take a 405; both are \
problems too. A query parameter an operation does not list is a 400 naming it, on every route; a JSON \
body sent with a Content-Type other than `application/json` (or a `+json` type) is a 415. A server error \
(500) is a bug.

**Methods not listed.** Every GET also answers HEAD (the same status and headers, no body); OPTIONS is \
answered by the framework for every path, with `Allow` and without a credential.

**The WebSocket** `/v1/ws` is outside OpenAPI: see `x-websockets` (parameters, frames, close codes). \
SSE and long-poll carry the same frames (ServerFrame).
"""


# -- the document


def _schema_types(operations: Iterable[Operation]) -> list[Any]:
    """Every msgspec type the operations use, Problem and the WebSocket frames included, once each."""
    types: list[Any] = [Problem]
    for op in operations:
        contents = [*(r.content for r in op.replies.values())] + ([op.body.content] if op.body else [])
        types += [t for content in contents for t in content.values() if not isinstance(t, dict)]
    types += [Sync, Ping, Ack]
    types += [NotificationStatus, TopicSendStatus]  # named by getNotification's oneOf
    return list(dict.fromkeys(types))


def _content(content: dict[str, Any], refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    return {media: {"schema": value if isinstance(value, dict) else refs[value]} for media, value in content.items()}


def _headers(headers: dict[str, bool]) -> dict[str, Any]:
    return {name: {**HEADERS[name], "required": required} for name, required in headers.items()}


def _reply(reply: Reply, refs: dict[Any, dict[str, Any]], served: Collection[str]) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": reply.description}
    if reply.headers:
        answer["headers"] = _headers(reply.headers)
    if reply.content:
        answer["content"] = _content(reply.content, refs)
    links = {name: link for name, link in reply.links.items() if link.operation_id in served}
    if links:
        answer["links"] = {name: {"operationId": link.operation_id, "parameters": link.parameters} for name, link in links.items()}
    return answer


def _security(op: Operation) -> list[dict[str, list[str]]]:
    if op.auth is Auth.API_KEY:
        return [{"apiKey": [op.scope or ""]}]
    if op.auth is Auth.API_KEY_OR_SUBSCRIBER:
        return [{"apiKey": [op.scope or ""]}, {"subscriberToken": []}]
    if op.auth is Auth.SUBSCRIBER:
        return [{"subscriberToken": []}, {"subscriberTokenQuery": []}]
    return []  # none, or a token that is a parameter (unsubscribe)


def _operation(op: Operation, refs: dict[Any, dict[str, Any]], served: Collection[str]) -> dict[str, Any]:
    auth: dict[str, Any] = {"kind": op.auth.value}
    if op.scope is not None:
        auth["scope"] = op.scope
    document: dict[str, Any] = {"operationId": op.operation_id, "tags": [op.tag], "summary": op.summary}
    if op.description:
        document["description"] = op.description
    document["security"] = _security(op)
    document["x-herald-auth"] = auth
    if op.params:
        document["parameters"] = [
            {"name": p.name, "in": p.location, "required": p.required, "description": p.description, "schema": p.schema,
             **({} if p.example is None else {"example": p.example})}
            for p in op.params
        ]
    if op.body is not None:
        content = _content(op.body.content, refs)
        if op.body.example is not None:
            content["application/json"]["example"] = op.body.example
        document["requestBody"] = {"description": op.body.description, "required": op.body.required, "content": content}
    responses = {str(status): _reply(reply, refs, served) for status, reply in sorted(op.replies.items())}
    for status in op.problem_statuses():
        responses[str(status)] = {"$ref": f"#/components/responses/{PROBLEMS[status][0]}"}
    document["responses"] = dict(sorted(responses.items()))
    return document


def build_spec(routes: Collection[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The OpenAPI document: every operation of the catalogue, or those whose (method, rule) is in `routes`."""
    operations = [op for op in OPERATIONS if routes is None or (op.method, op.rule) in routes]
    types = _schema_types(operations)
    schemas, components = msgspec.json.schema_components([*types, ServerFrame, ConsoleSnapshot], ref_template=SCHEMA_REF)
    refs = dict(zip(types, schemas))
    components["ServerFrame"] = {
        "title": "ServerFrame",
        "description": "A frame from the server, the same JSON on WebSocket, SSE and long-poll; `type` tells which.",
        **schemas[-2],
    }
    served = {op.operation_id for op in operations}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs, served)
    problem_ref = refs[Problem]
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Herald",
            "version": _version(),
            "summary": "A multi-channel notification service: email, SMS, mobile push, in-app web and webhooks.",
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": name, "description": text} for name, text in TAGS],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "responses": {
                name: {"description": text, **({"headers": _headers(h)} if h else {}),
                       "content": {PROBLEM_CONTENT_TYPE: {"schema": problem_ref}}}
                for name, text, h in PROBLEMS.values()
            },
            "securitySchemes": {
                "apiKey": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "hk_<key_id>_<secret>",
                    "description": "An API key (`herald keys create`, or the node's bootstrap key). The security "
                    "requirement lists the scope the operation needs.",
                },
                "subscriberToken": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "<kid>.<claims>.<signature>",
                    "description": "A subscriber token for one user, from POST /v1/users/{user_id}/tokens: signed, expiring.",
                },
                "subscriberTokenQuery": {
                    "type": "apiKey", "in": "query", "name": "token",
                    "description": "The subscriber token as `?token=` (an EventSource cannot set headers).",
                },
            },
        },
        "x-websockets": WEBSOCKET,
        "x-herald-implicit-methods": {
            "HEAD": "every GET: the same status and headers, no body",
            "OPTIONS": "every path: the framework answers with Allow, without a credential",
        },
    }


def _version() -> str:
    try:
        return metadata.version("herald")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def app_routes(app: Any) -> set[tuple[str, str]]:
    """(method, rule) of every HTTP route of the app, the implicit HEAD and OPTIONS left out."""
    return {(m, rule.rule) for rule in app.url_map.iter_rules() if not rule.websocket for m in rule.methods - IMPLICIT_METHODS}


# -- serving

# The docs page loads nothing: no script, no font, no image; only its own inline style.
_DOCS_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def blueprint() -> Blueprint:
    """GET /openapi.json and GET /docs, built on first use from the app's routes. No credential needed."""
    bp = Blueprint("openapi", __name__)
    built: dict[str, bytes] = {}

    def document(kind: str) -> bytes:
        if not built:
            spec = build_spec(app_routes(current_app))
            built["json"] = msgspec.json.encode(spec)
            built["html"] = docs_page.render(spec).encode()
        return built[kind]

    @bp.get("/openapi.json")
    async def openapi_json() -> Response:
        return Response(document("json"), content_type="application/json")

    @bp.get("/docs")
    async def docs() -> Response:
        return Response(document("html"), content_type="text/html; charset=utf-8", headers=_DOCS_HEADERS)

    return bp
