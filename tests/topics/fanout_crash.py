"""A topic of N subscribers, its fan-out killed (kill -9 of `herald serve`) mid-way and resumed: the figures.

Shared by the suite's check (tests/topics/test_fanout_kill.py, N = 20,000) and the benchmark
(loadtests/topic_fanout.py, N = 100,000). Steps:

1. each user's phone goes into the node's user store before it starts, in one transaction (the
   embedded UserStore's file; 100,000 preference PUTs would measure the preferences route);
2. `herald serve` starts; the subscribers are PUT in batches of 1,000 (timed);
3. one topic send on the sms channel (the sandbox sink); its status is polled until the
   fan-out has expanded `kill_at` of the subscribers, then the process gets SIGKILL;
   (the sandbox SMS provider's rate limit lifted: the fan-out and the pipeline are measured, not Twilio's 100/s);
4. `herald serve` starts again on the same data dir: the fan-out resumes from its checkpoint;
   the run waits (bounded) for every subscriber's copy to be answered `sent` in the call log.

Counted in the call log (<data-dir>/calls/sms.jsonl, written before each provider call),
per subscriber's notification id: `missing` has no call answered sent, `duplicates` are
calls after one answered sent (what the re-expansion of a batch would make without the
ledger), `in_flight_again` calls after one the kill left unanswered (the provider may or may
not have taken it: the documented crash window, docs/reliability.md, at most
provider_max_in_flight per kill), `strangers` calls of no subscriber's copy.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from actors.clients.call_log import call_log_path, read_lines
from protocol.preferences import ContactPoints, Preferences
from protocol.topics import MAX_SUBSCRIBERS_PER_CALL, member_notification_id
from tests.process import herald_process

TOPIC = "everyone"
# The sandbox SMS provider's own rate limit (100/s, Twilio's) would be what is measured: lifted.
# With the provider down before the kill, its failed calls are retried (up to 50 attempts, at most 2 s apart) and
# its breaker probes again after 1 s.
ENV = {"HERALD_LIMITS": "sms.capacity=1000000,sms.refill_per_s=1000000,sms.open_timeout_s=1", "HERALD_MAX_ATTEMPTS": "50",
       "HERALD_RETRY_MAX_S": "2"}


@dataclass
class CrashFigures:
    subscribers: int
    subscribe_s: float  # PUT of every subscriber, in batches of 1,000
    expanded_at_kill: int
    expand_s: float  # from the 202 to the fan-out's `done`, the restart included
    deliver_s: float  # from the 202 to the last subscriber's copy answered sent
    calls: int
    delivered: int  # subscribers whose copy was answered sent
    missing: int
    duplicates: int  # calls after a sent answer
    in_flight_again: int  # calls after an unanswered one (the kill's in-flight window)
    strangers: int
    status: dict[str, Any]

    def line(self) -> str:
        return (f"subscribers={self.subscribers} subscribe_s={self.subscribe_s:.2f} ({self.subscribers / self.subscribe_s:,.0f}/s) "
                f"killed_at_expanded={self.expanded_at_kill} expand_s={self.expand_s:.1f} "
                f"expanded_per_s={self.subscribers / self.expand_s:,.0f} deliver_s={self.deliver_s:.1f} "
                f"deliveries={self.delivered} provider_calls={self.calls} duplicates={self.duplicates} missing={self.missing} "
                f"in_flight_again={self.in_flight_again} strangers={self.strangers}")


def user_ids(n: int) -> list[str]:
    return [f"sub-{i:07d}" for i in range(n)]


def seed_phones(data_dir: Path, users: list[str]) -> None:
    """Each user's preferences (a phone) written straight into the embedded user store, in one transaction."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / "users.sqlite3"
    path.touch(mode=0o600)  # as private as the node makes its own files
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS preferences (user_id TEXT PRIMARY KEY, document BLOB NOT NULL, updated_ms INTEGER NOT NULL)")
        db.execute("BEGIN")
        db.executemany(
            "INSERT OR REPLACE INTO preferences (user_id, document, updated_ms) VALUES (?, ?, 0)",
            ((u, msgspec.json.encode(Preferences(contact=ContactPoints(phone=f"+1555{i % 10_000_000:07d}")))) for i, u in enumerate(users)),
        )
        db.execute("COMMIT")
    finally:
        db.close()


