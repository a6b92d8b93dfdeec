"""Ingress: validates a submission, writes one Delivery per channel to the bus, answers with a receipt.

A pool of workers reads one mailbox: each awaits the bus's durable append (group
commit batches the concurrent ones), so the receipt (202) is sent only once every
channel's record is on disk; then it waits for the Recorder to write `accepted` and
`queued` (group-committed too), so a status read right after the 202 finds them.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import trio

from protocol.api import NotificationRequest, Receipt
from protocol.channels import Channel
from protocol.content import Content
from protocol.ids import make_notification_id
from protocol.lifecycle import Status
from protocol.messages import Delivery, StatusEvent, encode_delivery
from protocol.problems import FieldError, Problem
from reactor.ask import ask
from reactor.clock import wall_ms
from reactor.mailbox import Mailbox
from reactor.ports import Bus

from .messages import Record, Submit

log = logging.getLogger("herald.ingress")

_ADDRESS_FIELD = {Channel.EMAIL: "email", Channel.SMS: "phone", Channel.PUSH: "device_token"}


def check_request(request: NotificationRequest) -> list[FieldError]:
    """Rules the schema cannot express: content and an address for every requested channel."""
    errors: list[FieldError] = []
    requested = set(request.channels)
    if len(requested) != len(request.channels):
        errors.append(FieldError("channels", "a channel is listed twice"))
    for channel in Channel:
        part = request.content.for_channel(channel.value)
        if channel in requested and part is None:
            errors.append(FieldError(f"content.{channel.value}", f"required: {channel.value} is in channels"))
        elif channel not in requested and part is not None:
            errors.append(FieldError(f"content.{channel.value}", f"given, but {channel.value} is not in channels"))
    email = request.content.email
    if email is not None and not (email.text or email.html):
        errors.append(FieldError("content.email", "needs text or html"))
    for channel, attr in _ADDRESS_FIELD.items():
        if channel in requested and (request.to is None or getattr(request.to, attr) is None):
            errors.append(FieldError(f"to.{attr}", f"required for the {channel.value} channel"))
    return errors


class IdGenerator:
    """Monotonic notification ids: within one millisecond, the random part counts up."""

    def __init__(self) -> None:
        self._last_ms = -1
        self._last_entropy = 0
        self._random = random.Random()

    def next(self, now_ms: int) -> str:
        if now_ms <= self._last_ms:
            now_ms = self._last_ms
            self._last_entropy += 1
        else:
            self._last_ms = now_ms
            self._last_entropy = self._random.getrandbits(79)  # room to count up
        return make_notification_id(now_ms, self._last_entropy)


class Ingress:
    def __init__(self, bus: Bus, mailbox: Mailbox[Submit], recorder: Mailbox[Record], workers: int) -> None:
        self.bus = bus
        self.mailbox = mailbox
        self.recorder = recorder
        self.workers = workers
        self.ids = IdGenerator()
        self.accepted = 0

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.workers):
                nursery.start_soon(self._worker)
            task_status.started()

    async def _worker(self) -> None:
        async for message in self.mailbox:
            try:
                message.reply.send(await self.accept(message.request))
            except BaseException as exc:
                message.reply.fail(exc if isinstance(exc, Exception) else RuntimeError("ingress stopped"))
                raise

    async def accept(self, request: NotificationRequest) -> Receipt | Problem:
        errors = check_request(request)
        if errors:
            detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
            return Problem(title="Unprocessable notification", status=422, detail=detail, errors=errors)
        now = wall_ms()
        nid = self.ids.next(now)
        key = request.user_id.encode()
        items = []
        events = []
        for channel in request.channels:
            part = request.content.for_channel(channel.value)
            delivery = Delivery(
                notification_id=nid,
                user_id=request.user_id,
                channel=channel,
                created_ms=now,
                content=Content(**{channel.value: part}),
                address=_address(request, channel),
                priority=request.priority,
                data=request.data,
            )
            items.append((channel.topic(), key, encode_delivery(delivery)))
            for status in (Status.ACCEPTED, Status.QUEUED):
                events.append(StatusEvent(nid, request.user_id, channel, status, now, created_ms=now, priority=request.priority))
        await self.bus.produce(items)
        self.accepted += 1
        # Read-your-writes: once the caller has its 202, GET /v1/notifications/{id} finds it.
        await ask(self.recorder.send, lambda reply: Record(tuple(events), (), reply))
        return Receipt(notification_id=nid)


def _address(request: NotificationRequest, channel: Channel) -> str | None:
    attr = _ADDRESS_FIELD.get(channel)
    if attr is None or request.to is None:
        return None
    value: str | None = getattr(request.to, attr)
    return value
