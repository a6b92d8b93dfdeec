"""The connection registry (an actor): this node's live subscriber sessions, by user.

A session (WebSocket, SSE or long-poll: `Session`) has a bounded outbound queue, drained by
the session's own task. Fan-out never waits on a session: a frame that does not fit marks
the session slow and closes it (the client reconnects and resumes). Each session remembers the ids it was sent recently, to drop a frame it already had and
to accept acks only for what it was sent.

Frames reach the registry through the Broker (reactor/ports.py), whoever produced them:
the registry subscribes the node to a user's channel when the user's first session here
registers, and unsubscribes it when the last one leaves; every frame the Broker brings
(`Fanout`: a web delivery, an inbox-state change) is offered to each of the user's
sessions. A web delivery is published by the web client (actors/clients/web.py), on
whichever node runs the web Provider, after it is kept among the user's recent pushes in
the State (`RecentPushes`), which a resuming client's replay reads (actors/api/replay.py)
on whichever edge it reconnects to.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import msgspec
import trio

from protocol.frames import CloseCode
from protocol.messages import UnknownRecordVersion, decode_fanout, encode_fanout
from reactor.mailbox import Mailbox
from reactor.ports import Broker, BrokerLost, BrokerSubscription, State

from .messages import Broadcast, Recent, Register, RegistryMessage, Unregister

log = logging.getLogger("herald.registry")

RECENT_IDS = 4096
LOST = "this node may have missed frames (its Broker subscription was cut off): reconnect and resume"


class Outgoing(NamedTuple):
    """A frame on its way to a client."""

    kind: str  # the frame's type: notification, read, read_all, archived, pong, synced, error
    id: str | None  # the notification id of a notification frame
    frame: bytes  # the frame's JSON


class Session:
    """One client connection of a user, whatever the transport.

    Its outbound frames wait in a bounded queue that the session's own task drains (`next_nowait`),
    sleeping in `interruptible()` or `wait()` meanwhile: a frame offered, or the session closing,
    wakes it. Nothing is allocated for the queue, the recent ids or the held frames until they hold
    something: a node keeps tens of thousands of idle sessions (docs/performance.md).
    """

    __slots__ = (
        "user_id", "token_id", "limit", "_queue", "_recent", "_held", "_closed", "_waker", "_nudge", "close_code", "close_reason",
    )  # fmt: skip

    def __init__(self, user_id: str, queue_size: int, *, hold: bool = False, token_id: str = "") -> None:
        if queue_size < 1:
            raise ValueError("a session's queue holds at least one frame")
        self.user_id = user_id
        self.token_id = token_id  # which subscriber token opened it (SessionCaps counts per token)
        self.limit = queue_size
        self._queue: deque[Outgoing] | None = None
        self._recent: OrderedDict[str, bool] | None = None  # id -> acked on this session
        self._held: deque[Outgoing] | None = deque() if hold else None
        self._closed = False
        self._waker: trio.CancelScope | None = None  # the scope its task sleeps in, cancelled to wake it
        self._nudge: Callable[[], bool] | None = None  # wakes the task without a cancellation, while it waits (see interruptible)
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def closed(self) -> bool:
        """Whether the session is closed (what is queued still drains)."""
        return self._closed

    @property
    def holding(self) -> bool:
        """Whether live notification frames are held back (a replay is due or running)."""
        return self._held is not None

    def offer(self, notification_id: str | None, frame: bytes, kind: str = "notification") -> bool:
        """Queue a live frame without waiting; False if it was a duplicate or the session is gone/slow."""
        if self._closed:
            return False
        if notification_id is not None:
            if self._recent is not None and notification_id in self._recent:
                return False
            if self._held is not None:
                if len(self._held) >= self.limit:
                    self.close(CloseCode.SLOW_CONSUMER, "slow consumer: too many frames held during a replay")
                    return False
                self._held.append(Outgoing(kind, notification_id, frame))
                return True
            self._remember(notification_id)
        return self._put_nowait(Outgoing(kind, notification_id, frame))

    def _put_nowait(self, item: Outgoing) -> bool:
        """Queue an item and wake the session's task, or close the session as slow if the queue is full."""
        if self._queue is None:
            self._queue = deque()
        elif len(self._queue) >= self.limit:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: outbound queue full")
            return False
        self._queue.append(item)
        self._wake()
        return True

    def next_nowait(self) -> Outgoing | None:
        """The next queued frame, or None; queued frames are still there after the session closes."""
        if not self._queue:
            self._queue = None  # an idle session holds no deque
            return None
        return self._queue.popleft()

    def queued(self) -> int:
        """Frames waiting in the queue."""
        return len(self._queue) if self._queue is not None else 0

    @contextmanager
    def interruptible(self, deadline: float = math.inf, nudge: Callable[[], bool] | None = None) -> Iterator[trio.CancelScope]:
        """A cancel scope that a queued frame, the session closing or the deadline cancels (at once if one already has).

        The session's task waits in it for something else as well: a client's message (the
        WebSocket), or nothing (`wait`). Waiting in a trio receive is cancel-safe: a message
        is either received or left for the next receive. `nudge`, if given, wakes the task
        instead of a cancellation (the WebSocket's: a wake-up message in the channel it
        receives from, far cheaper than a Cancelled raised through the receive), once per
        wait; it answers False if it could not, and the scope is cancelled then.
        """
        with trio.CancelScope(deadline=deadline) as scope:
            if self._queue or self._closed:
                scope.cancel()
            self._waker, self._nudge = scope, nudge
            try:
                yield scope
            finally:
                self._waker = self._nudge = None

    async def wait(self, deadline: float = math.inf) -> None:
        """Until a frame is queued, the session closes or the deadline passes (at once if one already has)."""
        with self.interruptible(deadline):
            await trio.sleep_forever()

    def _wake(self) -> None:
        if self._waker is not None:
            nudge = self._nudge
            if nudge is None or not nudge():
                self._waker.cancel()
            else:
                self._nudge = _nudged  # one nudge per wait: the task wakes to everything queued (or closed) by then

    def claim(self, notification_id: str) -> bool:
        """Mark an id as sent on this session; False if it already was."""
        if self._recent is not None and notification_id in self._recent:
            return False
        self._remember(notification_id)
        return True

    def _remember(self, notification_id: str) -> None:
        if self._recent is None:
            self._recent = OrderedDict()
        self._recent[notification_id] = False
        if len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)

    def was_sent(self, notification_id: str) -> bool:
        """Whether this session sent (or replayed) that notification recently."""
        return self._recent is not None and notification_id in self._recent

    def first_ack(self, notification_id: str) -> bool:
        """Mark a sent id acked; False if it was not sent on this session or was acked already."""
        if self._recent is None or self._recent.get(notification_id, True):
            return False
        self._recent[notification_id] = True
        return True

    def hold(self) -> None:
        """Hold live notification frames from now on, until take_held() has let them all through."""
        if self._held is None:
            self._held = deque()

    def take_held(self) -> Outgoing | None:
        """The next held frame not sent yet (now claimed), or None: none is left and the session is live.

        Frames offered while the caller sends a held one are held too, so the caller keeps
        calling until None; the switch to live happens with nothing left in between.
        """
        while self._held:
            item = self._held.popleft()
            if item.id is None or self.claim(item.id):
                return item
        self._held = None
        return None

    def close(self, code: int, reason: str) -> None:
        """Close the session (what is queued still drains) and wake its task; the first reason wins."""
        if not self._closed:
            self.close_code, self.close_reason = code, reason
            self._closed = True
            self._wake()


