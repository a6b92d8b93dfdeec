"""Live subscriber sessions (WebSocket, SSE, long-poll), the registry of them, and replay.

A session has a bounded outbound queue. Fan-out never waits on a session: a frame that
does not fit marks the session slow and closes it (the client reconnects and resumes).
Each session remembers the ids it was sent recently, to drop a frame it already had and
to accept acks only for what it was sent.

No gap, no duplicate, on every transport, with one recipe (`Replay`):

1. Register the session, *holding* its live frames (they queue up, in push order).
2. Replay what the client missed after the last id it saw: the inbox in delivery order,
   then the frames the registry pushed to the user lately whose inbox row may not be
   written yet (the web channel pushes first and records the batch after). Each id is
   claimed on the session, so nothing is sent twice.
3. Let the held frames through (skipping the claimed ones), then go live.

A frame pushed before step 1 is in the inbox or in the registry's recent pushes; one
pushed after it is held. Everything reaches the client once, in delivery order, so the
id of the last frame a client saw is always a correct place to resume from.

Acks are the user's own: a session accepts an ack only for an id it sent (live, replayed,
or the `last_id` it resumed from when that id is in the user's inbox or recent pushes).
A `last_id` that is another user's notification is refused by the transports
(`belongs_to_another_user`) before anything is replayed; one nobody knows is not claimed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from typing import Any, NamedTuple

import trio

from protocol.frames import CloseCode
from reactor.ask import ask
from reactor.mailbox import Mailbox
from reactor.ports import LogStore

from .clients.web import notification_frame
from .messages import Broadcast, Push, Recent, Register, RegistryMessage, Unregister

log = logging.getLogger("herald.sessions")

RECENT_IDS = 4096
REPLAY_PAGE = 200


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


class Replay:
    """What a session missed after `last_id`, in delivery order, a page at a time.

    Used by every transport once its session is registered (and holding). With no
    `last_id` it replays everything retained. A `last_id` in the user's inbox or recent
    pushes is claimed (never sent back; the client had it, so it may ack it). An id
    neither knows (not delivered yet, or no longer retained) replays everything retained
    and is not claimed: a duplicate the client can drop rather than a gap. Another user's
    id never gets here: the transports refuse it first (`belongs_to_another_user`).
    """

    def __init__(self, logstore: LogStore, registry: Mailbox[RegistryMessage], session: Session, last_id: str | None) -> None:
        self.logstore = logstore
        self.registry = registry
        self.session = session
        self.last_id = last_id
        self._phase = "start"
        self._after = last_id
        self._tail: list[tuple[str, bytes]] = []

    async def next_page(self) -> list[Outgoing]:
        """The next frames to send, already claimed on the session; [] once the replay is done."""
        user_id = self.session.user_id
        while True:
            if self._phase == "start":
                await self._start()
            elif self._phase == "inbox":
                entries = await self.logstore.inbox_after(user_id, self._after, REPLAY_PAGE)
                if len(entries) < REPLAY_PAGE:
                    self._phase = "tail"
                else:
                    self._after = entries[-1].notification_id
                page = [
                    Outgoing("notification", e.notification_id, notification_frame(e))
                    for e in entries
                    if self.session.claim(e.notification_id)
                ]
                if page:
                    return page
            elif self._phase == "tail":
                self._phase = "done"
                page = [Outgoing("notification", nid, frame) for nid, frame in self._tail if self.session.claim(nid)]
                if page:
                    return page
            else:
                return []

    async def _start(self) -> None:
        """Take the registry's recent pushes and decide where the replay starts."""
        user_id = self.session.user_id
        recent = await ask(self.registry.send, lambda reply: Recent(user_id, reply))
        if self.last_id is None:
            self._tail = recent
            self._phase = "inbox"
            return
        position = None
        for index in range(len(recent) - 1, -1, -1):
            if recent[index][0] == self.last_id:
                position = index
                break
        in_inbox = await self.logstore.inbox_get(user_id, self.last_id) is not None
        if position is None:
            self._tail = recent  # all pushed after last_id (or last_id is unknown): the inbox decides
            self._phase = "inbox"
        else:
            self._tail = recent[position + 1:]
            # last_id was pushed lately: if its inbox row is not written yet, nothing after it is either,
            # and the recent pushes after it are exactly what was missed.
            self._phase = "inbox" if in_inbox else "tail"
        if in_inbox or position is not None:
            self.session.claim(self.last_id)  # delivered to this user: never sent back, and its ack is theirs


