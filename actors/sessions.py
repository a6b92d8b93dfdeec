"""A live subscriber session (WebSocket now; SSE and long-poll later) and the registry of them.

A session has a bounded outbound queue. Fan-out never waits on a session: a frame that
does not fit marks the session slow and closes it (the client reconnects and syncs).
Each session remembers the ids it was sent recently, to drop a frame it already had
(live push racing a sync replay) and to accept acks only for what it was sent.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import trio

from protocol.frames import CloseCode
from reactor.mailbox import Mailbox

from .messages import Push, Register, Unregister

log = logging.getLogger("herald.sessions")

RECENT_IDS = 4096


class Session:
    def __init__(self, user_id: str, queue_size: int) -> None:
        self.user_id = user_id
        self._send, self.outbound = trio.open_memory_channel[bytes](queue_size)
        self._recent: OrderedDict[str, None] = OrderedDict()
        self.closed = trio.Event()
        self.close_code: int | None = None
        self.close_reason = ""

    def offer(self, notification_id: str | None, frame: bytes) -> bool:
        """Queue a frame without waiting; False if it was a duplicate or the session is gone/slow."""
        if self.closed.is_set():
            return False
        if notification_id is not None:
            if notification_id in self._recent:
                return False
            self._remember(notification_id)
        try:
            self._send.send_nowait(frame)
        except trio.WouldBlock:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: outbound queue full")
            return False
        return True

    async def replay(self, notification_id: str, frame: bytes) -> bool:
        """Queue a frame from a sync, waiting for room (the session's own task replays)."""
        if self.closed.is_set() or notification_id in self._recent:
            return False
        self._remember(notification_id)
        try:
            await self._send.send(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def _remember(self, notification_id: str) -> None:
        self._recent[notification_id] = None
        if len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)

    def was_sent(self, notification_id: str) -> bool:
        return notification_id in self._recent

    def close(self, code: int, reason: str) -> None:
        if not self.closed.is_set():
            self.close_code, self.close_reason = code, reason
            self.closed.set()
            self._send.close()


class ConnectionRegistry:
    """Owns this node's live sessions, by user. Cluster routing (Redis pub/sub) plugs in here."""

    def __init__(self, mailbox: Mailbox[Register | Unregister | Push]) -> None:
        self.mailbox = mailbox
        self._sessions: dict[str, set[Session]] = {}
        self.pushed = 0

    def session_count(self) -> int:
        return sum(len(s) for s in self._sessions.values())

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            async for message in self.mailbox:
                if isinstance(message, Push):
                    message.reply.send(self._push(message))
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
        reached = 0
        for session in list(self._sessions.get(push.user_id, ())):
            if session.offer(push.notification_id, push.frame):
                reached += 1
        self.pushed += reached
        return reached
