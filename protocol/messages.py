"""Messages between actors and the records the bus carries.

Bus records are versioned wire formats (field `v`); a consumer refuses a version it
does not know instead of guessing. Actor messages are frozen structs; the ones that
expect an answer carry a `reply` handle (see reactor.ask).
"""

from __future__ import annotations

from typing import Any

import msgspec

from .channels import Channel, Priority
from .content import Content
from .lifecycle import Status

BUS_RECORD_VERSION = 1


class AttemptRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """A failed attempt, carried along with the record so the DLQ knows its history."""

    attempt: int
    at_ms: int
    error: str
    crashed: bool = False  # the channel client (or its provider) crashed on it: twice makes it poison


class Delivery(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """One channel of one notification: the record on the channel's bus topic."""

    notification_id: str
    user_id: str
    channel: Channel
    created_ms: int
    content: Content  # only this channel's part is set
    address: str | None = None  # email address, E.164 number or device token
    priority: Priority = Priority.NORMAL
    data: dict[str, Any] = {}
    attempt: int = 1
    history: list[AttemptRecord] = []
    replays: int = 0  # times an operator replayed it from the dead-letter queue
    # push: every device token to reach when there are several (`address` is then the first)
    addresses: list[str] = []
    category: str | None = None  # the notification's category, if it has one
    unsubscribe_url: str | None = None  # email: the signed one-click link (List-Unsubscribe, RFC 8058)
    deferred: bool = False  # held by quiet hours: the Scheduler produced it (at least once)
    # the address(es) came from the user's contact points or devices, not from the send's `to`:
    # a delivery that waited (held, retried, replayed) reads them again when it goes out
    from_profile: bool = False
    # made for a request with an Idempotency-Key: a retry after an append of unknown outcome makes it again, with
    # the same notification id, so it may be on the bus twice: the provider asks the send ledger before sending it
    keyed: bool = False
    v: int = BUS_RECORD_VERSION


class UnknownRecordVersion(ValueError):
    pass


_delivery_decoder = msgspec.json.Decoder(Delivery)
_encoder = msgspec.json.Encoder()


def encode_delivery(delivery: Delivery) -> bytes:
    return _encoder.encode(delivery)


def decode_delivery(raw: bytes) -> Delivery:
    delivery = _delivery_decoder.decode(raw)
    if delivery.v != BUS_RECORD_VERSION:
        raise UnknownRecordVersion(f"bus record version {delivery.v} is not {BUS_RECORD_VERSION}")
    return delivery


class Sent(msgspec.Struct, frozen=True, tag="sent"):
    """The provider took the message; `status` is what is known now.

    DELIVERED for a sandbox outbox; SENT for a web notification, stored in the inbox and
    pushed to the live sessions there are (a client seeing it makes it DELIVERED).
    """

    status: Status = Status.DELIVERED
    detail: str = ""
    unregistered_tokens: list[str] = []  # push: device tokens the provider said are gone (to remove)


class RetryLater(msgspec.Struct, frozen=True, tag="retry_later"):
    """Not sent this time; try again (after `after_s` when the provider said how long).

    `throttled`: the provider refused for its rate limit (an HTTP 429, FCM's QUOTA_EXCEEDED),
    not for ill health: the gate holds the provider's bucket for `after_s` (when given) and
    does not count it as a breaker failure; the Provider sends it again after that wait
    (docs/providers.md "Verdicts").
    """

    error: str
    after_s: float | None = None
    throttled: bool = False
    unregistered_tokens: list[str] = []  # push: device tokens the provider said are gone (to remove)
    # this delivery's recipient's failure or throttle (a webhook endpoint's 5xx, timeout or 429), not the provider's: no
    # failure for the provider's breaker, its bucket not held, no failover, and the attempt not sent again in place; the
    # consumer schedules the retry (after `after_s` when given)
    recipient: bool = False


class PermanentFailure(msgspec.Struct, frozen=True, tag="permanent_failure"):
    """The provider's verdict: this delivery cannot succeed (the channel is recorded failed).

    `dead_letter`: the delivery's own content made the client refuse it (a poison
    message, such as a header the email library cannot write); it goes to the channel's
    dead-letter queue with the error, where an operator sees it, instead of merely failing.
    """

    error: str
    unregistered_tokens: list[str] = []  # push: device tokens the provider said are gone (to remove)
    dead_letter: bool = False


class Crashed(msgspec.Struct, frozen=True, tag="crashed"):
    """The channel client raised on this delivery (a bug, or content it chokes on).

    Retried once with backoff; a delivery that crashes a client twice is dead-lettered
    as poison (the attempt history says how often it did).
    """

    error: str


Outcome = Sent | RetryLater | PermanentFailure | Crashed


class StatusEvent(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """A status change of one channel of one notification, for the Recorder."""

    notification_id: str
    user_id: str
    channel: Channel
    status: Status
    at_ms: int
    detail: str = ""
    created_ms: int = 0
    priority: Priority = Priority.NORMAL
    replay: bool = False  # an operator's DLQ replay: may leave dead_lettered for queued
    template: str = ""  # "welcome@3#B" (template@version#variant) on the events of a templated notification
    client: bool = False  # an ack or a read by a subscriber: it only moves that user's existing row, never creates one


class InboxEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    """A web notification kept for its user, so that reconnecting sessions can sync.

    `seq` orders a user's inbox in delivery order: it is the bus offset of the record
    in its partition, and all of a user's web records share one partition.
    """

    notification_id: str
    user_id: str
    created_ms: int
    title: str
    body: str = ""
    url: str | None = None
    data: dict[str, Any] = {}
    seq: int = 0


class Fanout(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the Broker carries to the nodes holding a user's sessions: one frame for every session of the user.

    `kind` is the frame's type (notification, read, read_all, archived); `id` the notification
    id of a notification frame (a session drops one it already had); `frame` the frame's JSON.
    """

    kind: str
    frame: msgspec.Raw
    id: str | None = None
    v: int = BUS_RECORD_VERSION


_fanout_decoder = msgspec.json.Decoder(Fanout)


def encode_fanout(kind: str, notification_id: str | None, frame: bytes) -> bytes:
    return _encoder.encode(Fanout(kind, msgspec.Raw(frame), notification_id))


def decode_fanout(raw: bytes) -> Fanout:
    fanout = _fanout_decoder.decode(raw)
    if fanout.v != BUS_RECORD_VERSION:
        raise UnknownRecordVersion(f"fan-out version {fanout.v} is not {BUS_RECORD_VERSION}")
    return fanout
