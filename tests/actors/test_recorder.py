"""The Recorder: the log store's only writer, answering each message once what it asked is durable.

- The inbox routes ask the Recorder (ChangeInbox) instead of writing the log store: on a
  running node whose front end holds a log store it can only read, reading, archiving and
  reading everything work as before, frames included.
- One batch of status events and inbox changes is cut where the planner needs what came
  before it written (split_batch), each message answered with what it changed; a failed
  write fails the askers of its group and of the groups after it, not those answered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.messages import ChangeInbox, RecordEvents
from actors.recorder import Recorder
from protocol.channels import Channel
from protocol.ids import make_notification_id
from protocol.lifecycle import Status
from protocol.messages import InboxEntry, StatusEvent
from protocol.write_plan import InboxAction, InboxChange, InboxChanged, WritePlan
from reactor.ask import Reply
from reactor.backends.embedded import SqliteLogStore
from reactor.mailbox import Mailbox
from reactor.ports import LogStore
from tests.helpers import http, receive_json, running_node, token_for
from tests.realtime.streams import open_ws, send_web, wait_unread, ws_sync

T0 = 1_704_067_200_000
A, B = make_notification_id(T0, 1), make_notification_id(T0 + 1, 2)


class ReadOnlyLogStore:
    """A log store the front end can read and not write."""

    WRITES = frozenset({"apply", "record", "inbox_mark_read", "inbox_mark_all_read", "inbox_archive"})

    def __init__(self, store: LogStore) -> None:
        self.store = store
        self.refused: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name in self.WRITES:
            self.refused.append(name)
            raise AttributeError(f"the front end may not write the log store ({name}): the Recorder does")
        return getattr(self.store, name)


async def test_the_inbox_routes_write_only_through_the_recorder(tmp_path: Path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        ids = [await send_web(client, "u1", f"n{i}") for i in range(3)]
        await wait_unread(client, "u1", 3)
        front = herald.gateway.logstore = ReadOnlyLogStore(herald.logstore)  # type: ignore[assignment]
        written = herald.recorder.transactions
        token = await token_for(client, "u1")
        async with open_ws(herald.url, token) as ws:
            await ws_sync(ws)
            read = await client.post(f"/v1/users/u1/inbox/{ids[0]}/read")
            assert read.status_code == 200, read.text
            assert read.json()["read_at"] is not None  # read back after the Recorder's answer: durable
            with trio.fail_after(10):
                frame = await receive_json(ws)
            assert (frame["type"], frame["ids"]) == ("read", [ids[0]])
            archived = await client.post(f"/v1/users/u1/inbox/{ids[1]}/archive")
            assert archived.status_code == 200 and archived.json()["archived_at"] is not None
            with trio.fail_after(10):
                frame = await receive_json(ws)
            assert (frame["type"], frame["ids"]) == ("archived", [ids[1]])
            everything = await client.post("/v1/users/u1/inbox/read_all")
            assert everything.status_code == 200, everything.text
            assert (everything.json()["count"], everything.json()["through"]) == (1, ids[2])  # ids[1] is archived
            with trio.fail_after(10):
                frame = await receive_json(ws)
            assert (frame["type"], frame["through"], frame["count"]) == ("read_all", ids[2], 1)
            again = await client.post(f"/v1/users/u1/inbox/{ids[0]}/read")  # nothing changes: no frame
            assert again.json()["read_at"] == read.json()["read_at"]
            await ws.send_message(json.dumps({"type": "ping"}))
            with trio.fail_after(10):
                assert (await receive_json(ws))["type"] == "pong"
        assert front.refused == []
        assert herald.recorder.transactions > written
        statuses = [(await client.get(f"/v1/notifications/{nid}")).json()["channels"]["web"]["status"] for nid in ids]
        assert statuses == ["read", "sent", "read"]  # an archive is no read
        assert (await client.get("/v1/users/u1/inbox/unread_count")).json() == {"unread": 0}


def web_event(nid: str, status: Status, at: int = T0) -> StatusEvent:
    return StatusEvent(nid, "u1", Channel.WEB, status, at, created_ms=T0)


class FailingOn:
    """A log store whose n-th apply fails."""

    def __init__(self, store: LogStore, n: int) -> None:
        self.store, self.n, self.applies = store, n, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def apply(self, plan: WritePlan) -> None:
        self.applies += 1
        if self.applies == self.n:
            raise OSError("disk full")
        await self.store.apply(plan)


async def run_batch(store: Any, messages: list[Any]) -> Recorder:
    """Queue the messages, then let a Recorder take them as one batch and write it."""
    mailbox: Mailbox[Any] = Mailbox("recorder", 64)
    for message in messages:
        await mailbox.send(message)
    mailbox.close()
    recorder = Recorder(store, mailbox, batch=2000)
    await recorder.run()
    return recorder


@pytest.fixture
async def logstore(tmp_path: Path) -> Any:
    store = SqliteLogStore(tmp_path / "logs.sqlite3")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_one_batch_of_events_and_inbox_changes_answers_each(logstore: SqliteLogStore) -> None:
    replies: list[Reply[Any]] = [Reply() for _ in range(5)]
    messages = [
        RecordEvents((web_event(A, Status.QUEUED), web_event(A, Status.SENT, T0 + 1)), (InboxEntry(A, "u1", T0, "a", seq=1),), replies[0]),
        ChangeInbox(InboxChange("u1", InboxAction.READ, T0 + 5, ids=(A,)), replies[1]),  # its entry comes first: a group of its own
        ChangeInbox(InboxChange("u1", InboxAction.ARCHIVE, T0 + 6, ids=(A, B)), replies[2]),
        ChangeInbox(InboxChange("u1", InboxAction.READ_ALL, T0 + 7), replies[3]),
        RecordEvents((web_event(B, Status.QUEUED),), (InboxEntry(B, "u1", T0 + 1, "b", seq=2),), replies[4]),
    ]
    recorder = await run_batch(logstore, messages)
    assert [await r.wait() for r in replies] == [
        None, InboxChanged((A,)), InboxChanged((A,)), InboxChanged((), A), None,
    ]
    assert recorder.transactions == 3 and recorder.events_written == 3
    [row] = await logstore.statuses(A)
    assert (row.status, row.updated_ms, row.detail) == ("read", T0 + 5, "marked read")
    entry = await logstore.inbox_get("u1", A)
    assert entry is not None and (entry.read_ms, entry.archived_ms) == (T0 + 5, T0 + 6)
    assert await logstore.inbox_unread_count("u1") == 1  # B, written after the read-all


async def test_a_failed_write_fails_its_group_and_the_later_ones(logstore: SqliteLogStore) -> None:
    replies: list[Reply[Any]] = [Reply() for _ in range(4)]
    messages = [
        RecordEvents((web_event(A, Status.QUEUED),), (InboxEntry(A, "u1", T0, "a", seq=1),), replies[0]),
        ChangeInbox(InboxChange("u1", InboxAction.READ, T0 + 5, ids=(A,)), replies[1]),  # the second group: its apply fails
        ChangeInbox(InboxChange("u1", InboxAction.ARCHIVE, T0 + 6, ids=(A,)), replies[2]),
        RecordEvents((web_event(B, Status.QUEUED),), (), replies[3]),
    ]
    with pytest.raises(OSError, match="disk full"):
        await run_batch(FailingOn(logstore, 2), messages)
    assert await replies[0].wait() is None
    for reply in replies[1:]:
        with pytest.raises(OSError, match="disk full"):
            await reply.wait()
    assert [r.status for r in await logstore.statuses(A)] == ["queued"]
    entry = await logstore.inbox_get("u1", A)
    assert entry is not None and entry.read_ms is None
    assert await logstore.statuses(B) == []


class DownFor:
    """A log store whose server cannot be reached for its first n applies (PortUnavailable), then can."""

    def __init__(self, store: LogStore, n: int) -> None:
        self.store, self.n, self.applies = store, n, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def apply(self, plan: WritePlan) -> None:
        self.applies += 1
        if self.applies <= self.n:
            from reactor.ports import PortUnavailable

            raise PortUnavailable("the log store's server is down")
        await self.store.apply(plan)


async def test_a_log_store_down_is_waited_for_the_askers_told_at_once_and_nothing_lost(logstore: SqliteLogStore) -> None:
    from reactor.ports import PortUnavailable

    replies: list[Reply[Any]] = [Reply() for _ in range(2)]
    messages = [
        RecordEvents((web_event(A, Status.QUEUED),), (InboxEntry(A, "u1", T0, "a", seq=1),), replies[0]),
        RecordEvents((web_event(B, Status.QUEUED),), (), None),  # no asker: written all the same
        ChangeInbox(InboxChange("u1", InboxAction.READ, T0 + 5, ids=(A,)), replies[1]),
    ]
    down = DownFor(logstore, 3)
    recorder = await run_batch(down, messages)  # returns: the Recorder neither crashed nor gave up
    with pytest.raises(PortUnavailable):
        await replies[0].wait()  # its group met the server down: told at once (a 503), not left waiting
    assert await replies[1].wait() == InboxChanged((A,))  # the next group (split_batch) came once it was back
    assert recorder.unavailable_retries == 3 and down.applies > 3
    [row] = await logstore.statuses(A)
    assert row.status == "read"  # the events and the read were written once the server was back
    assert [r.status for r in await logstore.statuses(B)] == ["queued"]
