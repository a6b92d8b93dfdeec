"""Ingress answers concurrent submissions with one bus append and one Recorder round trip, each its own receipt."""

from __future__ import annotations

from typing import Any

import msgspec
import trio

from actors.ingress import Ingress
from actors.messages import IngressMessage, RecordEvents, RecorderMessage, Submit, SubmitBatch
from protocol.api import NotificationRequest, Receipt
from protocol.problems import Problem
from reactor.ask import Reply
from reactor.mailbox import Mailbox


class RecordingBus:
    """The one Bus operation Ingress uses, recording each call."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, bytes, bytes]]] = []

    async def produce(self, items: list[tuple[str, bytes, bytes]]) -> list[int]:
        await trio.lowlevel.checkpoint()
        self.calls.append(list(items))
        return list(range(len(items)))


def request(user: str, content: dict[str, Any] | None = None) -> NotificationRequest:
    body = {"user_id": user, "channels": ["web"], "content": {"web": {"title": "t", "body": "b"}} if content is None else content}
    return msgspec.convert(body, NotificationRequest)


async def serve_recorder(mailbox: Mailbox[RecorderMessage], seen: list[RecordEvents]) -> None:
    async for message in mailbox:
        assert isinstance(message, RecordEvents)
        seen.append(message)
        if message.reply is not None:
            message.reply.send(None)


async def test_submissions_waiting_together_share_one_append_and_one_record_round_trip() -> None:
    bus = RecordingBus()
    inbox: Mailbox[IngressMessage] = Mailbox("ingress", 100)
    recorder: Mailbox[RecorderMessage] = Mailbox("recorder", 100)
    ingress = Ingress(bus, inbox, recorder, workers=1)  # type: ignore[arg-type]
    records: list[RecordEvents] = []
    singles = [Reply[Receipt | Problem]() for _ in range(5)]
    batch_reply = Reply[list[Receipt | Problem]]()
    bad = Reply[Receipt | Problem]()
    for i, reply in enumerate(singles[:3]):
        await inbox.send(Submit(request(f"u{i}"), reply))
    await inbox.send(Submit(request("u-bad", content={}), bad))  # no web part: its own 422, the others go on
    await inbox.send(SubmitBatch((request("b0"), request("b1")), batch_reply))
    for i, reply in enumerate(singles[3:], start=3):
        await inbox.send(Submit(request(f"u{i}"), reply))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_recorder, recorder, records)
        await nursery.start(ingress.run)
        receipts = [await reply.wait() for reply in singles]
        batch = await batch_reply.wait()
        refused = await bad.wait()
        nursery.cancel_scope.cancel()
    assert all(isinstance(r, Receipt) for r in [*receipts, *batch])
    ids = [r.notification_id for r in [*receipts, *batch] if isinstance(r, Receipt)]
    assert len(set(ids)) == 7
    assert isinstance(refused, Problem) and refused.status == 422
    assert len(bus.calls) == 1 and len(bus.calls[0]) == 7  # one append: every accepted record, none of the refused one
    assert len(records) == 1  # one Recorder round trip: accepted + queued of each
    assert sorted({e.notification_id for e in records[0].events}) == sorted(ids)
    assert len(records[0].events) == 14
    assert records[0].fresh  # new ids: the Recorder plans them without reading their (absent) stored state
    assert ingress.coalesced == 6  # the first message brought the six behind it
    # each caller got its own notification: the users on the bus match the receipts in order
    users = [key.decode() for _, key, _ in bus.calls[0]]
    assert users == ["u0", "u1", "u2", "b0", "b1", "u3", "u4"]


async def test_a_failing_append_fails_every_submission_of_its_group() -> None:
    class BrokenBus(RecordingBus):
        async def produce(self, items: list[tuple[str, bytes, bytes]]) -> list[int]:
            raise OSError("disk gone")

    inbox: Mailbox[IngressMessage] = Mailbox("ingress", 100)
    recorder: Mailbox[RecorderMessage] = Mailbox("recorder", 100)
    ingress = Ingress(BrokenBus(), inbox, recorder, workers=1)  # type: ignore[arg-type]
    replies = [Reply[Receipt | Problem]() for _ in range(3)]
    for i, reply in enumerate(replies):
        await inbox.send(Submit(request(f"u{i}"), reply))
    failures = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(ingress.run)
    except BaseException as exc:  # the worker re-raises: its supervisor restarts it
        failures.append(exc)
    assert failures
    for reply in replies:
        assert reply.done
        try:
            await reply.wait()
        except OSError as exc:
            assert "disk gone" in str(exc)
        else:
            raise AssertionError("a submission of a failed append was answered")


async def test_a_request_whose_planning_breaks_fails_alone_and_leaves_nothing_in_the_append() -> None:
    class Fragile(Ingress):
        async def plan(self, request: NotificationRequest, batch: Any, **kw: Any) -> Receipt | Problem:
            if request.user_id == "boom":
                batch.items.append(("herald.web", b"boom", b"half-planned"))  # an error after part of its records
                raise RuntimeError("a bug in planning")
            return await super().plan(request, batch, **kw)

    bus = RecordingBus()
    inbox: Mailbox[IngressMessage] = Mailbox("ingress", 100)
    recorder: Mailbox[RecorderMessage] = Mailbox("recorder", 100)
    ingress = Fragile(bus, inbox, recorder, workers=1)  # type: ignore[arg-type]
    records: list[RecordEvents] = []
    replies = {user: Reply[Receipt | Problem]() for user in ("u0", "boom", "u1")}
    for user, reply in replies.items():
        await inbox.send(Submit(request(user), reply))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_recorder, recorder, records)
        await nursery.start(ingress.run)
        answers = {user: await reply.wait() for user, reply in replies.items()}
        nursery.cancel_scope.cancel()
    assert isinstance(answers["u0"], Receipt) and isinstance(answers["u1"], Receipt)
    assert isinstance(answers["boom"], Problem) and answers["boom"].status == 500
    assert [key for _, key, _ in bus.calls[0]] == [b"u0", b"u1"]  # none of the broken request's records


async def test_with_the_bus_known_away_a_send_is_refused_unwritten_and_a_topic_send_coalesced_with_it_still_stands() -> None:
    from reactor.port_health import PortHealth
    from reactor.ports import PortUnavailable

    class Topics:
        def __init__(self) -> None:
            self.jobs: list[str] = []

        async def accept(self, nid: str, request: NotificationRequest) -> None:
            self.jobs.append(nid)

    bus = RecordingBus()
    health = PortHealth()
    health.failed("bus", "append not acknowledged in time")
    inbox: Mailbox[IngressMessage] = Mailbox("ingress", 100)
    recorder: Mailbox[RecorderMessage] = Mailbox("recorder", 100)
    topics = Topics()
    ingress = Ingress(bus, inbox, recorder, workers=1, topics=topics, health=health)  # type: ignore[arg-type]
    send, topic_send = Reply[Receipt | Problem](), Reply[Receipt | Problem]()
    topic_body = {"topic": "news", "channels": ["web"], "content": {"web": {"title": "t", "body": "b"}}}
    await inbox.send(Submit(request("u1"), send))
    await inbox.send(Submit(msgspec.convert(topic_body, NotificationRequest), topic_send))
    records: list[RecordEvents] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_recorder, recorder, records)
        await nursery.start(ingress.run)
        try:
            await send.wait()
            raise AssertionError("accepted with the bus away")
        except PortUnavailable as exc:
            assert "bus unavailable" in str(exc)
        receipt = await topic_send.wait()  # durable in the Store: its receipt is true
        assert isinstance(receipt, Receipt) and topics.jobs == [receipt.notification_id]
        assert bus.calls == [] and records == []  # nothing of the refused send written
        inbox.close()
        recorder.close()


async def test_a_batchs_items_are_accepted_at_one_time_read_once() -> None:
    """A batch (or a coalesced group) reads the wall clock once: its items share their created_ms, and their ids count
    up within that millisecond (sorted as they were given), however long planning them takes."""
    from reactor.clock import OsWallClock, use_wall_clock

    reads = iter(range(1_800_000_000_000_000_000, 1_900_000_000_000_000_000, 7_000_000))  # +7 ms a read
    use_wall_clock(OsWallClock(lambda: next(reads)))
    bus = RecordingBus()
    recorder: Mailbox[RecorderMessage] = Mailbox("recorder", 100)
    ingress = Ingress(bus, Mailbox("ingress", 100), recorder, workers=1)  # type: ignore[arg-type]
    records: list[RecordEvents] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_recorder, recorder, records)
        results = await ingress.accept_batch([request(f"u{i}") for i in range(20)])
        nursery.cancel_scope.cancel()
    ids = [r.notification_id for r in results if isinstance(r, Receipt)]
    assert len(ids) == 20 and ids == sorted(ids)
    created = {e.created_ms for e in records[0].events}
    assert created == {1_800_000_000_000}
