"""The connection registry (an actor): this node's live subscriber sessions, by user, and the frames pushed lately.

A session (WebSocket, SSE or long-poll: `Session`) has a bounded outbound queue. Fan-out
never waits on a session: a frame that does not fit marks the session slow and closes it
(the client reconnects and resumes). Each session remembers the ids it was sent recently, to drop a frame it already had and
to accept acks only for what it was sent.

The registry holds every session of the node by user; a web delivery (`Push`) is
offered to each of the user's sessions and kept among the user's recent pushes, in the
State (`append_recent`: per user, bounded, with a TTL), which a resuming client's replay
reads (actors/api/replay.py) on whichever edge it reconnects to.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from typing import Any, NamedTuple

import trio

from protocol.frames import CloseCode
from reactor.ask import ActorCrashed
from reactor.mailbox import Mailbox
from reactor.ports import State

from .messages import Broadcast, Push, Recent, Register, RegistryMessage, Unregister

log = logging.getLogger("herald.registry")

RECENT_IDS = 4096
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


class Outgoing(NamedTuple):
    """A frame on its way to a client."""

    kind: str  # the frame's type: notification, read, read_all, archived, pong, synced, error
    id: str | None  # the notification id of a notification frame
    frame: bytes  # the frame's JSON


class Session:
    """One client connection of a user, whatever the transport."""

    def __init__(self, user_id: str, queue_size: int, *, hold: bool = False, token_id: str = "") -> None:
        self.user_id = user_id
        self.token_id = token_id  # which subscriber token opened it (SessionCaps counts per token)
        self.limit = queue_size
        self._send, self.outbound = trio.open_memory_channel[Outgoing](queue_size)
        self._recent: OrderedDict[str, bool] = OrderedDict()  # id -> acked on this session
        self._held: deque[Outgoing] | None = deque() if hold else None
        self.closed = trio.Event()
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def holding(self) -> bool:
        """Whether live notification frames are held back (a replay is due or running)."""
        return self._held is not None

    def offer(self, notification_id: str | None, frame: bytes, kind: str = "notification") -> bool:
        """Queue a live frame without waiting; False if it was a duplicate or the session is gone/slow."""
        if self.closed.is_set():
            return False
        if notification_id is not None:
            if notification_id in self._recent:
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
        """Queue an item, or close the session as slow if the queue is full."""
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: outbound queue full")
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    async def put(self, item: Outgoing) -> bool:
        """Queue a frame from the session's own task (replay, pong), waiting for room."""
        if self.closed.is_set():
            return False
        try:
            await self._send.send(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def claim(self, notification_id: str) -> bool:
        """Mark an id as sent on this session; False if it already was."""
        if notification_id in self._recent:
            return False
        self._remember(notification_id)
        return True

    def _remember(self, notification_id: str) -> None:
        self._recent[notification_id] = False
        if len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)

    def was_sent(self, notification_id: str) -> bool:
        """Whether this session sent (or replayed) that notification recently."""
        return notification_id in self._recent

    def first_ack(self, notification_id: str) -> bool:
        """Mark a sent id acked; False if it was not sent on this session or was acked already."""
        if self._recent.get(notification_id, True):
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
        """Close the outbound queue (what is queued still drains); the first reason wins."""
        if not self.closed.is_set():
            self.close_code, self.close_reason = code, reason
            self.closed.set()
            self._send.close()


class ConnectionRegistry:
    """Owns this node's live sessions, by user; keeps each push among the user's recent pushes in the State.

    `recent` bounds each user's list. It must cover every push of the user whose inbox
    row is not written yet: a user's web deliveries are in one partition, of which at most
    one consumer batch is in flight, so twice consumer_batch is ample (the composition
    root sizes it). `recent_ttl_s` must exceed the longest a push waits for its inbox row.

    A push is offered to the live sessions at once, in the registry's loop; the loop
    then goes on (other users' pushes, registrations) while the append to the State runs in
    a task of its own, and the push's reply (what the web client awaits) comes only once the
    append is done: so a user's pushes, one at a time, are appended in order, and a `Recent`
    waits for every append begun before it (see actors/api/replay.py for why that suffices).
    """

    def __init__(
        self, mailbox: Mailbox[RegistryMessage], state: State, recent: int = 512, recent_ttl_s: float = RECENT_TTL_S,
    ) -> None:
        if recent < 1 or recent_ttl_s <= 0:
            raise ValueError("the registry keeps at least one recent push per user, for a TTL above 0")
        self.mailbox = mailbox
        self.state = state
        self.recent_per_user = recent
        self.recent_ttl_s = recent_ttl_s
        self._sessions: dict[str, set[Session]] = {}
        self._appending: set[trio.Event] = set()  # appends of pushes to the State not done yet
        self.pushed = 0
        self.broadcasts = 0
        self.append_failures = 0

    def session_count(self) -> int:
        """Sessions open on this node, all users together."""
        return sum(len(s) for s in self._sessions.values())

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the mailbox until it closes; then close every session (shutting down)."""
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                async for message in self.mailbox:
                    if isinstance(message, Push):
                        reached = self._offer(message)
                        done = trio.Event()
                        self._appending.add(done)
                        nursery.start_soon(self._keep, message, reached, done)
                    elif isinstance(message, Recent):
                        nursery.start_soon(self._answer_recent, message, list(self._appending))
                    elif isinstance(message, Broadcast):
                        for session in list(self._sessions.get(message.user_id, ())):
                            if session.offer(None, message.frame, message.kind):
                                self.broadcasts += 1
                    elif isinstance(message, Register):
                        session = message.session
                        assert isinstance(session, Session)
                        self._sessions.setdefault(session.user_id, set()).add(session)
                    elif isinstance(message, Unregister):
                        session = message.session
                        assert isinstance(session, Session)
                        live = self._sessions.get(session.user_id)
                        if live is not None:
                            live.discard(session)
                            if not live:
                                del self._sessions[session.user_id]
        finally:
            for sessions in self._sessions.values():
                for session in sessions:
                    session.close(CloseCode.SHUTTING_DOWN, "server shutting down")

    def _offer(self, push: Push) -> int:
        """Offer the push to the user's sessions here; how many took it."""
        reached = 0
        for session in list(self._sessions.get(push.user_id, ())):
            if session.offer(push.notification_id, push.frame):
                reached += 1
        self.pushed += reached
        return reached

    async def _keep(self, push: Push, reached: int, done: trio.Event) -> None:
        """Append the push to the user's recent pushes, then answer it (a failure goes to the pusher, who retries)."""
        try:
            await self.state.append_recent(
                recent_key(push.user_id), pack_recent(push.notification_id, push.frame), self.recent_per_user, self.recent_ttl_s,
            )
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.append_failures += 1
                log.warning("registry: a push of %s not kept for resume: %r", push.user_id, exc)
            push.reply.fail(exc if isinstance(exc, Exception) else ActorCrashed("the registry stopped"))
            if not isinstance(exc, Exception):
                raise
        else:
            push.reply.send(reached)
        finally:
            self._appending.discard(done)
            done.set()

    async def _answer_recent(self, message: Recent, appends: list[trio.Event]) -> None:
        """The user's recent pushes, once every append begun before the question is done."""
        try:
            for done in appends:
                await done.wait()
            items = await self.state.recent(recent_key(message.user_id))
        except BaseException as exc:
            message.reply.fail(exc if isinstance(exc, Exception) else ActorCrashed("the registry stopped"))
            if not isinstance(exc, Exception):
                raise
        else:
            message.reply.send([unpack_recent(item) for item in items])