async def belongs_to_another_user(logstore: LogStore, user_id: str, notification_id: str) -> bool:
    """Whether the log store knows the notification as another user's (a `last_id` to refuse)."""
    if await logstore.inbox_get(user_id, notification_id) is not None:
        return False
    return any(row.user_id != user_id for row in await logstore.statuses(notification_id))


class SessionCaps:
    """How many sessions each user and each subscriber token holds on this node, within caps.

    Pure bookkeeping, on the front end's Trio thread: `admit` and `release` never wait, so
    a check and its count cannot interleave with another request's.
    """

    def __init__(self, per_user: int, per_token: int) -> None:
        if per_user < 1 or per_token < 1:
            raise ValueError("session caps must be at least 1")
        self.per_user = per_user
        self.per_token = per_token
        self._users: dict[str, int] = {}
        self._tokens: dict[str, int] = {}
        self.refused = 0

    def refusal(self, user_id: str, token_id: str) -> str | None:
        """Why one more session of this user and token would be refused; None if it fits."""
        if self._users.get(user_id, 0) >= self.per_user:
            return f"user {user_id} already holds {self.per_user} sessions on this node (WebSocket, SSE and long-poll together)"
        if self._tokens.get(token_id, 0) >= self.per_token:
            return f"this subscriber token already holds {self.per_token} sessions on this node"
        return None

    def check(self, user_id: str, token_id: str) -> str | None:
        """refusal(), counting a refusal (a route that answers 429 before it makes a session)."""
        reason = self.refusal(user_id, token_id)
        self.refused += reason is not None
        return reason

    def admit(self, session: Session) -> str | None:
        """Count the session in, or say why not (nothing is counted then)."""
        reason = self.refusal(session.user_id, session.token_id)
        if reason is not None:
            self.refused += 1
            return reason
        self._users[session.user_id] = self._users.get(session.user_id, 0) + 1
        self._tokens[session.token_id] = self._tokens.get(session.token_id, 0) + 1
        return None

    def release(self, session: Session) -> None:
        """Count an admitted session out."""
        for counts, key in ((self._users, session.user_id), (self._tokens, session.token_id)):
            left = counts[key] - 1
            if left:
                counts[key] = left
            else:
                del counts[key]

    def held(self, user_id: str) -> int:
        """Sessions the user holds on this node."""
        return self._users.get(user_id, 0)


class ConnectionRegistry:
    """Owns this node's live sessions, by user, and the frames pushed lately. Cluster routing plugs in here.

    `recent` bounds the frames kept for replay (all users together, oldest dropped
    first). It must cover every push whose inbox row is not written yet: at most one
    consumer batch per web partition is in flight, so a few times
    partitions x consumer_batch is ample (the composition root sizes it).
    """

    def __init__(self, mailbox: Mailbox[RegistryMessage], recent: int = 4096) -> None:
        self.mailbox = mailbox
        self.recent_capacity = recent
        self._sessions: dict[str, set[Session]] = {}
        self._recent: deque[tuple[str, str, bytes]] = deque()
        self._recent_by_user: dict[str, deque[tuple[str, bytes]]] = {}
        self.pushed = 0
        self.broadcasts = 0

    def session_count(self) -> int:
        """Sessions open on this node, all users together."""
        return sum(len(s) for s in self._sessions.values())

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the mailbox until it closes; then close every session (shutting down)."""
        task_status.started()
        try:
            async for message in self.mailbox:
                if isinstance(message, Push):
                    message.reply.send(self._push(message))
                elif isinstance(message, Recent):
                    message.reply.send(list(self._recent_by_user.get(message.user_id, ())))
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

    def _push(self, push: Push) -> int:
        self._remember(push.user_id, push.notification_id, push.frame)
        reached = 0
        for session in list(self._sessions.get(push.user_id, ())):
            if session.offer(push.notification_id, push.frame):
                reached += 1
        self.pushed += reached
        return reached

    def _remember(self, user_id: str, notification_id: str, frame: bytes) -> None:
        """Keep the push for replays; drop the oldest one (of any user) past the capacity."""
        self._recent.append((user_id, notification_id, frame))
        self._recent_by_user.setdefault(user_id, deque()).append((notification_id, frame))
        while len(self._recent) > self.recent_capacity:
            old_user, _, _ = self._recent.popleft()
            mine = self._recent_by_user[old_user]
            mine.popleft()  # a user's pushes leave in the order they came: this is that one
            if not mine:
                del self._recent_by_user[old_user]
