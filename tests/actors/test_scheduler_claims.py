"""The Scheduler claims due entries by lease: two claimers on one Store fire every entry exactly once,
also when one is killed mid-lease; its memory is bounded by the claim size, not by what is pending.

What "exactly once" means, precisely:
- at the bus: every entry is appended at least once; more than once only when the
  claimer that produced it died before removing it from the Store (the lease then ends
  and the other claimer produces it again): here exactly twice, once by each claimer.
  A claimer killed after claiming and before producing leaves no trace: the other
  fires its entries once, after the lease ends. With no kill, every entry is appended once.
- at the provider: exactly once. The records are attempted with `maybe_sent` (the
  Scheduler produced them), so the send ledger suppresses the second copy. (The one
  window the ledger leaves, a crash between the provider's answer and the ledger
  write, is not exercised here.)

Two SqliteStore connections on one file play two nodes sharing a Store. Time is a
MockClock moved by hand, and only when every task is idle and no SQLite call is in a
worker thread: a lease never ends while a claimer's store call is still running, so the
counts below are exact, not likely.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
import trio.testing

from actors.messages import Attempt
from actors.provider import Provider
from actors.scheduler import ScheduleAt, Scheduler
from protocol.channels import Channel
from protocol.content import Content, SmsContent
from protocol.ids import make_notification_id
from protocol.messages import Delivery, Sent, decode_delivery, encode_delivery
from reactor.ask import Reply, ask
from reactor.backends.embedded import SqliteStore
from reactor.clock import wall_ms
from reactor.mailbox import Mailbox
from reactor.ports import Scheduled

T = TypeVar("T")
TOPIC = "herald.sms"
LEASE_S = 30.0


class Quiet:
    """Counts the store calls in flight (in worker threads), so the test moves time only when none is."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    def enter(self) -> None:
        if self.in_flight == 0:
            self._idle = trio.Event()
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def settle(self) -> None:
        """Return once every task waits on Trio (a sleep, an event) and no store call is running."""
        while True:
            await trio.testing.wait_all_tasks_blocked()
            if self.in_flight == 0:
                return
            await self._idle.wait()


class NodeStore(SqliteStore):
    """A node's connection to the shared store file; records the largest batch of entries any call returned."""

    def __init__(self, path: Path, quiet: Quiet) -> None:
        super().__init__(path)
        self.quiet = quiet
        self.largest_read = 0

    async def _run(self, work: Callable[[Any], T]) -> T:
        self.quiet.enter()
        try:
            return await super()._run(work)
        finally:
            self.quiet.leave()

    async def claim_due(self, owner: str, now_ms: int, limit: int, lease_ms: int) -> list[Scheduled]:
        claimed = await super().claim_due(owner, now_ms, limit, lease_ms)
        self.largest_read = max(self.largest_read, len(claimed))
        return claimed

    async def scheduled(self) -> list[Scheduled]:
        pending = await super().scheduled()
        self.largest_read = max(self.largest_read, len(pending))
        return pending


class Log:
    """The bus, as far as the Scheduler uses it: appends, each with who made it and when (mock time)."""

    def __init__(self) -> None:
        self.appends: list[tuple[str, float, bytes]] = []  # (claimer, time, value)

    def ids(self) -> Counter[str]:
        return Counter(decode_delivery(value).notification_id for _, _, value in self.appends)


