"""Cassandra away while a node runs (docs/deploy.md, "What each failure does"): a POST is answered fast and truly.

The node's log store talks to the session's shared Cassandra (never stopped) through a Trio TCP
proxy (tests/tcp_proxy.py) the test blackholes, as a Cassandra stopped by SIGSTOP looks to the
driver; on one node the driver keeps to its contact point (the proxy: the cluster's port is one
for every host, and system.local names the same loopback address).
"""

from __future__ import annotations

import uuid

import trio

from protocol.channels import LANES, Channel
from tests.helpers import http, running_node, wait_final, web_notification
from tests.servers import free_port
from tests.tcp_proxy import open_proxy


async def web_records(herald) -> int:
    return sum([await herald.bus.end_offset(Channel.WEB.topic(lane), p) for lane in LANES
                for p in range(herald.config.partitions_of(Channel.WEB))])


async def test_cassandra_away_an_appended_post_is_accepted_the_next_refused_at_once_and_all_recorded_later(engines, tmp_path):
    server = engines.get("cassandra")
    listen = free_port()
    logstore = f"cassandra://127.0.0.1:{listen}/o{uuid.uuid4().hex[:12]}?timeout_s=1"
    async with open_proxy(server.port, listen) as proxy, running_node(
        tmp_path, logstore=logstore, append_deadline_s=2.0,
    ) as herald, http(herald) as api:
        warm = await api.post("/v1/notifications", json=web_notification("warm"))
        assert warm.status_code == 202, warm.text
        assert (await api.get("/readyz")).status_code == 200

        proxy.blackhole()
        # appended before the node knew: on the bus, so accepted (a 503 would be false: a retry would make a second);
        # its events are recorded once Cassandra is back. Before: a 503 after the append, or no answer in 60 s.
        appended = await api.post("/v1/notifications", json=web_notification("u1"))
        assert appended.status_code == 202, appended.text
        with trio.fail_after(30):  # the Recorder met the store away: the node says so
            while (ready := await api.get("/readyz")).status_code != 503:
                await trio.sleep(0.05)
        assert "logstore" in ready.json()["detail"]
        records = await web_records(herald)
        refused = await api.post("/v1/notifications", json=web_notification("u2"))
        assert refused.status_code == 503, refused.text  # at once: known away
        assert refused.headers["content-type"] == "application/problem+json" and int(refused.headers["retry-after"]) >= 1
        assert await web_records(herald) == records  # nothing appended for the refused one

        proxy.restore()
        with trio.fail_after(60):
            while (await api.get("/readyz")).status_code != 200:
                await trio.sleep(0.1)
        body = await wait_final(api, appended.json()["notification_id"], 30)
        steps = [a["status"] for a in body["channels"]["web"]["attempts"]]
        assert steps[:2] == ["accepted", "queued"] and body["final"], body  # recorded late, nothing lost
        after = await api.post("/v1/notifications", json=web_notification("u3"))
        assert after.status_code == 202, after.text
        assert herald.ingress is not None and herald.ingress.recorded_late >= 1
