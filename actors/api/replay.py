"""Replay: what a resuming subscriber session missed, in delivery order, with no gap and no duplicate.

No gap, no duplicate, on every transport, with one recipe (`Replay`):

1. Register the session, *holding* its live frames (they queue up, in push order).
2. Replay what the client missed after the last id it saw: the inbox in delivery order,
   then the user's recent pushes whose inbox row may not be written yet (the web channel
   pushes first and records the batch after). Each id is claimed on the session, so
   nothing is sent twice.
3. Let the held frames through (skipping the claimed ones), then go live.

A frame pushed before step 1 is in the inbox or in the user's recent pushes; one pushed
after it is held. Everything reaches the client once, in delivery order, so the id of the
last frame a client saw is always a correct place to resume from.

The recent pushes live in the State (per user, bounded, with a TTL), so the edge a client
resumes on need not be the one that pushed. The web client appends each frame there
*before* it publishes it (actors/clients/web.py `push_frame`), and the registry answers a
`Recent` (step 2) only after the `Register` of step 1, which subscribed the node to the
user: so a push either is in the list when step 2 reads it, or was published after the
subscription and reaches the session live (held). A user's pushes are appended one at a
time (the Provider sends one delivery of a user at a time), so the list is in delivery
order. An append that fails fails the push before it is published; the web channel
retries it.

Acks are the user's own: a session accepts an ack only for an id it sent (live, replayed,
or the `last_id` it resumed from when that id is in the user's inbox or recent pushes).
A `last_id` that is another user's notification is refused by the transports
(`belongs_to_another_user`) before anything is replayed; one nobody knows is not claimed.
"""

from __future__ import annotations

from reactor.ask import ask
from reactor.mailbox import Mailbox
from reactor.ports import LogStore

from ..clients.web import notification_frame
from ..messages import Recent, RegistryMessage
from ..registry import Outgoing, Session

REPLAY_PAGE = 200


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
        """Take the user's recent pushes (through the registry: see the module's docstring) and decide where the replay starts."""
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
