"""Provider calls are counted where they happen (actors/clients/call_log.py), so a duplicate cannot hide.

The sandbox files cannot show a duplicate send: the SMS and push sinks take a
notification id once and the outbox replaces an .eml. The call log counts the calls
themselves. `test_a_deliberately_re_sent_delivery_is_counted` re-sends on purpose: it
rewinds every consumer group to offset 0, and once with the send ledger kept (the
redeliveries are suppressed: no duplicate) and once with it wiped (every delivery is
sent again: one duplicate per notification and channel, while the files still show each
id once).
"""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3

import trio

from actors.clients.call_log import CallLog, CountedClient, call_log_path, count_call_logs, count_calls, read_lines
from protocol.channels import LANES, Channel
from protocol.content import Content, SmsContent
from protocol.messages import Delivery, PermanentFailure, RetryLater, Sent
from reactor.clock import wall_ms
from tests.helpers import all_channels, http, running_node, wait_final

LEDGERED = (Channel.EMAIL, Channel.SMS, Channel.PUSH)


def three_channels(user: str) -> dict:
    """Email, SMS and push: the channels the send ledger covers (a web push is pushed again by design)."""
    body = all_channels(user)
    return {**body, "channels": ["email", "sms", "push"], "content": {k: v for k, v in body["content"].items() if k != "web"}}


def call(n: int, nid: str = "n1", channel: str = "sms") -> dict:
    return {"call": f"b-{n}", "nid": nid, "channel": channel, "attempt": 1}


def answer(n: int, result: str, nid: str = "n1", channel: str = "sms") -> dict:
    return {"answer": f"b-{n}", "nid": nid, "channel": channel, "result": result}


def test_calls_after_a_sent_or_unanswered_call_are_duplicates_calls_after_failures_are_retries():
    once = count_calls([call(1), answer(1, "sent")])
    assert (once.calls, once.deliveries, once.duplicates, once.retries) == (1, 1, 0, 0)
    retried = count_calls([call(1), answer(1, "retry"), call(2), answer(2, "failed"), call(3), answer(3, "sent")])
    assert (retried.calls, retried.deliveries, retried.duplicates, retried.retries) == (3, 1, 0, 2)
    twice = count_calls([call(1), answer(1, "sent"), call(2), answer(2, "sent")])
    assert (twice.duplicates, twice.after_sent, twice.after_unanswered, twice.deliveries) == (1, 1, 0, 1)
    # the process died during call 1: the provider may have taken it
    interrupted = count_calls([call(1), call(2), answer(2, "sent")])
    assert (interrupted.duplicates, interrupted.after_unanswered, interrupted.unanswered) == (1, 1, 1)
    # other notifications and channels are their own deliveries; a torn line is counted, not read
    mixed = count_calls([call(1), answer(1, "sent"), call(2, "n2"), answer(2, "sent", "n2"), call(3, "n1", "push"),
                         None, answer(3, "sent", "n1", "push")])
    assert (mixed.calls, mixed.deliveries, mixed.duplicates, mixed.unreadable) == (3, 3, 0, 1)


async def test_every_call_and_answer_is_logged_before_and_after_and_a_torn_line_stays_apart(tmp_path):
    path = call_log_path(tmp_path, "sms")
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"call":"old-1","nid":"n0","channel":"sms","attem')  # torn by a kill -9 mid-line

    class Scripted:
        def __init__(self) -> None:
            self.outcomes = [RetryLater("busy"), Sent(), PermanentFailure("bad number")]
            self.lines_at_call: list[int] = []

        async def send(self, delivery):
            self.lines_at_call.append(len(path.read_bytes().splitlines()))  # the call line is there before the call
            if not self.outcomes:
                raise ValueError("boom")
            return self.outcomes.pop(0)

    inner = Scripted()
    client = CountedClient("sms", inner, CallLog(path))
    delivery = Delivery("n1", "u1", Channel.SMS, wall_ms(), Content(sms=SmsContent("hi")), address="+15555550100")
    assert isinstance(await client.send(delivery), RetryLater)
    assert isinstance(await client.send(delivery), Sent)
    assert isinstance(await client.send(delivery), PermanentFailure)
    try:
        await client.send(delivery)
    except ValueError:
        pass
    assert inner.lines_at_call == [2, 4, 6, 8]
    entries = list(read_lines([path]))
    assert entries[0] is None  # the torn line, on its own
    assert [e.get("result") for e in entries[1:] if e and "answer" in e] == ["retry", "sent", "failed", "raised ValueError"]
    counts = count_calls(entries)
    assert (counts.calls, counts.retries, counts.after_sent, counts.unreadable) == (4, 1, 2, 1)
    fresh = CallLog(call_log_path(tmp_path, "push"))
    fresh.append(call(1, channel="push"))
    assert fresh.path.stat().st_mode & 0o777 == 0o600  # created private, not chmod-ed after
    shutil.rmtree(fresh.path.parent)  # a user cleaning up the logs while the node runs
    fresh.append(call(2, channel="push"))
    assert count_calls(read_lines([fresh.path])).calls == 1


async def settled(herald) -> bool:
    """Every record of the ledgered channels processed and committed, and no retry pending."""
    if await herald.store.scheduled():
        return False
    for channel in LEDGERED:
        for lane, partition in itertools.product(LANES, range(herald.config.partitions_of(channel))):
            committed = await herald.bus.committed(f"herald-{channel.value}", channel.topic(lane), partition)
            if committed != await herald.bus.end_offset(channel.topic(lane), partition):
                return False
    return True


