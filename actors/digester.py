"""The Digester: fires due digest windows, each as one notification carrying its events.

A send that names a digest is collected, durably before its 202, into its (user, key) window
in the Store (actors/services/digests.py; the window's times: actors/domain/digests.py). A
worker's Digester claims due windows by lease (Store.claim_digests: a window closes when
claimed, later events open the next one) and, for each:

1. builds the digest's send from its events: the last event's send (template, channels,
   category, `to`), its `data` the events' (`events`, `count`, `first`, `last`), critical if
   any event was;
2. plans it as the Ingress plans a send (SendPlanner.plan: the user's preferences, locale and
   quiet hours, the template) under a notification id derived from the window
   (digest_notification_id: the same on every claim), marked `deferred` (the consumer asks the
   send ledger first), and records each event's `digested` step, naming that id;
3. appends it to the bus, durably (SendPlanner.commit), then removes the window (finish_digest).

A crash (kill -9) anywhere before 3's removal leaves the window closed and leased: once the
lease ends (at once for the embedded node, whose owner name survives restarts) it is claimed
again with the same events and fired under the same id; the ledger sends it once. No event is
lost: each is in the Store from its 202 until its digest is on the bus. A window is due at once
when it holds MAX_EVENTS events; the few that may join it before its claim go out as a second
notification (at most MAX_EVENTS events each).
"""

from __future__ import annotations

import logging
import secrets

import msgspec
import trio

from protocol.api import NotificationRequest
from protocol.channels import Channel, Priority
from protocol.lifecycle import Status
from protocol.messages import StatusEvent
from protocol.problems import Problem
from reactor.clock import iso, wall_ms
from reactor.ports import DigestEvent, DigestFire, Store
from reactor.until_available import until_available

from .domain.digests import MAX_EVENTS, digest_data, digest_notification_id
from .ingress import PlannedBatch, SendPlanner

log = logging.getLogger("herald.digester")

_request = msgspec.json.Decoder(NotificationRequest)


def digest_request(events: list[tuple[DigestEvent, NotificationRequest]]) -> NotificationRequest:
    """The send that carries these events (the module's docstring, step 1)."""
    last = events[-1][1]
    critical = any(r.priority is Priority.CRITICAL for _, r in events)
    data = digest_data([(e.at_ms, r.data) for e, r in events], iso)
    return msgspec.structs.replace(last, data=data, digest=None, send_at=None, priority=Priority.CRITICAL if critical else last.priority)


class Digester:
    def __init__(
        self, store: Store, planner: SendPlanner, *, batch: int = 50, lease_s: float = 30.0, poll_s: float | None = 1.0,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.planner = planner
        self.batch = batch
        self.lease_ms = int(lease_s * 1000)
        self.poll_s = poll_s  # None: only woken and its own next due time (a node whose Store no other node writes to)
        self.owner = owner or f"digester-{secrets.token_hex(6)}"
        self.fired = 0  # digest notifications planned and on the bus
        self._wake = trio.Event()
        self._stopping = False

    def wake(self) -> None:
        """An event was collected in this process: its window may be due sooner than the sleep."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._stopping = False
        task_status.started()
        while not self._stopping:
            self._wake = trio.Event()  # before reading the Store: a wake from now on is not lost
            fires = await until_available(lambda: self.store.claim_digests(self.owner, wall_ms(), self.batch, self.lease_ms), "the digester")
            for fire in fires:
                await self._fire(fire)
            if fires:
                continue
            wait_s = float("inf") if self.poll_s is None else self.poll_s
            next_ms = await until_available(self.store.next_digest_ms, "the digester")
            if next_ms is not None:
                wait_s = min(wait_s, max(next_ms - wall_ms(), 1) / 1000)
            with trio.move_on_after(wait_s):
                await self._wake.wait()

    async def _fire(self, fire: DigestFire) -> None:
        window = fire.window
        events: list[tuple[DigestEvent, NotificationRequest]] = []
        for e in fire.events:
            try:
                events.append((e, _request.decode(e.body)))
            except msgspec.DecodeError as exc:  # written by an Ingress of another schema: never fire a window forever
                log.error("digest %s of %s: event %s unreadable (%s): left out", window.digest_key, window.user_id, e.notification_id, exc)
        for start in range(0, len(events), MAX_EVENTS):
            part = events[start : start + MAX_EVENTS]
            nid = digest_notification_id(window.fire_id if start == 0 else f"{window.fire_id}:{start // MAX_EVENTS}")
            batch = PlannedBatch()
            result = await self.planner.plan(digest_request(part), batch, nid=nid, deferred=True, collect=False)
            now = wall_ms()
            if isinstance(result, Problem):  # e.g. the template was deleted since: each event fails, saying why
                batch = PlannedBatch()
                status, detail = Status.FAILED, f"digest {window.digest_key} refused: {result.detail}"
                log.warning("digest %s of %s: %s", window.digest_key, window.user_id, result.detail)
            else:
                status, detail = Status.DIGESTED, f"in {nid}"
            for event, request in part:
                batch.events += [
                    StatusEvent(event.notification_id, event.user_id, Channel(c), status, now, detail=detail, created_ms=event.at_ms,
                                priority=request.priority)
                    for c in request.channels
                ]
            await self.planner.commit(batch)
            self.fired += 1
        await self.store.finish_digest(window.fire_id)
