"""sessions.Replay and Session holding, deterministically: a real ConnectionRegistry and a real
SQLite LogStore, with the inbox rows written (or not yet) exactly where each case needs.

The web channel pushes a frame first and writes its inbox row with the consumer's batch
later; these are the interleavings a resuming client can meet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from actors.api.realtime import sse_event
from actors.api.replay import Replay
from actors.clients.web import notification_frame
from actors.messages import Push, Recent, Register, Unregister
from actors.registry import ConnectionRegistry, Outgoing, Session
from protocol.frames import CloseCode
from protocol.ids import make_notification_id
from protocol.messages import InboxEntry
from reactor.ask import ask
from reactor.backends.embedded import SqliteLogStore
from tests.logstore_writes import WritingLogStore
from reactor.mailbox import Mailbox

T0 = 1_704_067_200_000
IDS = [make_notification_id(T0 + i, i) for i in range(12)]


def entry(i: int, user: str = "u1") -> InboxEntry:
    return InboxEntry(notification_id=IDS[i], user_id=user, created_ms=T0 + i, title=f"n{i}", seq=100 + i)


class Node:
    """A registry actor and a log store, as the transports see them."""

    def __init__(self, registry: ConnectionRegistry, logstore: SqliteLogStore) -> None:
        self.registry = registry
        self.mailbox = registry.mailbox
        self.logstore = logstore

    async def push(self, *indexes: int, user: str = "u1") -> list[int]:
        """The web channel pushes these notifications; how many sessions each reached."""
        reached = []
        for i in indexes:
            frame = notification_frame(entry(i, user))
            reached.append(await ask(self.mailbox.send, lambda reply, i=i, frame=frame: Push(user, IDS[i], frame, reply)))
        return reached

    async def write(self, *indexes: int, user: str = "u1") -> None:
        """The consumer's batch reaches the inbox."""
        await self.logstore.record([], [entry(i, user) for i in indexes])

    async def register(self, session: Session) -> None:
        await self.mailbox.send(Register(session))

    async def replay(self, session: Session, last_id: str | None) -> list[str]:
        """Every id a Replay yields, page after page."""
        replay = Replay(self.logstore, self.mailbox, session, last_id)
        ids: list[str] = []
        while page := await replay.next_page():
            ids += [item.id for item in page]
        return ids


@asynccontextmanager
async def node(tmp_path, recent: int = 64) -> AsyncIterator[Node]:
    logstore = WritingLogStore(SqliteLogStore(tmp_path / "logs.sqlite3"))
    await logstore.open()
    registry = ConnectionRegistry(Mailbox("registry", 64), recent=recent)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(registry.run)
            yield Node(registry, logstore)
            registry.mailbox.close()
    finally:
        await logstore.close()


def ids_of(*indexes: int) -> list[str]:
    return [IDS[i] for i in indexes]


