"""sessions.Replay and Session holding, deterministically: a real ConnectionRegistry on a memory
Broker and a real SQLite LogStore, with the inbox rows written (or not yet) exactly where each case needs.

The web channel pushes a frame first (kept among the recent pushes, then published) and
writes its inbox row with the consumer's batch later; these are the interleavings a
resuming client can meet. Each step waits until every task is blocked, so the registry
has handled what was sent or published before the next step looks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

from actors.api.realtime import sse_event
from actors.api.replay import Replay
from actors.clients.web import notification_frame, push_frame
from actors.messages import Recent, Register, Unregister
from actors.registry import ConnectionRegistry, Outgoing, RecentPushes, Session
from protocol.frames import CloseCode
from protocol.ids import make_notification_id
from protocol.messages import InboxEntry
from reactor.ask import ask
from reactor.backends.embedded import MemoryBroker, MemoryState, SqliteLogStore
from reactor.mailbox import Mailbox
from tests.logstore_writes import WritingLogStore

T0 = 1_704_067_200_000
IDS = [make_notification_id(T0 + i, i) for i in range(12)]


def entry(i: int, user: str = "u1") -> InboxEntry:
    return InboxEntry(notification_id=IDS[i], user_id=user, created_ms=T0 + i, title=f"n{i}", seq=100 + i)


class Node:
    """A registry actor and a log store, as the transports see them."""

    def __init__(self, registry: ConnectionRegistry, logstore: WritingLogStore) -> None:
        self.registry = registry
        self.mailbox = registry.mailbox
        self.logstore = logstore

    async def push(self, *indexes: int, user: str = "u1") -> list[int]:
        """The web channel pushes these notifications (as the web client does); how many nodes each reached."""
        reached = []
        for i in indexes:
            frame = notification_frame(entry(i, user))
            reached.append(await push_frame(self.registry.broker, self.registry.recent, user, IDS[i], frame))
        await wait_all_tasks_blocked()  # the registry offered them to the sessions
        return reached

    async def write(self, *indexes: int, user: str = "u1") -> None:
        """The consumer's batch reaches the inbox."""
        await self.logstore.record([], [entry(i, user) for i in indexes])

    async def register(self, session: Session) -> None:
        await self.mailbox.send(Register(session))
        await wait_all_tasks_blocked()  # registered, and the node subscribed to the user

    async def replay(self, session: Session, last_id: str | None) -> list[str]:
        """Every id a Replay yields, page after page."""
        replay = Replay(self.logstore, self.mailbox, session, last_id)
        ids: list[str] = []
        while page := await replay.next_page():
            ids += [item.id for item in page]
        return ids


@asynccontextmanager
async def node(tmp_path, recent: int = 64, state: MemoryState | None = None) -> AsyncIterator[Node]:
    logstore = WritingLogStore(SqliteLogStore(tmp_path / "logs.sqlite3"))
    await logstore.open()
    try:
        async with edge(logstore, state or MemoryState(), recent) as n:
            yield n
    finally:
        await logstore.close()


@asynccontextmanager
async def edge(logstore: WritingLogStore, state: MemoryState, recent: int = 64, broker: MemoryBroker | None = None) -> AsyncIterator[Node]:
    """A registry on a State, a Broker and a log store that other edges may share."""
    registry = ConnectionRegistry(Mailbox("registry", 64), broker or MemoryBroker(), RecentPushes(state, recent))
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        yield Node(registry, logstore)
        registry.mailbox.close()


def ids_of(*indexes: int) -> list[str]:
    return [IDS[i] for i in indexes]


def queued(session: Session) -> list[Outgoing]:
    return list(iter(session.next_nowait, None))


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
        assert await n.push(3, 4) == [1, 1]  # the node holding the session counts as reached ...
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
        assert await n.push(0, 1, 2, 3, 4) == [1, 1, 1, 1, 1]  # the node holds a session of the user ...
        assert n.registry.pushed == 4  # ... which held four and was closed on the fifth
        assert session.closed and session.close_code == CloseCode.SLOW_CONSUMER
        await n.mailbox.send(Unregister(session))