def _nudged() -> bool:
    """A session's nudge once used in this wait: the task is on its way."""
    return True


RECENT_TTL_S = 3600.0  # a user's recent pushes live an hour after the last one


def recent_key(user_id: str) -> str:
    """The State key of a user's recent pushes."""
    return f"recent:{user_id}"


def pack_recent(notification_id: str, frame: bytes) -> bytes:
    """One recent push as a State item: the id (26 characters, no space), a space, the frame's JSON."""
    return notification_id.encode() + b" " + frame


def unpack_recent(item: bytes) -> tuple[str, bytes]:
    notification_id, _, frame = item.partition(b" ")
    return notification_id.decode(), frame


class RecentPushes:
    """The frames pushed to each user lately, oldest first, kept in the State for resuming sessions (actors/api/replay.py).

    Written by the producer of a web delivery *before* it publishes the frame, read by a
    session's replay once its registration has subscribed the node to the user: so a frame
    is either among the recent pushes the replay reads or reaches the session live (no gap).
    In the State (`append_recent`: per user, bounded, with a TTL), so a client resumes with
    no gap on whichever edge it reconnects to. `per_user` must cover every push of the user
    whose inbox row is not written yet: a user's web deliveries are in one partition, of
    which at most one consumer window is out, so twice consumer_window is ample (the
    composition root sizes it); `ttl_s` must exceed the longest a push waits for its row.
    """

    def __init__(self, state: State, per_user: int = 512, ttl_s: float = RECENT_TTL_S) -> None:
        if per_user < 1 or ttl_s <= 0:
            raise ValueError("recent pushes: at least one per user, for a TTL above 0")
        self.state = state
        self.per_user = per_user
        self.ttl_s = ttl_s

    async def remember(self, user_id: str, notification_id: str, frame: bytes) -> None:
        """Keep the push for replays (the user's oldest goes past `per_user`)."""
        await self.state.append_recent(recent_key(user_id), pack_recent(notification_id, frame), self.per_user, self.ttl_s)

    async def of(self, user_id: str) -> list[tuple[str, bytes]]:
        """The (notification_id, frame) pushed to the user lately, oldest first."""
        return [unpack_recent(item) for item in await self.state.recent(recent_key(user_id))]


