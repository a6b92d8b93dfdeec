"""REST API request and response schemas; the handlers validate with these."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .channels import Channel, Lane, Priority
from .content import Content, Recipient
from .digests import DigestSpec
from .ids import USER_ID_RE
from .lifecycle import Status
from .locales import normalize_locale
from .preferences import CATEGORY_PATTERN, HHMM_PATTERN
from .problems import Problem
from .template_schemas import LocaleField, TemplateIdField
from .topics import TopicField

# The length is in the pattern too; stated, it is in the OpenAPI schema where boundary-value generators read it.
UserIdField = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=USER_ID_RE.pattern)]


class LocalSendAt(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`send_at` as a wall-clock time in the user's own time zone (their preferences' `timezone`)."""

    local: Annotated[str, msgspec.Meta(pattern=HHMM_PATTERN, description=(
        "HH:MM, 24-hour: the next time the user's clock shows it (a time skipped by a DST change: as many minutes "
        "after the change as it lay after the skipped hour's start; a time shown twice: the first time, unless only "
        "the second is still ahead)."
    ))]
    in_: Annotated[Literal["user"], msgspec.Meta(description="Whose time zone: the user's (the only one so far).")] = msgspec.field(name="in", default="user")


SendAtField = Annotated[str, msgspec.Meta(max_length=64, description=(
    "RFC 3339 with an offset (2026-12-01T09:00:00+01:00 or ...Z): held until then (status `scheduled`), at most "
    "366 days ahead; a time up to 60 s past is sent at once, further past is refused."
))] | LocalSendAt


class NotificationRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    channels: Annotated[list[Channel], msgspec.Meta(min_length=1, max_length=4)]
    content: Content | None = None  # exactly one of content and template_id
    to: Recipient | None = None
    data: Annotated[dict[str, Any], msgspec.Meta(description=(
        "With `template_id`: the template's input; a browser sees none of it, only the keys the template's web part "
        "declares in its `data`, rendered. With inline `content` (which nothing renders): the web item's `data`, "
        "as given; no other channel carries it."
    ))] = {}
    priority: Priority = Priority.NORMAL
    # e.g. "marketing": users can opt out of a category (preferences, one-click unsubscribe)
    category: Annotated[str, msgspec.Meta(pattern=CATEGORY_PATTERN)] | None = None
    template_id: TemplateIdField | None = None  # render the content from this template, with `data`
    locale: LocaleField | None = None  # the template locale to start from: fr-CA -> fr -> the template's default
    # exactly one of user_id and topic (checked by the Ingress: 422 naming the field); a topic send has no `to`
    user_id: UserIdField | None = None
    topic: Annotated[TopicField, msgspec.Meta(description=(
        "Instead of `user_id`: send to every subscriber of this topic (PUT /v1/topics/{topic}/subscribers), "
        "each with their own preferences, locale and quiet hours. No `to`: each address comes from the user's preferences."
    ))] | None = None
    send_at: SendAtField | None = None  # scheduled send (actors/domain/send_at.py); not with topic
    digest: Annotated[DigestSpec, msgspec.Meta(description=(
        "Collect this send into the user's digest of this key: sent with the other events of its window as one "
        "notification of its template (which gets `events`, `count`, `first` and `last`). Needs template_id; "
        "not with topic or send_at. A critical send flushes the digest at once."
    ))] | None = None

    def __post_init__(self) -> None:
        if self.locale is not None:  # fr_CA is fr-CA (protocol.locales)
            msgspec.structs.force_setattr(self, "locale", normalize_locale(self.locale))


class Receipt(msgspec.Struct, frozen=True, gc=False):
    notification_id: str
    status: Status = Status.ACCEPTED


class ChannelGone(msgspec.Struct, frozen=True):
    """A channel DELETE could not cancel: it had left the Store already (on the bus, being sent, or settled)."""

    channel: str
    status: Status


class Cancellation(msgspec.Struct, frozen=True):
    """DELETE /v1/notifications/{id}: the channels cancelled now (or by an earlier DELETE), and the ones already gone."""

    notification_id: str
    cancelled: list[str]
    already_gone: list[ChannelGone]


MAX_BATCH_ITEMS = 1000  # notifications per POST /v1/notifications/batch


class BatchRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """POST /v1/notifications/batch: each item is a body of POST /v1/notifications, checked on its own."""

    items: Annotated[list[NotificationRequest], msgspec.Meta(min_length=1, max_length=MAX_BATCH_ITEMS)]