async def test_recent_pushes_are_bounded_per_user_and_in_all_least_recently_pushed_user_first(tmp_path):
    async with node(tmp_path, recent=3, state=MemoryState(max_recent_items=5)) as n:
        await n.push(0, 1, 2, 3, user="a")  # a keeps its newest 3
        await n.push(4, 5, user="b")  # 5 kept in all: the State's bound
        assert [nid for nid, _ in await ask(n.mailbox.send, lambda reply: Recent("a", reply))] == ids_of(1, 2, 3)
        await n.push(6, user="b")  # past the bound: the oldest of a, pushed to least lately, goes
        kept_a = await ask(n.mailbox.send, lambda reply: Recent("a", reply))
        kept_b = await ask(n.mailbox.send, lambda reply: Recent("b", reply))
        assert [nid for nid, _ in kept_a] == ids_of(2, 3)
        assert [nid for nid, _ in kept_b] == ids_of(4, 5, 6)
        assert kept_b[0][1] == notification_frame(entry(4, "b"))


async def test_a_client_resumes_on_another_edge_from_an_id_whose_inbox_row_is_not_written_yet(tmp_path):
    logstore = WritingLogStore(SqliteLogStore(tmp_path / "logs.sqlite3"))
    await logstore.open()
    state = MemoryState()  # the State the edges share
    try:
        async with edge(logstore, state) as first, edge(logstore, state) as second:
            seen = Session("u1", 16)
            await first.register(seen)
            assert await first.push(0, 1, 2, 3, 4) == [1] * 5
            await first.write(0, 1)  # 2, 3, 4 are pushed, their batch not recorded yet
            assert [item.id for item in queued(seen)][:3] == ids_of(0, 1, 2)  # the client saw up to 2, then its edge went away
            resumed = Session("u1", 16, hold=True)
            await second.register(resumed)
            assert await second.replay(resumed, IDS[2]) == ids_of(3, 4)  # no gap, no duplicate
            await second.write(2, 3, 4)
            again = Session("u1", 16, hold=True)
            await second.register(again)
            assert await second.replay(again, IDS[2]) == ids_of(3, 4)  # the same once the rows are written
    finally:
        await logstore.close()


async def test_a_push_is_kept_for_resume_before_it_is_published(tmp_path):
    class SlowState(MemoryState):
        def __init__(self) -> None:
            super().__init__()
            self.release = trio.Event()

        async def append_recent(self, key: str, item: bytes, max_items: int, ttl_s: float) -> None:
            await self.release.wait()
            await super().append_recent(key, item, max_items, ttl_s)

    state = SlowState()
    async with node(tmp_path, state=state) as n:
        live = Session("u1", 16)
        await n.register(live)
        answered: list[int] = []

        async def push() -> None:
            answered.extend(await n.push(0))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(push)
            await trio.testing.wait_all_tasks_blocked()
            # Not published before the State keeps it: a session registering now either finds it
            # among the recent pushes or gets it live, never neither.
            assert queued(live) == [] and answered == []
            state.release.set()
        assert answered == [1]
        assert [item.id for item in queued(live)] == ids_of(0)
        assert [nid for nid, _ in await n.registry.recent.of("u1")] == ids_of(0)


def test_sse_events_carry_the_notification_id_and_the_frame_type():
    frame = notification_frame(entry(0))
    assert sse_event(Outgoing("notification", IDS[0], frame)) == f"id: {IDS[0]}\nevent: notification\ndata: ".encode() + frame + b"\n\n"
    assert b"\n" not in frame  # one data line per event
    assert sse_event(Outgoing("read", None, b'{"type":"read"}')) == b'event: read\ndata: {"type":"read"}\n\n'
