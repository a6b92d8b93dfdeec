"""Messages between Herald's actors (in-process only, never on the wire)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocol.api import CircuitView, NotificationRequest, Receipt
from protocol.messages import Delivery, InboxEntry, Outcome, StatusEvent
from protocol.problems import Problem
from protocol.write_plan import InboxChange, InboxChanged
from reactor.ask import ActorCrashed, Reply

if TYPE_CHECKING:  # registry.py imports this module; the annotations below are never evaluated at run time
    from .registry import Session


@dataclass(frozen=True, slots=True)
class KeyedIds:
    """The notification ids of a request with an Idempotency-Key: derived from its entry, the same on every retry
    (an earlier try's append may have been written: reactor.ports.AppendUncertain). Its deliveries are marked
    `keyed`: the provider asks the send ledger before each, so the two copies make one provider call."""

    seed: str
    first_ms: int


@dataclass(frozen=True, slots=True)
class Submit:
    """HTTP -> Ingress: accept this notification; the reply is a Receipt or a Problem."""

    request: NotificationRequest
    reply: Reply[Receipt | Problem]
    ids: KeyedIds | None = None


class AttemptInterrupted(ActorCrashed):
    """The Provider stopped (it crashed on another attempt, or was cancelled) before answering this one: not its fault."""


@dataclass(frozen=True, slots=True)
class SubmitBatch:
    """HTTP -> Ingress: accept these notifications, in one durable append; the reply has each one's Receipt or Problem, in order."""

    requests: tuple[NotificationRequest, ...]
    reply: Reply[list[Receipt | Problem]]
    ids: KeyedIds | None = None


IngressMessage = Submit | SubmitBatch


@dataclass(frozen=True, slots=True)
class Attempt:
    """PartitionConsumer -> Provider: try to deliver this record.

    `maybe_sent` is set when the record may have been attempted before (a redelivery after
    a crash, a retry, a replay): the provider then consults the send ledger first.
    """

    delivery: Delivery
    reply: Reply[Outcome]
    maybe_sent: bool = True


@dataclass(frozen=True, slots=True)
class RecordEvents:
    """-> Recorder: write these status events and inbox entries; the reply (if any) comes once they are durable."""

    events: tuple[StatusEvent, ...]
    inbox: tuple[InboxEntry, ...] = ()
    reply: Reply[None] | None = None
    # its writer made these notifications just now (the Ingress: new ids): their keys are planned without a read
    # of their stored state, on the condition that they have none (WritePlan.fresh; a wrong guess is planned again)
    fresh: bool = False


@dataclass(frozen=True, slots=True)
class ChangeInbox:
    """-> Recorder: mark read, mark all read or archive entries of a user's inbox; the reply, once the change
    (and the `read` statuses it records) is durable, says what changed."""

    change: InboxChange
    reply: Reply[InboxChanged] | None = None


RecorderMessage = RecordEvents | ChangeInbox


@dataclass(frozen=True, slots=True)
class Register:
    """-> ConnectionRegistry: this session of the user is open here (the node subscribes to the user if it is the first)."""

    session: Session


@dataclass(frozen=True, slots=True)
class Unregister:
    """-> ConnectionRegistry: this session has ended (the node unsubscribes from the user if it was the last)."""

    session: Session


@dataclass(frozen=True, slots=True)
class Recent:
    """-> ConnectionRegistry: the (notification_id, frame) pushed to this user lately, oldest first (from the State).

    A session asks once it is registered (the node subscribed to the user), to replay what
    was pushed before it registered and may not be in the inbox yet (the inbox row is
    written after the push). The producer keeps a push among the recent pushes before it
    publishes it, so the answer holds every push the session did not get live.
    """

    user_id: str
    reply: Reply[list[tuple[str, bytes]]]


@dataclass(frozen=True, slots=True)
class Broadcast:
    """-> ConnectionRegistry: an inbox-state frame (read, read_all, archived) for every session of the user,
    on every node (the registry publishes it to the Broker)."""

    user_id: str
    kind: str
    frame: bytes


RegistryMessage = Register | Unregister | Recent | Broadcast


@dataclass(frozen=True, slots=True)
class CircuitQuery:
    """-> Provider (its queries mailbox): the breaker, bucket and counters as they are now.

    Answered by the Provider's own task, while its attempts wait for a token or an open
    breaker: a query never queues behind the attempts.
    """

    reply: Reply[CircuitView]
