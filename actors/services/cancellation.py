"""Cancellation: DELETE /v1/notifications/{id}, per channel, atomically against the Scheduler.

What can be cancelled is what the Store still holds of a channel: a scheduled send
(`send:<id>:<channel>`, actors/ingress.py), a hold by quiet hours (`quiet:<id>:<channel>`,
Ingress's, and `quiet:<id>:<channel>:<until>`, the consumer's at fire time) or a retry
waiting for its attempt (`retry:<id>:<channel>:<attempt>`, actors/consumer.py). A send
collected into a digest (actors/digester.py) is cancelled while its window is open
(`Store.cancel_digest_event`, every scheduled channel at once); once the window is claimed,
the digest carries it and it has gone. A channel whose record is on the bus, with the
provider, or settled has already gone.

`Store.cancel_scheduled` decides each channel in one transaction against `claim_due`: the
entries are removed before any Scheduler claimed them (they are never produced: cancelled),
or one was claimed first (it is produced, or will be by another node once the lease ends:
gone, and nothing is removed). Never both, never neither. The send ledger keeps the channel
as `cancelled`, so a DELETE repeated (after a crash between the Store and the Recorder, say)
answers the same and writes the `cancelled` status again (the Recorder's writes are idempotent).
"""

from __future__ import annotations

from protocol.api import Cancellation, ChannelGone
from protocol.channels import Channel, Priority
from protocol.lifecycle import Status, is_final
from protocol.messages import StatusEvent
from reactor.ask import ask
from reactor.clock import wall_ms
from reactor.mailbox import Mailbox
from reactor.ports import LogStore, Store

from ..domain.send_at import SEND_AT_PREFIX
from ..messages import RecordEvents, RecorderMessage

CANCELLED_DETAIL = "cancelled (DELETE /v1/notifications/{id})"


def held_entry_prefixes(notification_id: str, channel: str) -> list[str]:
    """The id prefixes of every Scheduler entry that may hold this (notification, channel) (the module's docstring)."""
    return [f"{SEND_AT_PREFIX}{notification_id}:{channel}", f"quiet:{notification_id}:{channel}", f"retry:{notification_id}:{channel}:"]


async def cancel_notification(
    notification_id: str, store: Store, logstore: LogStore, recorder: Mailbox[RecorderMessage],
) -> Cancellation | None:
    """Cancel every channel of the notification the Store still holds; None if no notification has this id."""
    rows = await logstore.statuses(notification_id)
    if not rows:
        return None
    now = wall_ms()
    cancelled: list[str] = []
    gone: list[ChannelGone] = []
    events: list[StatusEvent] = []
    # a send collected into a digest: its event, taken out of its open window for every scheduled channel at once
    scheduled = [row.channel for row in rows if row.status == Status.SCHEDULED.value]
    for row in rows:
        status = Status(row.status)
        channel = Channel(row.channel)
        if status is not Status.CANCELLED and is_final(channel, status):
            gone.append(ChannelGone(row.channel, status))
        elif await store.cancel_scheduled(notification_id, row.channel, held_entry_prefixes(notification_id, row.channel), now) or (
            status is Status.SCHEDULED and await store.cancel_digest_event(notification_id, scheduled, now)
        ):
            cancelled.append(row.channel)
            events.append(StatusEvent(
                notification_id, row.user_id, channel, Status.CANCELLED, now, detail=CANCELLED_DETAIL,
                created_ms=row.created_ms, priority=Priority(row.priority),
            ))
        else:
            gone.append(ChannelGone(row.channel, status))
    if events:
        batch = tuple(events)
        await ask(recorder.send, lambda reply: RecordEvents(batch, (), reply))  # durable before the answer
    return Cancellation(notification_id, cancelled, gone)