class ClaimerBus:
    """One claimer's view of the bus; kills the claimer at its `kill_on`-th produce (`before` or `after` appending)."""

    def __init__(self, log: Log, name: str, scheduler: Callable[[], Scheduler], kill_on: int = 0, when: str = "") -> None:
        self.log = log
        self.name = name
        self.scheduler = scheduler
        self.kill_on = kill_on
        self.when = when
        self.calls = 0
        self.scope = trio.CancelScope()
        self.killed: list[str] = []  # the notification ids of the batch it held when killed
        self.killed_at: float | None = None
        self.held_at_produce: list[int] = []

    async def produce(self, items: Sequence[tuple[str, bytes, bytes]]) -> list[tuple[int, int]]:
        self.calls += 1
        self.held_at_produce.append(self.scheduler().held())
        kill = self.calls == self.kill_on
        if kill:
            self.killed = [decode_delivery(value).notification_id for _, _, value in items]
            self.killed_at = trio.current_time()
            if self.when == "before":
                self.scope.cancel()  # claimed, not produced
                await trio.sleep_forever()
        first = len(self.log.appends)
        self.log.appends += [(self.name, trio.current_time(), value) for _, _, value in items]
        if kill:
            self.scope.cancel()  # produced, not removed from the store
            await trio.lowlevel.checkpoint()
        return [(0, first + i) for i in range(len(items))]


def entry(i: int, due_ms: int) -> Scheduled:
    nid = make_notification_id(1_704_067_200_000 + i, i)
    delivery = Delivery(nid, f"u{i % 7}", Channel.SMS, 0, Content(sms=SmsContent(f"n{i}")), address="+15555550100")
    return Scheduled(f"retry:{nid}:sms:2", due_ms, TOPIC, delivery.user_id.encode(), encode_delivery(delivery))


async def advance_until(
    clock: trio.testing.MockClock, quiet: Quiet, done: Callable[[], Awaitable[bool]], step_s: float, limit_s: float,
) -> None:
    """Move mock time by `step_s` whenever everything is idle, until `done()` (at most `limit_s` of mock time)."""
    end = trio.current_time() + limit_s
    while True:
        await quiet.settle()
        if await done():
            return
        assert trio.current_time() < end, "not done in time"
        clock.jump(step_s)


class CountingClient:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, delivery: Delivery) -> Sent:
        self.sent.append(delivery.notification_id)
        return Sent()


async def provider_calls(store: SqliteStore, log: Log) -> tuple[Counter[str], int]:
    """Attempt every appended record, in bus order, as the consumer would (maybe_sent: the Scheduler produced it)."""
    client = CountingClient()
    mailbox: Mailbox[Attempt] = Mailbox("provider", 16)
    provider = Provider(Channel.SMS, client, mailbox, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run)
        for _, _, value in log.appends:
            reply: Reply[Any] = Reply()
            await mailbox.send(Attempt(decode_delivery(value), reply, maybe_sent=True))
            assert isinstance(await reply.wait(), Sent)
        mailbox.close()
    return Counter(client.sent), provider.suppressed


N = 150
MOMENTS = 30  # the entries fall due at 30 moments, 2 s apart: 5 at each


