"""A failure of a sandbox client's own I/O is retried with backoff, not dead-lettered as poison.

The SMS sink's file is replaced by a folder and the email outbox folder by a file for a
while; the notifications sent meanwhile fail their first attempts, and are delivered
once the files are back, none dead-lettered and no stage restarted. (Before the fix,
each was dead-lettered after one attempt, and the provider crashes stopped the node.)
"""

from __future__ import annotations

import json

import trio

from tests.faults.support import restarts, wait_status
from tests.helpers import http, running_node


def body(i: int) -> dict:
    return {"user_id": f"io{i}", "channels": ["email", "sms"],
            "content": {"email": {"subject": f"n{i}", "text": "t"}, "sms": {"text": f"n{i}"}},
            "to": {"email": f"io{i}@example.org", "phone": "+15555550100"}}


async def failed_attempts(client, nid: str) -> dict[str, int]:
    status = (await client.get(f"/v1/notifications/{nid}")).json()
    return {ch: sum("failed" in a.get("detail", "") for a in s["attempts"]) for ch, s in status["channels"].items()}


async def test_a_sandbox_file_replaced_by_a_folder_is_retried_and_delivered_afterwards(tmp_path):
    # the breaker opens after 5 failures in a row and defers the rest: a short open period lets them try too
    breaker = {"open_timeout_s": 0.3}
    config = {"max_attempts": 100, "retry_initial_s": 0.05, "retry_max_s": 0.4, "limits": {"email": breaker, "sms": breaker}}
    async with running_node(tmp_path, **config) as herald, http(herald) as client:
        first = (await client.post("/v1/notifications", json=body(0))).json()["notification_id"]
        assert await wait_status(herald, first, "sms") == "delivered"
        sms_file = herald.config.data_dir / "sms.jsonl"
        outbox = herald.config.outbox_dir
        sms_file.rename(tmp_path / "sms.jsonl.away")
        sms_file.mkdir()  # the file is a folder now: every append fails (IsADirectoryError)
        outbox.rename(tmp_path / "outbox.away")
        outbox.write_bytes(b"")  # the outbox folder is a file now: every write fails (NotADirectoryError)

        ids = [(await client.post("/v1/notifications", json=body(i))).json()["notification_id"] for i in range(1, 11)]
        with trio.fail_after(30):  # until every one has failed at least once on both channels
            while min([min((await failed_attempts(client, nid)).values()) for nid in ids]) < 1:
                await trio.sleep(0.05)
        sms_file.rmdir()
        (tmp_path / "sms.jsonl.away").rename(sms_file)
        outbox.unlink()
        (tmp_path / "outbox.away").rename(outbox)

        with trio.fail_after(60):
            for nid in ids:
                for channel in ("email", "sms"):
                    assert await wait_status(herald, nid, channel, 60) == "delivered", (nid, channel)
        failures = [await failed_attempts(client, nid) for nid in ids]
        detail = (await client.get(f"/v1/notifications/{ids[0]}")).json()["channels"]["sms"]["attempts"]
        assert any("sandbox write failed" in a.get("detail", "") for a in detail), detail
        assert await herald.store.dead_letter_count() == 0
        assert sum(restarts(herald).values()) == 0, restarts(herald)
        lines = [json.loads(line) for line in sms_file.read_text().splitlines()]
        assert sorted(line["notification_id"] for line in lines) == sorted([first, *ids])  # each once, none torn
        assert sorted(p.stem for p in outbox.glob("*.eml")) == sorted([first, *ids])
    retries = sum(sum(f.values()) for f in failures)
    print(f"transient I/O: sent={len(ids)} delivered={len(ids)} dead_lettered=0 failed_attempts={retries} restarts=0")
