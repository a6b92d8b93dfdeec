"""One dead-letter entry per (notification, channel), across redeliveries; resolved by a later success.

A restart redelivers the records whose offsets were not committed. The test makes that
happen on purpose: it rewinds the consumer group's committed offset and starts the node
again on the same data directory. Before the fix, the second run added a second DLQ
entry for the same notification, and a run that then delivered it left the entry (and
the status) saying dead_lettered.
"""

from __future__ import annotations

import sqlite3

import trio

from protocol.channels import Channel
from protocol.content import Content, Recipient, SmsContent
from protocol.api import NotificationRequest
from protocol.messages import RetryLater, Sent
from reactor.ports import DeadLetter, DlqFilter
from reactor.backends.embedded import SqliteStore
from tests.faults.support import restarts, wait_status
from tests.helpers import running_node

GROUP, TOPIC = "herald-sms", Channel.SMS.topic()


class Switchable:
    def __init__(self, up: bool) -> None:
        self.up = up
        self.calls = 0

    async def send(self, delivery):
        self.calls += 1
        return Sent() if self.up else RetryLater("provider down")


async def rewind(herald) -> None:
    """Make the next start redeliver the whole partition, as after a crash before the commit."""
    await herald.bus.commit(GROUP, TOPIC, 0, 0)


async def settled(herald) -> bool:
    """Nothing pending: no retry scheduled, and every record of the partition processed and committed."""
    if await herald.store.scheduled():
        return False
    return await herald.bus.committed(GROUP, TOPIC, 0) == await herald.bus.end_offset(TOPIC, 0)


async def test_a_redelivered_notification_has_one_dead_letter_entry_resolved_when_it_is_delivered(tmp_path):
    settings = {"partitions": {"sms": 1}, "max_attempts": 2, "retry_initial_s": 0.01, "retry_max_s": 0.02}
    request = NotificationRequest(user_id="dl1", channels=[Channel.SMS], content=Content(sms=SmsContent("hi")), to=Recipient(phone="+15555550100"))

    async with running_node(tmp_path, clients={Channel.SMS: Switchable(up=False)}, **settings) as herald:
        nid = (await herald.ingress.accept(request)).notification_id
        assert await wait_status(herald, nid, "sms") == "dead_lettered"
        [first] = await herald.store.dead_letters(DlqFilter(channel="sms"))
        with trio.fail_after(20):
            while not await settled(herald):  # committed: a rewind before the consumer's commit would be overwritten
                await trio.sleep(0.05)
        await rewind(herald)

    down = Switchable(up=False)
    async with running_node(tmp_path, clients={Channel.SMS: down}, **settings) as herald:
        with trio.fail_after(20):  # the redelivered records (attempt 1 and its retry) fail and are dead-lettered again
            while down.calls < 3 or not await settled(herald):
                await trio.sleep(0.05)
        entries = await herald.store.dead_letters(DlqFilter(channel="sms"))
        assert [e.notification_id for e in entries] == [nid], entries  # one entry, not one per redelivery
        assert entries[0].id != first.id and entries[0].dead_ms >= first.dead_ms  # the newest one replaced it
        await rewind(herald)

    up = Switchable(up=True)
    async with running_node(tmp_path, clients={Channel.SMS: up}, **settings) as herald:
        with trio.fail_after(20):  # the status was dead_lettered (final) already: wait for it to move on
            while await herald.store.dead_letter_count("sms") > 0 or await wait_status(herald, nid, "sms") != "delivered":
                await trio.sleep(0.05)
        timeline = [(e.status, e.detail) for e in await herald.logstore.events(nid) if e.channel == "sms"]
        assert any("dead-letter entry is resolved" in detail for _, detail in timeline), timeline
        assert up.calls == 1  # the send ledger stopped the other redelivered copies
        assert sum(restarts(herald).values()) == 0


async def test_the_store_keeps_one_entry_per_notification_and_channel(tmp_path):
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    try:
        def entry(nid: str, channel: str, error: str) -> DeadLetter:
            return DeadLetter(0, channel, nid, "u", error, 1, 1, 2, b"{}")

        a1 = await store.dead_letter(entry("n1", "sms", "first"))
        a2 = await store.dead_letter(entry("n1", "sms", "second"))
        await store.dead_letter(entry("n1", "email", "other channel"))
        await store.dead_letter(entry("n2", "sms", "other notification"))
        entries = await store.dead_letters(DlqFilter(channel="sms"))
        assert [(e.notification_id, e.error) for e in entries] == [("n1", "second"), ("n2", "other notification")]
        assert a2 != a1 and await store.discard_dead_letters([a1]) == 0  # a stale id (a replay in flight) discards nothing
        assert await store.resolve_dead_letters("sms", ["n1", "n3"]) == ["n1"]
        assert await store.resolve_dead_letters("sms", ["n1"]) == []
        assert await store.dead_letter_count() == 2
    finally:
        await store.close()


async def test_a_queue_with_duplicates_from_before_keeps_the_newest_of_each(tmp_path):
    path = tmp_path / "store.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, notification_id TEXT NOT NULL,
            user_id TEXT NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL, created_ms INTEGER NOT NULL,
            dead_ms INTEGER NOT NULL, record BLOB NOT NULL);
        INSERT INTO dead_letters (channel, notification_id, user_id, error, attempts, created_ms, dead_ms, record) VALUES
            ('sms', 'n1', 'u', 'old', 1, 1, 1, x''), ('sms', 'n1', 'u', 'new', 1, 1, 2, x''), ('email', 'n1', 'u', 'e', 1, 1, 1, x'');
    """)
    db.commit()
    db.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert sorted((e.channel, e.error) for e in await store.dead_letters(DlqFilter())) == [("email", "e"), ("sms", "new")]
        await store.dead_letter(DeadLetter(0, "sms", "n1", "u", "newest", 1, 1, 3, b""))
        assert sorted((e.channel, e.error) for e in await store.dead_letters(DlqFilter())) == [("email", "e"), ("sms", "newest")]
    finally:
        await store.close()