@pytest.mark.parametrize("kill", ["none", "before", "after"])
async def test_two_claimers_fire_every_due_entry_exactly_once(tmp_path, mock_clock, kill):
    quiet = Quiet()
    stores = [NodeStore(tmp_path / "store.sqlite3", quiet) for _ in range(2)]
    for store in stores:
        await store.open()
    log = Log()
    schedulers: dict[str, Scheduler] = {}
    buses = {
        "a": ClaimerBus(log, "a", lambda: schedulers["a"], kill_on=3 if kill != "none" else 0, when=kill),
        "b": ClaimerBus(log, "b", lambda: schedulers["b"]),
    }
    mailboxes = {name: Mailbox[ScheduleAt](f"scheduler-{name}", 8) for name in buses}
    # batches smaller than the 5 entries due at each moment: both claimers take part at every moment
    for (name, bus), store, batch in zip(buses.items(), stores, (3, 2)):
        schedulers[name] = Scheduler(
            bus, store, mailboxes[name], batch, owner=f"node-{name}", lease_s=LEASE_S,  # type: ignore[arg-type]
        )
    start = wall_ms()
    entries = [entry(i, start + 1000 + (i % MOMENTS) * 2000) for i in range(N)]
    async with trio.open_nursery() as nursery:
        for name, scheduler in schedulers.items():
            async def run(
                scheduler: Scheduler = scheduler, scope: trio.CancelScope = buses[name].scope, *, task_status: Any,
            ) -> None:
                with scope:
                    await scheduler.run(task_status=task_status)

            await nursery.start(run)
        for i, e in enumerate(entries):  # half given to each node
            await ask(mailboxes["ab"[i % 2]].send, lambda reply, e=e: ScheduleAt(e, reply))

        by_entry = {decode_delivery(e.value).notification_id for e in entries}

        async def done() -> bool:
            """Every entry on the bus, none left in the store."""
            return set(log.ids()) >= by_entry and not await stores[0].scheduled()

        await advance_until(mock_clock, quiet, done, 0.25, 200)
        for mailbox in mailboxes.values():
            mailbox.close()

    counts = log.ids()
    assert set(counts) == by_entry
    killed = buses["a"].killed
    if kill == "none":
        assert not killed and all(n == 1 for n in counts.values())
        assert len(log.appends) == N
        assert schedulers["a"].fired > 0 and schedulers["b"].fired > 0  # both claimed
        assert schedulers["a"].fired + schedulers["b"].fired == N
    else:
        assert killed, "claimer a was not killed mid-lease"
        twice = {nid for nid, n in counts.items() if n == 2}
        assert all(n in (1, 2) for n in counts.values())
        assert twice == (set(killed) if kill == "after" else set())
        assert len(log.appends) == N + (len(killed) if kill == "after" else 0)
        # b fired the killed batch only once a's lease had ended, never before
        assert buses["a"].killed_at is not None
        refired = [
            (who, at) for who, at, value in log.appends if who == "b" and decode_delivery(value).notification_id in set(killed)
        ]
        assert len(refired) == len(killed)
        assert all(at >= buses["a"].killed_at + LEASE_S for _, at in refired)
    for name, scheduler in schedulers.items():
        assert scheduler.most_held <= scheduler.batch
        assert max(buses[name].held_at_produce, default=0) <= scheduler.batch

    provider_counts, suppressed = await provider_calls(stores[1], log)
    assert provider_counts == Counter({nid: 1 for nid in by_entry})  # exactly once at the provider
    assert suppressed == len(log.appends) - N  # every extra copy on the bus was stopped by the ledger
    print(f"kill={kill}: entries={N} bus_appends={len(log.appends)} provider_sends={sum(provider_counts.values())} "
          f"suppressed_by_ledger={suppressed} fired_a={schedulers['a'].fired} fired_b={schedulers['b'].fired}")
    for store in stores:
        await store.close()


async def fill(store: SqliteStore, entries: Sequence[Scheduled]) -> None:
    """Set-up only: write many pending entries in one transaction (Store.schedule writes one per call, each durable)."""
    rows = [(e.id, e.due_ms, e.topic, e.key, e.value) for e in entries]
    sql = "INSERT INTO scheduled (id, due_ms, topic, key, value) VALUES (?, ?, ?, ?, ?)"
    await store._transaction(lambda db: db.executemany(sql, rows))


