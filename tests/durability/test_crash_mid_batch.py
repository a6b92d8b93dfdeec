"""kill -9 in the middle of group-committed writes: every write acknowledged before the kill is on disk.

A child process (crash_writer.py) writes from 32 tasks at once through the send ledger, the
log store, the SMS sink or the email outbox, printing each id once its write returned; it is
killed with SIGKILL while batches are in flight. Reopened, the files hold every id printed
(what was never acknowledged may or may not be there) and are whole (the SMS file's torn
tail, if any, is cut by the sink on its next start).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from protocol.ids import make_notification_id
from reactor.backends.embedded import SqliteLogStore, SqliteStore
from tests.durability.crash_writer import T0

pytestmark = pytest.mark.trio

WRITER = Path(__file__).with_name("crash_writer.py")
ACKS_BEFORE_KILL = 300


def nid(i: int) -> str:
    return make_notification_id(T0 + i, i)


async def acknowledged_then_killed(mode: str, directory: Path) -> set[int]:
    """Run the writer until it has acknowledged ACKS_BEFORE_KILL writes, SIGKILL it; every id it acknowledged."""
    acked: set[int] = set()
    buffer = b""
    with trio.fail_after(120):
        process = await trio.lowlevel.open_process(
            [sys.executable, str(WRITER), mode, str(directory)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            async for chunk in process.stdout:
                buffer += chunk
                if buffer.count(b"\n") >= ACKS_BEFORE_KILL:
                    break
            process.send_signal(signal.SIGKILL)  # mid-batch: 32 writers keep a batch in flight all the time
            async for chunk in process.stdout:  # what it printed before it died
                buffer += chunk
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
    assert process.returncode == -signal.SIGKILL, (process.returncode, process.stderr and await process.stderr.receive_some())
    lines = buffer.split(b"\n")
    acked = {int(line) for line in lines[:-1]}  # the last piece may be a line cut by the kill: not acknowledged
    assert len(acked) >= ACKS_BEFORE_KILL
    return acked


async def test_acknowledged_ledger_writes_survive_a_kill_mid_batch(tmp_path: Path) -> None:
    acked = await acknowledged_then_killed("ledger", tmp_path)
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    try:
        missing = [i for i in sorted(acked) if await store.sent_status(nid(i), "sms") != "delivered"]
    finally:
        await store.close()
    assert missing == []


async def test_acknowledged_log_writes_survive_a_kill_mid_batch(tmp_path: Path) -> None:
    acked = await acknowledged_then_killed("logstore", tmp_path)
    store = SqliteLogStore(tmp_path / "logs.sqlite3")
    await store.open()
    try:
        missing = [i for i in sorted(acked) if [r.status for r in await store.statuses(nid(i))] != ["delivered"]]
    finally:
        await store.close()
    assert missing == []


async def test_acknowledged_sms_lines_survive_a_kill_mid_batch(tmp_path: Path) -> None:
    acked = await acknowledged_then_killed("sms", tmp_path)
    data = (tmp_path / "sms.jsonl").read_bytes()
    whole = data[: data.rfind(b"\n") + 1]  # a tail torn by the kill is cut on the sink's next start
    written = [json.loads(line)["notification_id"] for line in whole.splitlines()]
    assert len(written) == len(set(written))  # each once
    assert {nid(i) for i in acked} <= set(written)


async def test_acknowledged_emails_survive_a_kill_mid_batch(tmp_path: Path) -> None:
    acked = await acknowledged_then_killed("email", tmp_path)
    outbox = tmp_path / "outbox"
    for i in acked:
        message = (outbox / f"{nid(i)}.eml").read_bytes()
        assert f"Subject: Hi {i}".encode() in message