def queued(session: Session) -> list[Outgoing]:
    items = []
    while True:
        try:
            items.append(session.outbound.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return items


async def test_resume_from_an_id_whose_inbox_row_is_not_written_yet(tmp_path):
    async with node(tmp_path) as n:
        await n.push(0, 1, 2, 3, 4, 5)
        await n.write(0, 1, 2)  # 3, 4, 5 were pushed (the client saw 3 live) but their batch is not recorded yet
        session = Session("u1", 16, hold=True)
        await n.register(session)
        # without the recent pushes, 3 would be unknown to the inbox and replay everything retained
        assert await n.replay(session, IDS[3]) == ids_of(4, 5)


async def test_resume_reads_the_inbox_then_the_pushes_not_written_yet(tmp_path):
    async with node(tmp_path) as n:
        await n.push(0, 1, 2, 3, 4, 5)
        await n.write(0, 1, 2)
        session = Session("u1", 16, hold=True)
        await n.register(session)
        assert await n.replay(session, IDS[0]) == ids_of(1, 2, 3, 4, 5)


async def test_resume_from_an_id_older_than_the_recent_pushes(tmp_path):
    async with node(tmp_path, recent=3) as n:
        await n.push(0, 1, 2, 3, 4, 5)  # only 3, 4, 5 are still among the recent pushes
        await n.write(0, 1, 2, 3)
        session = Session("u1", 16, hold=True)
        await n.register(session)
        assert await n.replay(session, IDS[1]) == ids_of(2, 3, 4, 5)


async def test_no_last_id_or_an_unknown_one_replays_everything_retained(tmp_path):
    async with node(tmp_path) as n:
        await n.push(0, 1, 2)
        await n.write(0, 1)
        await n.push(7, user="someone-else")
        await n.write(7, user="someone-else")
        for last_id in (None, IDS[7], IDS[11]):  # to a Replay another user's id is unknown too (the transports refuse it first)
            session = Session("u1", 16, hold=True)
            await n.register(session)
            assert await n.replay(session, last_id) == ids_of(0, 1, 2), last_id


async def test_frames_pushed_during_a_replay_are_held_and_follow_it_once(tmp_path):
    async with node(tmp_path) as n:
        await n.push(0, 1, 2)
        await n.write(0, 1, 2)
        session = Session("u1", 16, hold=True)
        await n.register(session)
        assert await n.push(3, 4) == [1, 1]  # the holding session counts as reached ...
        assert queued(session) == []  # ... but nothing goes out ahead of the replay
        await n.write(3)  # 3's row lands before the replay reads the inbox: replayed there, in order
        assert await n.replay(session, IDS[0]) == ids_of(1, 2, 3, 4)
        assert [h.id for h in iter(session.take_held, None)] == []  # 3 and 4 were replayed: not sent twice
        assert not session.holding
        await n.push(5)  # live now
        assert [item.id for item in queued(session)] == ids_of(5)


async def test_held_frames_not_in_the_replay_come_right_after_it(tmp_path):
    async with node(tmp_path) as n:
        await n.push(0, 1)
        await n.write(0, 1)
        session = Session("u1", 16, hold=True)
        await n.register(session)
        replay = Replay(n.logstore, n.mailbox, session, IDS[0])
        sent = await replay.next_page()  # the replay has read the recent pushes and the inbox ...
        await n.push(2, 3)  # ... and these arrive while it sends: they wait for it
        while page := await replay.next_page():
            sent += page
        held = list(iter(session.take_held, None))
        assert [item.id for item in sent] == ids_of(1)
        assert [item.id for item in held] == ids_of(2, 3)
        assert queued(session) == [] and not session.holding


async def test_a_session_holding_too_many_frames_is_closed_as_slow(tmp_path):
    async with node(tmp_path) as n:
        session = Session("u1", 4, hold=True)
        await n.register(session)
        assert await n.push(0, 1, 2, 3, 4) == [1, 1, 1, 1, 0]
        assert session.closed.is_set() and session.close_code == CloseCode.SLOW_CONSUMER
        await n.mailbox.send(Unregister(session))


async def test_recent_pushes_are_bounded_across_users_oldest_first(tmp_path):
    async with node(tmp_path, recent=4) as n:
        await n.push(0, 1, user="a")
        await n.push(2, 3, 4, user="b")
        await n.push(5, user="a")
        kept_a = await ask(n.mailbox.send, lambda reply: Recent("a", reply))
        kept_b = await ask(n.mailbox.send, lambda reply: Recent("b", reply))
        assert [nid for nid, _ in kept_a] == ids_of(5)
        assert [nid for nid, _ in kept_b] == ids_of(2, 3, 4)
        assert kept_a[0][1] == notification_frame(entry(5, "a"))


def test_sse_events_carry_the_notification_id_and_the_frame_type():
    frame = notification_frame(entry(0))
    assert sse_event(Outgoing("notification", IDS[0], frame)) == f"id: {IDS[0]}\nevent: notification\ndata: ".encode() + frame + b"\n\n"
    assert b"\n" not in frame  # one data line per event
    assert sse_event(Outgoing("read", None, b'{"type":"read"}')) == b'event: read\ndata: {"type":"read"}\n\n'
