"""A LogStore with the writes tests make, done as the Recorder does them: read the state, plan, apply the plan.

The LogStore port has no `record()` or inbox writes of its own any more: the Recorder is
its only writer (actors/recorder.py). Tests of the log store's observable behaviour wrap
a backend in `WritingLogStore` and keep writing with the old signatures; every write goes
through `actors.recorder.write_batch`, the Recorder's own path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.recorder import change_inbox, record_events
from protocol.messages import InboxEntry, StatusEvent
from protocol.write_plan import InboxAction, InboxChange
from reactor.ports import LogStore


class WritingLogStore:
    """`store`'s reads as they are, and its writes through the Recorder's planner."""

    def __init__(self, store: LogStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def record(self, events: Sequence[StatusEvent], inbox: Sequence[InboxEntry] = ()) -> None:
        await record_events(self.store, events, inbox)

    async def inbox_mark_read(self, user_id: str, ids: Sequence[str], at_ms: int) -> list[str]:
        return list((await change_inbox(self.store, InboxChange(user_id, InboxAction.READ, at_ms, ids=tuple(ids)))).ids)

    async def inbox_mark_all_read(self, user_id: str, at_ms: int, through_id: str | None = None) -> tuple[list[str], str | None]:
        changed = await change_inbox(self.store, InboxChange(user_id, InboxAction.READ_ALL, at_ms, through=through_id))
        return list(changed.ids), changed.through

    async def inbox_archive(self, user_id: str, ids: Sequence[str], at_ms: int) -> list[str]:
        return list((await change_inbox(self.store, InboxChange(user_id, InboxAction.ARCHIVE, at_ms, ids=tuple(ids)))).ids)