class ConnectionRegistry:
    """Owns this node's live sessions, by user, and the node's subscription to the Broker for their users.

    Two tasks of the actor: the mailbox (sessions registering and leaving, subscribing and
    unsubscribing the node as the first arrives and the last leaves; recent pushes asked
    for; inbox-state broadcasts, published to the Broker so that every node holding the
    user's sessions gets them) and the Broker's messages (offered to the sessions, without
    waiting). A subscription the Broker cuts off (BrokerLost) crashes the actor: its
    sessions are closed (their clients reconnect and resume, with no gap) and the
    supervisor restarts it with a new subscription.
    """

    def __init__(self, mailbox: Mailbox[RegistryMessage], broker: Broker, recent: RecentPushes) -> None:
        self.mailbox = mailbox
        self.broker = broker
        self.recent = recent
        self._sessions: dict[str, set[Session]] = {}
        self.pushed = 0  # notification frames queued on a session
        self.broadcasts = 0  # inbox-state frames queued on a session
        self.undecodable = 0  # Broker messages that were not a Fanout (logged, dropped)
        self.lost = 0  # subscriptions the Broker cut off

    def session_count(self) -> int:
        """Sessions open on this node, all users together."""
        return sum(len(s) for s in self._sessions.values())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the mailbox until it closes; then close every session (shutting down)."""
        try:
            async with self.broker.subscriber() as subscription, trio.open_nursery() as nursery:
                nursery.start_soon(self._fan_out, subscription)
                task_status.started()
                async for message in self.mailbox:
                    await self._handle(message, subscription)
                nursery.cancel_scope.cancel()
        finally:
            for sessions in self._sessions.values():
                for session in sessions:
                    session.close(CloseCode.SHUTTING_DOWN, "server shutting down")
            self._sessions.clear()  # a restarted registry starts with none: their clients reconnect

    async def _handle(self, message: RegistryMessage, subscription: BrokerSubscription) -> None:
        if isinstance(message, Recent):
            message.reply.send(await self.recent.of(message.user_id))
        elif isinstance(message, Broadcast):
            await self.broker.publish(message.user_id, encode_fanout(message.kind, None, message.frame))
        elif isinstance(message, Register):
            session = message.session
            live = self._sessions.setdefault(session.user_id, set())
            if not live:
                await subscription.subscribe(session.user_id)  # before the session's replay reads the recent pushes
            live.add(session)
        elif isinstance(message, Unregister):
            session = message.session
            remaining = self._sessions.get(session.user_id)
            if remaining is not None and session in remaining:
                remaining.discard(session)
                if not remaining:
                    del self._sessions[session.user_id]
                    await subscription.unsubscribe(session.user_id)

    async def _fan_out(self, subscription: BrokerSubscription) -> None:
        """Offer every frame the Broker brings to the user's sessions here (never waiting on one)."""
        try:
            await self._offer_all(subscription)
        except BrokerLost:
            self.lost += 1
            log.warning("registry: the Broker cut this node's subscription off; closing its %d sessions", self.session_count())
            for sessions in self._sessions.values():
                for session in sessions:
                    session.close(CloseCode.SHUTTING_DOWN, LOST)
            self._sessions.clear()
            raise

    async def _offer_all(self, subscription: BrokerSubscription) -> None:
        async for user_id, raw in subscription.messages():
            try:
                fanout = decode_fanout(raw)
            except (msgspec.DecodeError, msgspec.ValidationError, UnknownRecordVersion) as exc:
                self.undecodable += 1
                log.warning("a Broker message for %s is not a fan-out frame, dropped: %s", user_id, exc)
                continue
            frame = bytes(fanout.frame)
            for session in list(self._sessions.get(user_id, ())):
                if fanout.kind == "notification":
                    if session.offer(fanout.id, frame):
                        self.pushed += 1
                elif session.offer(None, frame, fanout.kind):
                    self.broadcasts += 1
