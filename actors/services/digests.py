"""Digests on the way in: a planned send's digest events made durable (Store.add_digest_event), and the pending view.

The Ingress plans a send that names a digest (actors/ingress.py, SendPlanner.plan) into a
DigestEvent with its window's (due, deadline) pair; `collect` stores a batch's events before
the 202 (concurrent adds share the Store's group commit) and wakes the Digester of this process
(actors/digester.py: another node's polls the Store).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from protocol.digests import PendingDigest, PendingDigests
from reactor.clock import iso
from reactor.ports import DigestEvent, Store

from ..domain.digests import MAX_EVENTS

Collected = tuple[DigestEvent, int, int]  # the event, its due_ms and deadline_ms (actors/domain/digests.event_times)


class Digests:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.listeners: list[Callable[[], None]] = []  # the Digester of this process: look for due windows now

    async def collect(self, events: Sequence[Collected]) -> None:
        """Store the events, durably (all before the caller's 202), then tell the listeners."""
        if not events:
            return
        async with trio.open_nursery() as nursery:
            for event, due_ms, deadline_ms in events:
                nursery.start_soon(self.store.add_digest_event, event, due_ms, deadline_ms, MAX_EVENTS)
        for listener in self.listeners:
            listener()

    async def pending(self, user_id: str) -> PendingDigests:
        """GET /v1/users/{id}/digests: the user's windows, with their counts and when each fires."""
        windows = await self.store.digest_windows(user_id)
        return PendingDigests([
            PendingDigest(w.digest_key, w.count, iso(w.first_ms), iso(w.last_ms), iso(w.due_ms), firing=w.fire_id != "")
            for w in windows
        ])
