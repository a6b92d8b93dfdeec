"""A process that writes through a group-committed store or sink from many tasks until it is killed.

    python tests/durability/crash_writer.py ledger|logstore|sms|email <dir>

Each task writes ids of its own, one after another; after each write returns (acknowledged:
durable, by the contract) it prints the id on stdout. The test kills it with SIGKILL mid-batch
and checks that every id printed is on disk. Run by tests/durability/test_crash_mid_batch.py.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from actors.clients.sandbox import EmailOutbox, JsonLinesSink  # noqa: E402
from actors.recorder import record_events  # noqa: E402
from protocol.channels import Channel, Priority  # noqa: E402
from protocol.content import Content, EmailContent, SmsContent  # noqa: E402
from protocol.ids import make_notification_id  # noqa: E402
from protocol.lifecycle import Status  # noqa: E402
from protocol.messages import Delivery, Sent, StatusEvent  # noqa: E402
from reactor.backends.embedded import SqliteLogStore, SqliteStore  # noqa: E402

T0 = 1_704_067_200_000
WRITERS = 32
LINGER_S = 0.002


def nid(i: int) -> str:
    return make_notification_id(T0 + i, i)


async def main(mode: str, directory: Path) -> None:
    if mode == "ledger":
        store = SqliteStore(directory / "store.sqlite3", LINGER_S)
        await store.open()

        async def write(i: int) -> None:
            await store.mark_sent(nid(i), "sms", "delivered", T0)
    elif mode == "logstore":
        logs = SqliteLogStore(directory / "logs.sqlite3", LINGER_S)
        await logs.open()

        async def write(i: int) -> None:
            event = StatusEvent(nid(i), f"u{i % 7}", Channel.SMS, Status.DELIVERED, T0 + i, created_ms=T0, priority=Priority.HIGH)
            await record_events(logs, [event])
    elif mode == "sms":
        sink = JsonLinesSink(directory / "sms.jsonl", "sms", LINGER_S)

        async def write(i: int) -> None:
            delivery = Delivery(nid(i), "u1", Channel.SMS, T0, Content(sms=SmsContent(f"code {i}")), address="+15555550100")
            assert isinstance(await sink.send(delivery), Sent)
    elif mode == "email":
        outbox = EmailOutbox(directory / "outbox", "Herald <h@example.org>", LINGER_S)

        async def write(i: int) -> None:
            content = Content(email=EmailContent(f"Hi {i}", text="hello"))
            delivery = Delivery(nid(i), "u1", Channel.EMAIL, T0, content, address="a@example.org")
            assert isinstance(await outbox.send(delivery), Sent)
    else:
        raise SystemExit(f"unknown mode {mode!r}")

    async def writer(w: int) -> None:
        for k in itertools.count():
            i = w + WRITERS * k
            await write(i)
            sys.stdout.write(f"{i}\n")
            sys.stdout.flush()

    async with trio.open_nursery() as nursery:
        for w in range(WRITERS):
            nursery.start_soon(writer, w)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], Path(sys.argv[2]))
