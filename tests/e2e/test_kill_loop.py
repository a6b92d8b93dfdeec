"""kill -9 at random moments while notifications flow, several times in a row: nothing lost, duplicates bounded.

Each round starts `herald serve` on the same data directory, streams notifications at it
from 8 concurrent clients and SIGKILLs it after a random delay, mid-stream. After the
last round a final start must deliver every notification that got a 202.

Duplicates are counted where they happen: every provider call is in the node's call log
(<data-dir>/calls/<channel>.jsonl, written before each call; actors/clients/call_log.py),
not in the sandbox files, which take each notification once by themselves. A provider
call beyond one per delivery can only come from a crash between a call and its send
ledger write, and the Provider has at most `provider_max_in_flight` attempts between the
start of a call and the end of its ledger write: at most that many per channel per kill
(docs/reliability.md). The counts (sent, delivered, lost, provider-level duplicates) are
printed.
"""

import json
import random

import httpx
import pytest
import trio

from actors.clients.call_log import count_call_logs
from actors.config import Config
from tests.helpers import all_channels
from tests.process import herald_process

pytestmark = pytest.mark.slow

ROUNDS = 3


async def test_repeated_kill_9_while_streaming_loses_nothing(tmp_path):
    data = tmp_path / "data"
    rng = random.Random(20261125)
    accepted: dict[str, str] = {}
    attempted = 0
    for round_no in range(ROUNDS):
        async with herald_process(data) as server:
            headers = {"Authorization": f"Bearer {server.api_key}"}
            async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as client:

                async def stream(worker: int) -> None:
                    nonlocal attempted
                    for i in range(10_000):  # bounded; the kill ends it long before
                        user = f"r{round_no}w{worker}u{i % 5}"
                        attempted += 1
                        try:
                            response = await client.post("/v1/notifications", json=all_channels(user))
                        except httpx.TransportError:
                            return  # the server is gone
                        if response.status_code == 202:
                            accepted[response.json()["notification_id"]] = user

                async with trio.open_nursery() as nursery:
                    for worker in range(8):
                        nursery.start_soon(stream, worker)
                    await trio.sleep(rng.uniform(0.5, 2.0))
                    server.kill9()
                    await server.process.wait()
    assert accepted, "nothing was accepted before the kills"
    async with herald_process(data) as server:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as client:
            pending = set(accepted)
            with trio.move_on_after(120):
                while pending:
                    for nid in list(pending):
                        body = (await client.get(f"/v1/notifications/{nid}")).json()
                        states = {c: s["status"] for c, s in body.get("channels", {}).items()}
                        if all(states.get(c) == "delivered" for c in ("email", "sms", "push")):
                            pending.discard(nid)
                    await trio.sleep(0.2)
            circuits = (await client.get("/v1/admin/circuits")).json()["circuits"]
            suppressed = sum(c["suppressed_duplicates"] for c in circuits)
    emails = {p.stem for p in (data / "outbox").glob("*.eml")}
    sms_ids = {json.loads(line)["notification_id"] for line in (data / "sms.jsonl").read_text().splitlines()}
    push_ids = {json.loads(line)["notification_id"] for line in (data / "push.jsonl").read_text().splitlines()}
    lost = {nid for nid in accepted if nid not in emails or nid not in sms_ids or nid not in push_ids}
    calls = count_call_logs(data)
    duplicates = {channel: c.duplicates for channel, c in calls.items()}
    print(
        f"kill -9 x{ROUNDS}: attempted={attempted} sent={len(accepted)} delivered={len(accepted) - len(lost)} "
        f"lost={len(lost)} not_final={len(pending)} provider_calls={sum(c.calls for c in calls.values())} "
        f"provider_duplicates={sum(duplicates.values())} {duplicates} "
        f"(after a sent answer {sum(c.after_sent for c in calls.values())}, "
        f"after a call the kill interrupted {sum(c.after_unanswered for c in calls.values())}) "
        f"bound={ROUNDS} x provider_max_in_flight per channel; redeliveries_stopped_by_ledger={suppressed}"
    )
    assert not lost
    assert not pending
    for channel, counts in calls.items():
        # every accepted notification's call is in the log (and those on the bus whose 202 the kill cut off)
        assert counts.deliveries >= len(accepted), (channel, counts)
        # at each kill, at most max_in_flight calls per provider between their start and their ledger write
        assert counts.duplicates <= ROUNDS * Config().provider_max_in_flight[channel], (channel, counts)
