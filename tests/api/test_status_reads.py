"""GET /v1/notifications/{id} reads the statuses, then the timeline: a write landing between the two reads never
leaves a status whose own step is missing from the timeline (it was read on two connections at once, and a fresh
status could come with a timeline read before it)."""

from __future__ import annotations

from types import SimpleNamespace

import trio

from actors.api.notifications import _statuses_and_events
from reactor.ports import EventRow, StatusRow

NID = "01M8PRESWSAFQ9EY5JDHH1CJZD"


class LogStoreWithAWriteBetween:
    """A log store where a write (the web channel: sent -> delivered) commits while statuses() is being read."""

    def __init__(self) -> None:
        self.committed = False

    def _status(self) -> str:
        return "delivered" if self.committed else "sent"

    async def statuses(self, notification_id: str) -> list[StatusRow]:
        await trio.lowlevel.checkpoint()  # the read takes a moment: another read may run meanwhile
        self.committed = True  # ... and the write lands before this one's snapshot
        return [StatusRow(notification_id, "u", "web", self._status(), "normal", 1, 2, "")]

    async def events(self, notification_id: str) -> list[EventRow]:
        steps = ["accepted", "queued", "sent", *(["delivered"] if self.committed else [])]
        return [EventRow("web", step, 1, "") for step in steps]


async def test_the_timeline_holds_the_step_its_status_names_when_a_write_lands_between_the_reads() -> None:
    gw = SimpleNamespace(logstore=LogStoreWithAWriteBetween())
    rows, events = await _statuses_and_events(gw, NID)  # type: ignore[arg-type]
    assert rows[0].status == "delivered"
    assert rows[0].status in [e.status for e in events]
