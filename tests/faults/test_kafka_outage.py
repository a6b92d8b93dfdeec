"""Kafka away while a node runs (docs/deploy.md, "What each failure does"): a POST answers 503 fast, /readyz says so.

One private broker for the module (the session's shared one must never be stopped), advertising
the port of a Trio TCP proxy in front of it (tests/tcp_proxy.py): the test blackholes the proxy,
as a Kafka stopped by SIGSTOP looks to its clients, and restores it.
"""

from __future__ import annotations

import logging
import uuid

import pytest
import trio

from actors.clients.call_log import count_call_logs
from protocol.channels import LANES, Channel
from tests.helpers import http, running_node, wait_final
from tests.servers import free_port, kafka_server
from tests.tcp_proxy import open_proxy

DEADLINE_S = 1.0


@pytest.fixture(scope="module")
def kafka_behind_proxy(tmp_path_factory):
    listen = free_port()
    try:
        with kafka_server(tmp_path_factory.mktemp("kafka"), advertised=listen) as server:
            yield server, listen
    except RuntimeError as exc:
        pytest.skip(f"Apache Kafka cannot run here: {exc}")


def sms(user: str) -> dict:
    return {"user_id": user, "channels": ["sms"], "content": {"sms": {"text": "hi"}}, "to": {"phone": "+15555550100"}}


async def sms_records(herald) -> int:
    return sum([await herald.bus.end_offset(Channel.SMS.topic(lane), p) for lane in LANES
                for p in range(herald.config.partitions_of(Channel.SMS))])


async def test_kafka_away_503_fast_readyz_down_and_a_keyed_retry_is_one_notification(kafka_behind_proxy, tmp_path, caplog):
    server, listen = kafka_behind_proxy
    bus = f"kafka://127.0.0.1:{listen}?prefix=t{uuid.uuid4().hex[:8]}.&request_timeout_ms=2000"
    async with open_proxy(server.port, listen) as proxy, running_node(
        tmp_path, bus=bus, append_deadline_s=DEADLINE_S, partitions="sms=1",
    ) as herald, http(herald) as api:
        before = await api.post("/v1/notifications", json=sms("warm"))
        assert before.status_code == 202, before.text
        assert (await api.get("/readyz")).status_code == 200

        proxy.blackhole()
        keyed = await api.post("/v1/notifications", json=sms("u1"), headers={"Idempotency-Key": "k-1"})
        assert keyed.status_code == 503, keyed.text  # before: no answer for minutes
        assert keyed.headers["content-type"] == "application/problem+json"
        assert int(keyed.headers["retry-after"]) >= 1
        ready = await api.get("/readyz")
        assert ready.status_code == 503 and "bus" in ready.json()["detail"], ready.text
        # known away now: refused at once, nothing appended (so the caller without a key may retry freely)
        unkeyed = await api.post("/v1/notifications", json=sms("u2"))
        assert unkeyed.status_code == 503 and "retry-after" in unkeyed.headers
        # the same key while the bus is away: 503 again, the key still keeping its ids
        assert (await api.post("/v1/notifications", json=sms("u1"), headers={"Idempotency-Key": "k-1"})).status_code == 503

        proxy.restore()
        with trio.fail_after(60):  # ready again without a restart (the port check, every second)
            while (await api.get("/readyz")).status_code != 200:
                await trio.sleep(0.2)
        retried = await api.post("/v1/notifications", json=sms("u1"), headers={"Idempotency-Key": "k-1"})
        assert retried.status_code == 202, retried.text
        nid = retried.json()["notification_id"]
        again = await api.post("/v1/notifications", json=sms("u1"), headers={"Idempotency-Key": "k-1"})
        assert again.json()["notification_id"] == nid and again.headers["idempotent-replayed"] == "true"
        body = await wait_final(api, nid, 30)
        assert body["channels"]["sms"]["status"] == "delivered", body

        # the first try that got 503 was appended after all (the producer kept it): the same notification id
        # on the bus twice (warm's record the third), the provider called once for it (the send ledger)
        with trio.fail_after(30):
            while await sms_records(herald) < 3 or herald.providers[Channel.SMS].suppressed < 1:
                await trio.sleep(0.1)
    counts = count_call_logs(tmp_path / "data")["sms"]
    assert counts.duplicates == 0, counts
    # warm and u1 (once, for its three tries); u2 was refused before its append
    assert counts.deliveries == 2 and counts.calls == 2, counts
    # aiokafka's retries were rate-limited: a few lines of each kind per 10 s
    lines: dict[tuple[str, str], int] = {}
    for record in caplog.records:
        if record.name.startswith("aiokafka") and record.levelno >= logging.WARNING:
            lines[record.name, str(record.msg)] = lines.get((record.name, str(record.msg)), 0) + 1
    assert all(n <= 5 * 8 for n in lines.values()), lines