def call_counts(data_dir: Path, expected: set[str]) -> tuple[int, set[str], int, int, int]:
    """(calls, nids answered sent, calls after a sent answer, calls after an unanswered one, calls of no expected nid)."""
    answers: dict[str, str] = {}
    calls_of: dict[str, list[str]] = {}
    calls = after_sent = after_unanswered = strangers = 0
    for entry in read_lines([call_log_path(data_dir, "sms")]):
        if entry is None:
            continue
        if "answer" in entry:
            answers[str(entry["answer"])] = str(entry.get("result"))
            continue
        if "call" not in entry:
            continue
        calls += 1
        nid = str(entry["nid"])
        if nid not in expected:
            strangers += 1
        before = [answers.get(c) for c in calls_of.get(nid, [])]
        if "sent" in before:
            after_sent += 1
        elif None in before:
            after_unanswered += 1
        calls_of.setdefault(nid, []).append(str(entry["call"]))
    sent = {nid for nid, ids in calls_of.items() if any(answers.get(c) == "sent" for c in ids)}
    return calls, sent, after_sent, after_unanswered, strangers


async def _status(client: httpx.AsyncClient, nid: str) -> dict[str, Any]:
    response = await client.get(f"/v1/notifications/{nid}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def run_crash(
    data_dir: Path, n: int, *, kill_at: float = 0.5, timeout_s: float = 600, progress: bool = False, provider_down: bool = False,
) -> CrashFigures:
    """`provider_down`: the sandbox SMS provider fails every call (retryable) until the kill, so no delivery is in
    flight when it comes: every provider call answered `sent` is then made after the restart, and "exactly one per
    subscriber" is exact. Without it, deliveries run during the kill, and the calls it cuts off may be made again
    (the crash window every delivery has, docs/reliability.md): `in_flight_again`, and `duplicates` for a call answered
    before its send-ledger write was durable."""
    users = user_ids(n)
    await trio.to_thread.run_sync(seed_phones, data_dir, users)
    async with herald_process(data_dir, env=ENV) as server:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
            started = time.perf_counter()
            batches = [users[i : i + MAX_SUBSCRIBERS_PER_CALL] for i in range(0, n, MAX_SUBSCRIBERS_PER_CALL)]

            async def put(batch: list[str]) -> None:
                response = await client.put(f"/v1/topics/{TOPIC}/subscribers", json={"user_ids": batch})
                assert response.status_code == 200, response.text

            for start in range(0, len(batches), 4):  # four calls at a time
                async with trio.open_nursery() as nursery:
                    for batch in batches[start : start + 4]:
                        nursery.start_soon(put, batch)
            subscribe_s = time.perf_counter() - started
            if provider_down:
                down = await client.put("/v1/admin/sandbox/faults/sms", json={"error_rate": 1, "kind": "retryable"})
                assert down.status_code == 200, down.text
            listed = await client.get(f"/v1/topics/{TOPIC}/subscribers", params={"limit": "1"})
            assert listed.json()["user_ids"] == [users[0]]
            send = {"topic": TOPIC, "channels": ["sms"], "content": {"sms": {"text": "Release 2.0 is out"}}, "priority": "low"}
            response = await client.post("/v1/notifications", json=send)
            assert response.status_code == 202, response.text
            sent_at = time.perf_counter()
            nid = response.json()["notification_id"]
            expanded = 0
            with trio.fail_after(timeout_s):
                while expanded < kill_at * n:
                    expanded = (await _status(client, nid))["expanded"]
                    await trio.sleep(0.02)
            server.kill9()
            await server.process.wait()
            if progress:
                print(f"killed at {expanded} of {n} expanded ({time.perf_counter() - sent_at:.1f} s after the 202)", flush=True)
    expected = {member_notification_id(nid, u) for u in users}
    async with herald_process(data_dir, env=ENV) as server:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
            status: dict[str, Any] = {}
            with trio.fail_after(timeout_s):
                while not status.get("final"):
                    status = await _status(client, nid)
                    await trio.sleep(0.05)
                expand_s = time.perf_counter() - sent_at
                if progress:
                    print(f"fan-out done {expand_s:.1f} s after the 202: {status}", flush=True)
                while True:
                    calls, delivered, after_sent, again, strangers = await trio.to_thread.run_sync(call_counts, data_dir, expected)
                    if len(delivered & expected) == n:
                        break
                    if progress:
                        print(f"  {len(delivered)} of {n} delivered", flush=True)
                    await trio.sleep(1)
            deliver_s = time.perf_counter() - sent_at
            await trio.sleep(1)  # anything that would come twice comes in this second too
            calls, delivered, after_sent, again, strangers = await trio.to_thread.run_sync(call_counts, data_dir, expected)
    return CrashFigures(
        subscribers=n, subscribe_s=subscribe_s, expanded_at_kill=expanded, expand_s=expand_s, deliver_s=deliver_s, calls=calls,
        delivered=len(delivered & expected), missing=len(expected - delivered), duplicates=after_sent, in_flight_again=again,
        strangers=strangers, status=status,
    )
