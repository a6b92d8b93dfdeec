"""The delivery path's durable writes, per write vs group-committed, with 1, 16 and 256 concurrent callers.

    .venv/bin/python loadtests/durability_bench.py                 # sms and email, 3 s per phase
    .venv/bin/python loadtests/durability_bench.py --duration 5 --callers 1,16,256 --linger-ms 2

In-process (imports Herald), on local disk in a temporary folder. Each caller plays a
Provider attempt and its consumer, one delivery after another (new notification ids):

    ledger read (Store.sent_status) -> sandbox send (JsonLinesSink / EmailOutbox)
    -> ledger write (Store.mark_sent) -> the outcome recorded (RecordEvents to a running
    Recorder, answered once the log store's transaction is durable)

Two modes, measured alternately in the same run on fresh files:

- per-write: what the tree did before group commit: the ledger's INSERT in a transaction
  of its own, the sink's append or the outbox's file synced by itself
  (reactor/files.write_atomically), the Recorder taking what is queued with no linger;
- grouped: Store.mark_sent and the sinks through reactor/group_commit.py, the Recorder
  lingering `--linger-ms`.

Printed per phase: deliveries/s, durable syncs per delivery (ledger commits + Recorder
transactions + the sink's os.fsync calls, files and folders), the CPU of this process per
delivery, and the ratio grouped / per-write. SQLite's commits are counted as syncs (each one
fsync of the WAL at synchronous=FULL). The bus (the consumer's offsets) is not in this path.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.clients.sandbox import EmailOutbox, JsonLinesSink  # noqa: E402
from actors.messages import RecordEvents  # noqa: E402
from actors.recorder import Recorder  # noqa: E402
from protocol.channels import Channel, Priority  # noqa: E402
from protocol.content import Content, EmailContent, SmsContent  # noqa: E402
from protocol.ids import make_notification_id  # noqa: E402
from protocol.lifecycle import Status  # noqa: E402
from protocol.messages import Delivery, Sent, StatusEvent  # noqa: E402
from reactor.ask import Reply  # noqa: E402
from reactor.backends.embedded import SqliteLogStore, SqliteStore  # noqa: E402
from reactor.files import write_atomically  # noqa: E402
from reactor.mailbox import Mailbox  # noqa: E402

T0 = 1_704_067_200_000


class Syncs:
    """os.fsync, counted."""

    def __init__(self) -> None:
        self.files = 0
        self.folders = 0
        self._real = os.fsync

    def __call__(self, fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            self.folders += 1
        else:
            self.files += 1
        self._real(fd)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def delivery(channel: str, i: int) -> Delivery:
    nid = make_notification_id(T0 + i, i)
    if channel == "email":
        return Delivery(nid, "u1", Channel.EMAIL, T0, Content(email=EmailContent(f"Code {i}", text="hello")), address="a@example.org")
    return Delivery(nid, "u1", Channel.SMS, T0, Content(sms=SmsContent(f"code {i}")), address="+15555550100")


async def phase(channel: str, grouped: bool, callers: int, duration: float, linger_s: float, syncs: Syncs) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="herald-durability-", dir=os.environ.get("BENCH_DIR")))
    store = SqliteStore(workdir / "store.sqlite3", linger_s if grouped else 0.0)
    logs = SqliteLogStore(workdir / "logs.sqlite3")
    await store.open()
    await logs.open()
    mailbox: Mailbox[Any] = Mailbox("recorder", 4096)
    recorder = Recorder(logs, mailbox, batch=2000, linger_s=linger_s if grouped else 0.0)
    client: Any = (
        EmailOutbox(workdir / "outbox", "Herald <h@example.org>", linger_s if grouped else 0.0)
        if channel == "email" else JsonLinesSink(workdir / "sms.jsonl", "sms", linger_s if grouped else 0.0)
    )
    ledger_writes = 0

    async def mark_sent(nid: str) -> None:
        nonlocal ledger_writes
        if grouped:
            await store.mark_sent(nid, channel, "delivered", T0)
            return
        ledger_writes += 1  # the INSERT in a transaction of its own, as before
        await store._run(lambda db: db.execute(
            "INSERT OR IGNORE INTO send_ledger (notification_id, channel, at_ms, status) VALUES (?, ?, ?, ?)",
            (nid, channel, T0, "delivered"),
        ))

    async def send(d: Delivery) -> None:
        if grouped:
            assert isinstance(await client.send(d), Sent)
            return
        # as before: the same bytes, synced alone
        if channel == "email":
            from actors.clients.sandbox import build_email, email_bytes

            raw = email_bytes(build_email(d, client.sender, T0))
            await trio.to_thread.run_sync(write_atomically, client.outbox / f"{d.notification_id}.eml", raw)
        else:
            line = f'{{"notification_id":"{d.notification_id}","to":"{d.address}","text":"x"}}\n'.encode()
            await trio.to_thread.run_sync(client._append, line)

    done = 0
    counter = iter(range(10**9))
    stop_at = 0.0

    async def caller() -> None:
        nonlocal done
        while trio.current_time() < stop_at:
            d = delivery(channel, next(counter))
            await store.sent_status(d.notification_id, channel)
            await send(d)
            await mark_sent(d.notification_id)
            reply: Reply[Any] = Reply()
            event = StatusEvent(d.notification_id, d.user_id, d.channel, Status.DELIVERED, T0 + 1, created_ms=T0, priority=Priority.HIGH)
            await mailbox.send(RecordEvents((event,), (), reply))
            await reply.wait()
            done += 1

    syncs.files = syncs.folders = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(recorder.run)
        start, cpu0 = time.monotonic(), cpu_s()
        stop_at = trio.current_time() + duration
        async with trio.open_nursery() as callers_nursery:
            for _ in range(callers):
                callers_nursery.start_soon(caller)
        elapsed, cpu = time.monotonic() - start, cpu_s() - cpu0
        mailbox.close()
    ledger = store.durable_writes if grouped else ledger_writes
    sink_syncs = syncs.files + syncs.folders
    await store.close()
    await logs.close()
    shutil.rmtree(workdir, ignore_errors=True)
    total = ledger + recorder.transactions + sink_syncs
    return {
        "deliveries": done, "per_s": done / elapsed, "syncs_per": total / max(done, 1),
        "ledger_per": ledger / max(done, 1), "recorder_per": recorder.transactions / max(done, 1),
        "sink_per": sink_syncs / max(done, 1), "cpu_ms_per": 1000 * cpu / max(done, 1),
    }


async def main(args: argparse.Namespace) -> None:
    syncs = Syncs()
    os.fsync = syncs  # counted for the whole run (the sinks and reactor/files call os.fsync)
    linger_s = args.linger_ms / 1000
    print(f"delivery path: ledger read, sandbox send, ledger write, Recorder; linger {args.linger_ms} ms; {args.duration} s per phase")
    print(f"{'channel':7} {'callers':>7} {'mode':9} {'deliv/s':>9} {'syncs/deliv':>11} {'(ledger':>8} {'recorder':>8} {'sink)':>7} {'CPU ms/deliv':>12}")
    for channel in args.channels.split(","):
        for callers in [int(c) for c in args.callers.split(",")]:
            results = {}
            for grouped in (False, True):
                r = await phase(channel, grouped, callers, args.duration, linger_s, syncs)
                results[grouped] = r
                mode = "grouped" if grouped else "per-write"
                print(
                    f"{channel:7} {callers:7} {mode:9} {r['per_s']:9.0f} {r['syncs_per']:11.3f} {r['ledger_per']:8.3f}"
                    f" {r['recorder_per']:8.3f} {r['sink_per']:7.3f} {r['cpu_ms_per']:12.3f}"
                )
            before, after = results[False], results[True]
            print(
                f"{'':7} {'':7} {'ratio':9} {after['per_s'] / before['per_s']:8.2f}x"
                f" {after['syncs_per'] / before['syncs_per']:10.3f}x {'':26} {after['cpu_ms_per'] / before['cpu_ms_per']:11.2f}x"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per phase")
    parser.add_argument("--callers", default="1,16,256", help="concurrent callers, comma-separated")
    parser.add_argument("--channels", default="sms,email", help="sms and/or email")
    parser.add_argument("--linger-ms", type=float, default=2.0)
    trio.run(main, parser.parse_args())
