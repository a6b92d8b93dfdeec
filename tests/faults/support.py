"""What the poison, header-injection and dead-letter tests share: restart counts, bus records, .eml checks."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import trio

from actors.app import Herald
from protocol.channels import Channel
from protocol.content import Content, EmailContent
from protocol.lifecycle import FINAL
from protocol.messages import Delivery, encode_delivery
from reactor.clock import wall_ms

# The headers Herald sets on a one-part email (a category adds List-Unsubscribe and List-Unsubscribe-Post).
EMAIL_HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "X-Herald-Notification-Id", "Content-Type",
                 "Content-Transfer-Encoding", "MIME-Version"]


def restarts(herald: Herald) -> dict[str, int]:
    """Restarts of every supervised child: the stages' and every partition consumer's."""
    counts: dict[str, int] = {}
    supervisors = [*herald.system.supervisors(), *(s for g in herald.consumer_groups.values() for s in g.consumers())]
    for supervisor in supervisors:
        for child in supervisor.statistics():
            counts[f"{supervisor.name}/{child.name}"] = child.restarts
    return counts


async def put_on_the_bus(herald: Herald, nid: str, user: str, subject: str, address: str = "someone@example.org") -> None:
    """An email record written straight to the bus, as one accepted before the API checked headers would be."""
    delivery = Delivery(nid, user, Channel.EMAIL, wall_ms(), Content(email=EmailContent(subject=subject, text="body")), address=address)
    await herald.bus.produce([(Channel.EMAIL.topic(), user.encode(), encode_delivery(delivery))])


async def wait_status(herald: Herald, nid: str, channel: str, seconds: float = 20) -> str:
    """The channel's status once final (bounded)."""
    status = None
    with trio.move_on_after(seconds):
        while True:
            rows = {r.channel: r.status for r in await herald.logstore.statuses(nid)}
            status = rows.get(channel)
            if status in {s.value for s in FINAL}:
                return str(status)
            await trio.sleep(0.05)
    raise AssertionError(f"{nid}/{channel} not final after {seconds}s: {status}")


def eml_headers(path: Path) -> tuple[list[str], Any]:
    """The header names of a written .eml as a mail reader parses them, and the message."""
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return message.keys(), message
