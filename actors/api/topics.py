"""Topics: PUT, DELETE and GET /v1/topics/{topic}/subscribers (a topic send: POST /v1/notifications with `topic`)."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

import msgspec
from quart import Blueprint, Response, request

from protocol.problems import FieldError, Problem
from protocol.topics import (
    MAX_SUBSCRIBERS_PER_CALL,
    TOPIC_RULE,
    SubscribersChange,
    SubscribersPage,
    SubscribersRequest,
    is_topic,
)
from reactor.ports import Store

from .errors import ProblemError, authorize, bad_param, decode_body, json_response, limit_param, read_body, served

if TYPE_CHECKING:  # gateway.py imports this module
    from .gateway import Gateway

_decoder = msgspec.json.Decoder(SubscribersRequest)
_cursor = msgspec.json.Decoder(tuple[str, str])
_encode = msgspec.json.Encoder().encode


def encode_cursor(topic: str, last: str) -> str:
    """An opaque cursor: the topic and the last user id of the page, so that a cursor of another topic is refused."""
    return base64.urlsafe_b64encode(_encode((topic, last))).decode().rstrip("=")


def decode_cursor(topic: str, cursor: str | None) -> str:
    """The user id after which the page starts ("" for the first page); 400 naming `cursor` for one not handed out for this topic."""
    if cursor is None:
        return ""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        named, last = _cursor.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise bad_param("cursor", "not a cursor of this listing: pass back a `next_cursor` unchanged") from None
    if named != topic or not last:
        raise bad_param("cursor", "a cursor of another topic's listing")
    return last


def checked_topic(topic: str) -> str:
    if not is_topic(topic):
        raise bad_param("topic", TOPIC_RULE)
    return topic


def _user_ids(body: bytes) -> list[str]:
    ids = decode_body(_decoder, body).user_ids
    if len(ids) > MAX_SUBSCRIBERS_PER_CALL:
        message = f"at most {MAX_SUBSCRIBERS_PER_CALL} user ids per call, got {len(ids)}: send them in batches"
        raise ProblemError(Problem("Unprocessable subscribers", 422, f"user_ids: {message}", errors=[FieldError("user_ids", message)]))
    return ids


def blueprint(gw: Gateway) -> Blueprint:
    bp = Blueprint("topics", __name__)

    def store() -> Store:
        return served(gw.store, "store")

    async def change_subscribers(topic: str, subscribe: bool) -> Response:
        await authorize(gw, "send")  # an API key that may send: a subscriber token never writes a topic
        topic = checked_topic(topic)
        ids = _user_ids(await read_body(gw))
        changed = await (store().add_subscribers if subscribe else store().remove_subscribers)(topic, ids)
        return json_response(SubscribersChange(topic, changed, await store().subscriber_count(topic)))

    @bp.put("/v1/topics/<topic>/subscribers")
    async def put_subscribers(topic: str) -> Response:
        return await change_subscribers(topic, subscribe=True)

    @bp.delete("/v1/topics/<topic>/subscribers")
    async def delete_subscribers(topic: str) -> Response:
        return await change_subscribers(topic, subscribe=False)

    @bp.get("/v1/topics/<topic>/subscribers")
    async def get_subscribers(topic: str) -> Response:
        await authorize(gw, "read")
        topic = checked_topic(topic)
        after = decode_cursor(topic, request.args.get("cursor"))
        limit = limit_param(request.args.get("limit"), 100)
        page = await store().subscribers(topic, after, limit + 1)  # one more: is there a next page?
        more = len(page) > limit
        page = page[:limit]
        return json_response(SubscribersPage(topic, page, encode_cursor(topic, page[-1]) if more else None))

    return bp