async def test_memory_is_bounded_by_the_claim_size_not_by_the_pending_entries(tmp_path, mock_clock):
    quiet = Quiet()
    store = NodeStore(tmp_path / "store.sqlite3", quiet)
    await store.open()
    log = Log()
    holder: list[Scheduler] = []
    bus = ClaimerBus(log, "a", lambda: holder[0])
    scheduler = Scheduler(bus, store, Mailbox("scheduler", 8), batch=500)  # type: ignore[arg-type]
    holder.append(scheduler)
    start = wall_ms()
    pending = 100_000
    # all pending at once, falling due over 100 s: 1,000 a second
    await fill(store, [Scheduled(f"e{i:06}", start + 1000 + i // 10 * 10, TOPIC, b"k", b"v%d" % i) for i in range(pending)])
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)

        async def done() -> bool:
            return scheduler.fired == pending

        await advance_until(mock_clock, quiet, done, 0.5, 300)
        scheduler.mailbox.close()
    values = Counter(value for _, _, value in log.appends)
    assert len(values) == pending and set(values.values()) == {1}  # each fired once
    assert store.largest_read <= 500  # no call ever handed the Scheduler more than one claim's worth
    assert scheduler.most_held <= 500 and max(bus.held_at_produce) <= 500
    print(f"pending={pending} claim_size=500 largest_batch_read={store.largest_read} most_held={scheduler.most_held} "
          f"produce_calls={bus.calls}")
    await store.close()


async def test_an_entry_due_sooner_than_the_next_known_due_time_wakes_the_scheduler(tmp_path, mock_clock):
    quiet = Quiet()
    store = NodeStore(tmp_path / "store.sqlite3", quiet)
    await store.open()
    log = Log()
    mailbox: Mailbox[ScheduleAt] = Mailbox("scheduler", 8)
    scheduler = Scheduler(ClaimerBus(log, "a", lambda: scheduler), store, mailbox, poll_s=3600)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        later, sooner = entry(1, wall_ms() + 3_000_000), entry(2, wall_ms() + 10_000)
        await ask(mailbox.send, lambda reply: ScheduleAt(later, reply))
        await quiet.settle()  # asleep until `later` is due (the poll is an hour)
        t0 = trio.current_time()
        await ask(mailbox.send, lambda reply: ScheduleAt(sooner, reply))

        async def done() -> bool:
            return bool(log.appends)

        await advance_until(mock_clock, quiet, done, 0.5, 100)
        assert trio.current_time() - t0 == pytest.approx(10, abs=0.5)
        assert [decode_delivery(v).notification_id for _, _, v in log.appends] == [decode_delivery(sooner.value).notification_id]
        mailbox.close()
    await store.close()


async def test_an_entry_another_node_scheduled_is_fired_within_the_poll_interval(tmp_path, mock_clock):
    quiet = Quiet()
    mine, theirs = NodeStore(tmp_path / "store.sqlite3", quiet), NodeStore(tmp_path / "store.sqlite3", quiet)
    await mine.open()
    await theirs.open()
    log = Log()
    mailbox: Mailbox[ScheduleAt] = Mailbox("scheduler", 8)
    scheduler = Scheduler(ClaimerBus(log, "a", lambda: scheduler), mine, mailbox, poll_s=5)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await quiet.settle()
        await theirs.schedule(entry(1, wall_ms()))  # another node stored it, then died before firing it
        t0 = trio.current_time()

        async def done() -> bool:
            return bool(log.appends)

        await advance_until(mock_clock, quiet, done, 0.5, 100)
        assert trio.current_time() - t0 <= 5
        mailbox.close()
    assert await mine.scheduled() == []
    await mine.close()
    await theirs.close()


async def test_a_scheduler_restarted_in_place_takes_back_its_claims_at_once(tmp_path, mock_clock):
    quiet = Quiet()
    store = NodeStore(tmp_path / "store.sqlite3", quiet)
    await store.open()
    log = Log()
    bus = ClaimerBus(log, "a", lambda: scheduler, kill_on=1, when="before")
    scheduler = Scheduler(bus, store, Mailbox("scheduler", 8), lease_s=LEASE_S)  # type: ignore[arg-type]
    await store.schedule(entry(1, wall_ms()))
    async with trio.open_nursery() as nursery:
        async def crashing_run(*, task_status: Any) -> None:
            with bus.scope:
                await scheduler.run(task_status=task_status)

        await nursery.start(crashing_run)  # claims the entry, dies before producing it
        await quiet.settle()
        assert bus.killed and not log.appends
        scheduler.mailbox = Mailbox("scheduler", 8)  # as the supervisor restarts it: the same Scheduler, run again
        t0 = trio.current_time()
        await nursery.start(scheduler.run)

        async def done() -> bool:
            return bool(log.appends)

        await advance_until(mock_clock, quiet, done, 0.5, 100)
        assert trio.current_time() - t0 < LEASE_S  # its own lease does not hold it back
        scheduler.mailbox.close()
    assert await store.scheduled() == []
    await store.close()