class BatchItem(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """One item's result: its notification_id if accepted, else the problem (its fields named `items[i].<field>`)."""

    notification_id: str | None = None
    problem: Problem | None = None


class BatchReceipt(msgspec.Struct, frozen=True):
    """202: at least one item was accepted; `items` in the order of the request."""

    accepted: int
    rejected: int
    items: list[BatchItem]


class BatchProblem(Problem, frozen=True, omit_defaults=False):
    """422 when no item was accepted: `errors` names every item's fields, `items` has each one's problem, in order.

    (A 422 about the whole batch, e.g. an Idempotency-Key reused with another body, is a plain Problem.)"""

    accepted: int = 0
    rejected: int = 0
    items: list[BatchItem] = []


class Attempt(msgspec.Struct, frozen=True, omit_defaults=True):
    status: Status
    at: str
    detail: str = ""


class ChannelStatus(msgspec.Struct, frozen=True):
    """One channel's status; `final` when it settles the channel's delivery (protocol.lifecycle.final_statuses:
    delivered, opened, read, failed, dead_lettered; for web also sent, stored in the inbox)."""

    status: Status
    updated_at: str
    attempts: list[Attempt]  # the timeline, in lifecycle order
    final: bool = False
    priority: Priority = Priority.NORMAL  # the delivery's priority, and the lane it travels in (docs/reliability.md)
    lane: Lane = Lane.BULK


class NotificationStatus(msgspec.Struct, frozen=True):
    notification_id: str
    user_id: str
    created_at: str
    priority: Priority
    channels: dict[str, ChannelStatus]
    final: bool  # every channel is final
    template: str | None = None  # "welcome@3#B": template, version and A/B variant, when sent from a template
    topic_send: str | None = None  # a subscriber's copy of a topic send: that send's id


class HistoryItem(msgspec.Struct, frozen=True):
    """One channel of one notification, as GET /v1/notifications/{id} shows it (without the timeline)."""

    notification_id: str
    channel: Channel
    status: Status
    created_at: str
    updated_at: str
    detail: str = ""  # the last step's detail
    final: bool = False
    template: str | None = None  # "welcome@3#B": template, version and A/B variant, when sent from a template


class HistoryPage(msgspec.Struct, frozen=True):
    items: list[HistoryItem]
    next_cursor: str | None


class TokenRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ttl_s: Annotated[int, msgspec.Meta(ge=60, le=86400)] = 3600  # at most a day: a token cannot be revoked, only expire


class TokenResponse(msgspec.Struct, frozen=True):
    token: str
    expires_at: str


class AttemptError(msgspec.Struct, frozen=True):
    attempt: int  # counted across replays: 1, 2, ... in the order they were made
    at: str
    error: str
    replay: int = 0  # made after this many replays from the dead-letter queue (0: before any)


class DeadLetterView(msgspec.Struct, frozen=True):
    id: int
    channel: Channel
    notification_id: str
    user_id: str
    error: str
    attempts: int  # every attempt made, across replays
    created_at: str
    dead_lettered_at: str
    history: list[AttemptError]
    replays: int = 0  # times it was replayed from the dead-letter queue before it came back


class DeadLetterPage(msgspec.Struct, frozen=True):
    items: list[DeadLetterView]
    next_cursor: str | None
    total: int


class DlqSelection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which dead letters to replay or discard: exactly one of `ids`, a filter, or `all: true`.

    A filter is any of `channel`, `notification_id` and `before` (every one given must
    match); `before` takes the entries dead-lettered before that time (RFC 3339, or
    milliseconds since the epoch).
    """

    ids: Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]], msgspec.Meta(min_length=1, max_length=10_000)] | None = None
    channel: Channel | None = None
    notification_id: str | None = None
    before: str | None = None
    all: bool = False


class JobView(msgspec.Struct, frozen=True):
    """A job the node runs off the request path (a dead-letter replay or purge), as GET /v1/admin/jobs/{id} shows it.

    Every field is always present. The counts grow while the job runs, a page of entries
    at a time: `total` is the entries it has taken up so far (final once done), each of
    them `replayed` (back on its channel's topic), `discarded`, `skipped` (a replay: a
    notification this job replayed already that came back to the queue meanwhile, left for
    the next replay; a purge: an entry gone before it was deleted) or counted in `errors`
    (left in the queue: its record could not be read; `error` says why, or why the job failed).
    """

    id: str
    kind: Literal["dlq_replay", "dlq_purge"]
    state: Literal["queued", "running", "done", "failed"]
    total: int
    replayed: int
    discarded: int
    skipped: int
    errors: int
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


class CircuitView(msgspec.Struct, frozen=True):
    """Every field is always present (zero, empty or null when there is nothing to count)."""

    channel: Channel
    state: str
    consecutive_failures: int
    opened: int
    rejected: int
    calls: int
    suppressed_duplicates: int
    tokens: float
    bucket_capacity: float
    refill_per_s: float
    deferred: int = 0  # deliveries that waited for an open breaker
    throttled: int = 0  # deliveries that waited for a token
    transitions: dict[str, int] = {}  # e.g. {"closed->open": 1, "half_open->closed": 1}
    retry_at: str | None = None
    detail: str = ""  # why the state is `unavailable` (its numbers are then 0: nothing was read)
    in_flight: int = 0  # attempts at the provider now, on this worker
    queued: int = 0  # attempts this worker holds that wait for the same user's earlier one or a free slot
    max_in_flight: int = 0  # this worker's limit of attempts at once (provider_max_in_flight)


# -- the operator console's feed (GET /v1/admin/stream)


class ConsoleAccepted(msgspec.Struct, frozen=True):
    id: str
    user_id: str
    channels: list[str]
    at: str


class ConsoleTransition(msgspec.Struct, frozen=True):
    channel: str
    was: str
    now: str
    at: str


class ConsoleLag(msgspec.Struct, frozen=True):
    group: str
    topic: str
    partition: int
    lag: int


class ConsoleSnapshot(msgspec.Struct, frozen=True):
    """GET /v1/admin/stream: each `snapshot` event's data (the operator console's live view, actors/api/console_feed.py)."""

    at: str
    role: str
    accepted: dict[str, int]  # notifications accepted per channel since the node started (a counter)
    deliveries: dict[str, dict[str, int]]  # channel -> consumer outcome -> count (counters: herald_deliveries_total)
    circuits: list[CircuitView]
    transitions: list[ConsoleTransition]  # the newest first
    lag: list[ConsoleLag]
    dlq: dict[str, int]
    sessions: dict[str, int]  # open now, per transport
    recent: list[ConsoleAccepted]  # the newest first