async def wait_settled_and_rewind(herald) -> None:
    """Make the next start redeliver every record of email, SMS and push, as after a crash before every commit."""
    with trio.fail_after(30):
        while not await settled(herald):
            await trio.sleep(0.05)
    for channel in LEDGERED:
        for lane, partition in itertools.product(LANES, range(herald.config.partitions_of(channel))):  # every lane's
            await herald.bus.commit(f"herald-{channel.value}", channel.topic(lane), partition, 0)


async def test_a_deliberately_re_sent_delivery_is_counted(tmp_path):
    n = 8
    data = tmp_path / "data"
    async with running_node(tmp_path) as herald, http(herald) as client:
        ids = [(await client.post("/v1/notifications", json=three_channels(f"user{i}"))).json()["notification_id"] for i in range(n)]
        for nid in ids:
            body = await wait_final(client, nid)
            assert {c: s["status"] for c, s in body["channels"].items()} == dict.fromkeys(["email", "sms", "push"], "delivered")
        await wait_settled_and_rewind(herald)
    first = count_call_logs(data)
    assert all((c.calls, c.deliveries, c.duplicates) == (n, n, 0) for c in first.values()), first

    # redelivered with the ledger: suppressed before the provider, so not one more call
    async with running_node(tmp_path) as herald:
        with trio.fail_after(30):
            while not await settled(herald) or sum(herald.providers[c].suppressed for c in LEDGERED) < 3 * n:
                await trio.sleep(0.05)
        await wait_settled_and_rewind(herald)
    kept = count_call_logs(data)
    assert kept == first, kept

    # redelivered with the ledger wiped: every delivery is sent again, and counted
    with sqlite3.connect(data / "store.sqlite3") as db:
        assert db.execute("DELETE FROM send_ledger").rowcount == 3 * n
    async with running_node(tmp_path) as herald:
        with trio.fail_after(30):
            while not await settled(herald) or sum(c.calls for c in count_call_logs(data).values()) < 6 * n:
                await trio.sleep(0.05)
    wiped = count_call_logs(data)
    print("re-sent on purpose: " + "; ".join(f"{c}: {counts.line()}" for c, counts in wiped.items()))
    for counts in wiped.values():
        assert (counts.calls, counts.deliveries, counts.duplicates, counts.after_sent) == (2 * n, n, n, n)
    # ...which the sandbox files cannot show: the sinks take an id once, the outbox replaces an .eml
    for sink in ("sms", "push"):
        sent = [json.loads(line)["notification_id"] for line in (data / f"{sink}.jsonl").read_text().splitlines()]
        assert sorted(sent) == sorted(ids)
    assert sorted(p.stem for p in (data / "outbox").glob("*.eml")) == sorted(ids)


async def test_concurrent_calls_each_line_is_written_before_its_call_with_no_await_between_and_none_is_lost(tmp_path):
    """The call line is written in the event loop at once (actors/clients/call_log.py): between the Provider's gate
    admission and the call there is not a single await (a thread hop there let calls start under an open breaker)."""
    path = call_log_path(tmp_path, "sms")
    calls = CallLog(path)
    awaited_before_call: list[bool] = []

    class Checking:
        async def send(self, delivery):
            lines = [json.loads(raw) for raw in path.read_bytes().splitlines()]
            assert any(e.get("nid") == delivery.notification_id and "call" in e for e in lines)  # its call line came first
            awaited_before_call.append(stepped[delivery.notification_id])
            await trio.sleep(0.01)
            return Sent()

    class Instrumented(trio.abc.Instrument):
        def before_task_step(self, task):
            current = names.get(task)
            if current is not None:
                stepped[current] = True

    names: dict[object, str] = {}
    stepped: dict[str, bool] = {}
    client = CountedClient("sms", Checking(), calls)
    outcomes: list[object] = []

    async def one(i: int) -> None:
        d = Delivery(f"n{i}", f"u{i}", Channel.SMS, wall_ms(), Content(sms=SmsContent("hi")), address="+15555550100")
        await trio.lowlevel.checkpoint()
        names[trio.lowlevel.current_task()] = d.notification_id
        stepped[d.notification_id] = False  # from here (the gate's admission) to the inner call: no task step
        outcomes.append(await client.send(d))

    trio.lowlevel.add_instrument(Instrumented())
    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(one, i)
    assert len(outcomes) == 50 and all(isinstance(o, Sent) for o in outcomes)
    assert awaited_before_call == [False] * 50
    counts = count_calls(read_lines([path]))
    assert (counts.calls, counts.deliveries, counts.unanswered) == (50, 50, 0)

    # a call whose line cannot be written is not made: an OSError, which the Provider takes as RetryLater
    class Never:
        async def send(self, delivery):
            raise AssertionError("called although its call line was not written")

    shutil.rmtree(path.parent)
    path.parent.parent.joinpath("calls").write_bytes(b"")  # a file where the folder should be: every write fails
    broken = CountedClient("sms", Never(), CallLog(path))
    d = Delivery("nx", "ux", Channel.SMS, wall_ms(), Content(sms=SmsContent("hi")), address="+15555550100")
    try:
        await broken.send(d)
    except OSError:
        pass
    else:
        raise AssertionError("no OSError")
