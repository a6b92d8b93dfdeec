"""Topics: named audiences of users, and the schemas of their routes and of a topic send's progress. Pure data.

A topic send (POST /v1/notifications with `topic`) is fanned out to every subscriber by the
fan-out actor (actors/fanout.py). Each subscriber's notification id is derived from the
topic send's id and the user id (`member_notification_id`), so expanding the same
subscriber twice (after a crash between the bus append and the checkpoint) yields the same
id, which the send ledger and the Recorder then deduplicate.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Literal

import msgspec

from .ids import USER_ID_RE, make_notification_id, notification_id_ms

TOPIC_PATTERN = r"^[a-z0-9][a-z0-9_.:-]{0,99}(?!\n)$"
TOPIC_RE = re.compile(TOPIC_PATTERN)
TOPIC_RULE = "1-100 characters of a-z 0-9 _ . : -, starting with a letter or digit"
TopicField = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=TOPIC_PATTERN)]
MAX_SUBSCRIBERS_PER_CALL = 1000
TOPIC_SEND_PREFIX = "topic send "  # the `accepted` step's detail of a subscriber's copy: "topic send <id>"  # user ids per PUT or DELETE /v1/topics/{topic}/subscribers

SubscriberId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=USER_ID_RE.pattern)]


def is_topic(value: str) -> bool:
    return bool(TOPIC_RE.match(value))


def member_notification_id(topic_send_id: str, user_id: str) -> str:
    """The notification id of one subscriber's copy of a topic send: the send's time, and 80 bits of a hash of both ids."""
    digest = hashlib.blake2b(f"{topic_send_id}\x00{user_id}".encode(), digest_size=10).digest()
    return make_notification_id(notification_id_ms(topic_send_id), int.from_bytes(digest, "big"))


class SubscribersRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """PUT or DELETE /v1/topics/{topic}/subscribers: the user ids to add or remove (a repeat counts once)."""

    user_ids: Annotated[list[SubscriberId], msgspec.Meta(min_length=1)]  # at most MAX_SUBSCRIBERS_PER_CALL: checked by the route


class SubscribersChange(msgspec.Struct, frozen=True):
    topic: str
    changed: int  # subscriptions added (PUT) or removed (DELETE): ids already in that state are not counted
    subscribers: int  # the topic's subscribers after the change


class SubscribersPage(msgspec.Struct, frozen=True):
    """Subscribers by user id; pass `next_cursor` back as `cursor` until it is null."""

    topic: str
    user_ids: list[str]
    next_cursor: str | None


class ChannelCounts(msgspec.Struct, frozen=True, omit_defaults=False):
    """One channel of a topic send's subscribers, as expanded: on the bus, held for quiet hours, or stopped by preferences."""

    queued: int = 0
    held: int = 0
    failed: int = 0


FanoutState = Literal["pending", "expanding", "done"]


class TopicSendStatus(msgspec.Struct, frozen=True):
    """GET /v1/notifications/{id} of a topic send: its fan-out's progress.

    `subscribers` is the topic's count when the send was accepted until the fan-out is done, then
    the number expanded (the subscribers as paged, by user id, during the expansion). Each
    subscriber's copy is a notification of its own (its id: GET /v1/users/{user_id}/notifications),
    whose status names this send in `topic_send`.
    """

    notification_id: str
    topic: str
    created_at: str
    priority: str
    state: FanoutState
    subscribers: int
    expanded: int
    channels: dict[str, ChannelCounts]
    final: bool  # the fan-out is done (each copy then has its own status)
    finished_at: str | None = None
