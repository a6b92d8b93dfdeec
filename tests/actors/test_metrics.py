"""GET /metrics (issue 10 item 9): every family in one scrape, and the numbers move with traffic.

A node does a little of everything (a batch of SMS, a send on every channel, an email
that fails, is retried and dead-lettered and opens the email breaker, a push stuck at
its provider, a WebSocket, an SSE stream and a long-poll); each family's sample is
compared between scrapes, parsed with prometheus_client's parser. The scrape is an
admin's (401/403 otherwise), or anyone's on the metrics port; a node shows what its role
runs; label values stay bounded whatever paths and methods clients send.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import secrets
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

from actors.app import Herald
from actors.cli import main as cli
from actors.consumer import PartitionConsumer
from actors.metrics import OUTCOMES, TRANSPORTS, FanoutProgress, NodeMetrics, no_fanout
from actors.provider import ALREADY_SENT
from protocol.channels import Channel
from protocol.lifecycle import Status
from protocol.messages import RetryLater, Sent
from reactor.mailbox import Mailbox
from tests.helpers import role_nodes, all_channels, http, receive_json, running_node, token_for, wait_final, ws_url
from tests.realtime.streams import open_sse, poll, subscriber_client

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclasses.dataclass
class Scrape:
    families: set[str]  # family names as the text format types them (herald_deliveries_total, ...)
    samples: Samples

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def labels_of(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for sample, labels in self.samples if sample == name]

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include these."""
        wanted = set(labels.items())
        return sum(v for (sample, ls), v in self.samples.items() if sample == name and wanted <= ls)


def parse(text: str) -> Scrape:
    families: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        families.add(family.name + ("_total" if family.type == "counter" else ""))
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(families, samples)


async def scrape(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


# What each role's node shows (docs/metrics.md).
HTTP_FAMILIES = {"herald_http_requests_total", "herald_http_request_duration_seconds"}
SESSION_FAMILIES = {"herald_sessions_open", "herald_sessions_opened_total"}
WORKER_FAMILIES = {
    "herald_deliveries_total", "herald_provider_in_flight", "herald_provider_queued", "herald_provider_max_in_flight",
    "herald_provider_calls_total", "herald_provider_client_errors_total", "herald_provider_throttled_total",
    "herald_provider_deferred_total", "herald_provider_breaker_state", "herald_bus_consumer_lag_records", "herald_dlq_entries",
}
COMMON_FAMILIES = {
    "herald_mailbox_messages", "herald_mailbox_capacity", "herald_mailbox_senders_waiting", "herald_mailbox_rejected_total",
}
PORT_SOURCE_FAMILIES = {"herald_metrics_source_up", "herald_metrics_source_age_seconds"}
FANOUT_FAMILIES = {"herald_fanout_subscribers_expanded_total", "herald_fanout_sends_pending", "herald_fanout_subscribers_pending"}


class Scripted:
    """A channel client: fails (retryably) for users named down-*, holds users named slow-* until released."""

    def __init__(self) -> None:
        self.release = trio.Event()

    async def send(self, delivery):
        if delivery.user_id.startswith("down-"):
            return RetryLater("provider down (scripted)")
        if delivery.user_id.startswith("slow-"):
            await self.release.wait()
        return Sent()


def sms_only(user: str) -> dict:
    return {"user_id": user, "channels": ["sms"], "content": {"sms": {"text": "hi"}}, "to": {"phone": "+15555550100"}}


def email_only(user: str) -> dict:
    return {"user_id": user, "channels": ["email"], "content": {"email": {"subject": "s", "text": "t"}}, "to": {"email": f"{user}@example.org"}}


def push_only(user: str) -> dict:
    return {"user_id": user, "channels": ["push"], "content": {"push": {"title": "t", "body": "b"}}, "to": {"device_token": "tok-1"}}


async def until(client: httpx.AsyncClient, check, seconds: float = 15) -> Scrape:
    """Scrape until `check(scrape)` holds (bounded); the scrape that met it."""
    last = None
    with trio.move_on_after(seconds):
        while True:
            last = await scrape(client)
            if check(last):
                return last
            await trio.sleep(0.05)
    raise AssertionError(f"not reached in {seconds}s; last scrape: {last and sorted(last.samples.items())}")


NODE = {
    "max_attempts": 2,
    "provider_max_in_flight": {"push": 1},
    "limits": {"sms": {"capacity": 1, "refill_per_s": 2}, "email": {"failure_threshold": 2, "open_timeout_s": 600}},
}


async def test_one_scrape_shows_every_family_and_each_moves_with_traffic(tmp_path):
    email, push = Scripted(), Scripted()
    async with running_node(tmp_path, clients={Channel.EMAIL: email, Channel.PUSH: push}, **NODE) as herald, http(herald) as api:
        before = await scrape(api)
        assert WORKER_FAMILIES | COMMON_FAMILIES | PORT_SOURCE_FAMILIES <= before.families
        assert before.value("herald_provider_breaker_state", channel="email", state="closed") == 1

        # a batch of 3 SMS (the bucket holds 1: the others wait for tokens), then one send on every channel
        batch = await api.post("/v1/notifications/batch", json={"items": [sms_only(f"a{i}") for i in range(3)]})
        assert batch.status_code == 202, batch.text
        ids = [item["notification_id"] for item in batch.json()["items"]]
        everything = await api.post("/v1/notifications", json=all_channels("u-all"))
        assert everything.status_code == 202, everything.text
        for nid in [*ids, everything.json()["notification_id"]]:
            await wait_final(api, nid, 20)
        # then an email that fails twice: retried once, then dead-lettered; the two failures in a row open the email breaker
        down = await api.post("/v1/notifications", json=email_only("down-1"))
        await wait_final(api, down.json()["notification_id"], 20)

        # sessions on every transport: a WebSocket and an SSE stream stay open, a long-poll comes and goes
        token = await token_for(api, "viewer")
        async with open_websocket_url(ws_url(herald.url, token)) as ws, subscriber_client(herald.url) as browser:
            await ws.send_message(json.dumps({"type": "sync"}))
            assert (await receive_json(ws))["type"] == "synced"
            async with open_sse(browser, token) as sse:
                await sse.until_synced()
                await poll(browser, token, timeout=0)
                during = await until(api, lambda s: s.value("herald_dlq_entries", channel="email") == before.value(
                    "herald_dlq_entries", channel="email") + 1)

        assert WORKER_FAMILIES | COMMON_FAMILIES | HTTP_FAMILIES | SESSION_FAMILIES | PORT_SOURCE_FAMILIES <= during.families
        assert FANOUT_FAMILIES <= during.families

        def moved(name: str, **labels: str) -> float:
            return during.value(name, **labels) - before.value(name, **labels)

        # deliveries per channel and outcome
        assert moved("herald_deliveries_total", channel="sms", outcome="delivered") == 4  # the batch's 3 and u-all's
        for channel in ("email", "push"):
            assert moved("herald_deliveries_total", channel=channel, outcome="delivered") == 1, channel
        assert moved("herald_deliveries_total", channel="web", outcome="sent") == 1  # in the inbox; delivered once a client acks
        assert moved("herald_deliveries_total", channel="email", outcome="retry") == 1
        assert moved("herald_deliveries_total", channel="email", outcome="dead_lettered") == 1
        assert {label["outcome"] for label in during.labels_of("herald_deliveries_total")} == set(OUTCOMES)
        # providers: calls, throttling, the breaker the failures opened, the DLQ
        assert moved("herald_provider_calls_total", channel="sms") == 4
        assert moved("herald_provider_calls_total", channel="email") == 3  # u-all's, and down-1's two attempts
        assert moved("herald_provider_throttled_total", channel="sms") >= 1  # a bucket of 1 and 3 at once: some waited
        assert during.value("herald_provider_breaker_state", channel="email", state="open") == 1
        assert during.value("herald_provider_breaker_state", channel="email", state="closed") == 0
        assert during.value("herald_provider_breaker_state", channel="sms", state="closed") == 1
        assert moved("herald_dlq_entries", channel="email") == 1
        # requests per route template, with their durations
        assert moved("herald_http_requests_total", method="POST", route="/v1/notifications", status="202") == 2
        assert moved("herald_http_request_duration_seconds_count", method="POST", route="/v1/notifications") == 2
        assert moved("herald_http_requests_total", method="POST", route="/v1/notifications/batch", status=str(batch.status_code)) == 1
        assert during.total("herald_http_requests_total", method="GET", route="/v1/notifications/<notification:nid>") >= 5
        assert moved("herald_http_requests_total", method="GET", route="/v1/ws", status="101") == 1
        assert moved("herald_http_requests_total", method="GET", route="/v1/sse", status="200") == 1
        assert moved("herald_http_requests_total", method="GET", route="/v1/poll", status="200") == 1
        assert moved("herald_http_requests_total", method="GET", route="/metrics", status="200") >= 1  # the scrapes before
        # sessions per transport: the WebSocket and the stream open at that scrape, the poll over
        assert (during.value("herald_sessions_open", transport="websocket"), during.value("herald_sessions_open", transport="sse"),
                during.value("herald_sessions_open", transport="poll")) == (1, 1, 0)
        for transport in TRANSPORTS:
            assert moved("herald_sessions_opened_total", transport=transport) == 1, transport
        after_sessions = await until(api, lambda s: s.value("herald_sessions_open", transport="websocket") == 0
                                     and s.value("herald_sessions_open", transport="sse") == 0)
        assert after_sessions.value("herald_sessions_opened_total", transport="sse") == during.value("herald_sessions_opened_total", transport="sse")

        # a push provider stuck on one user (max_in_flight 1): its partition's lag, the provider's mailbox and slots fill
        partition = herald.bus.partition_for(Channel.PUSH.topic(), b"slow-1")
        lag = {"group": "herald-push", "topic": "herald.push", "partition": str(partition)}
        settled = await until(api, lambda s: s.value("herald_bus_consumer_lag_records", **lag) == 0)
        for _ in range(5):
            assert (await api.post("/v1/notifications", json=push_only("slow-1"))).status_code == 202
        # one at the client, one queued behind it (the Provider holds 2 x max_in_flight), one waiting for room, two in the mailbox
        stuck = await until(api, lambda s: s.value("herald_bus_consumer_lag_records", **lag) == 5
                            and s.value("herald_mailbox_messages", mailbox="provider:push") == 2)
        assert stuck.value("herald_provider_in_flight", channel="push") == 1
        assert stuck.value("herald_provider_queued", channel="push") == 1
        assert stuck.value("herald_provider_max_in_flight", channel="push") == 1
        push.release.set()
        drained = await until(api, lambda s: s.value("herald_bus_consumer_lag_records", **lag) == 0
                              and s.value("herald_deliveries_total", channel="push", outcome="delivered")
                              == settled.value("herald_deliveries_total", channel="push", outcome="delivered") + 5)
        assert drained.value("herald_mailbox_messages", mailbox="provider:push") == 0
        assert drained.value("herald_provider_in_flight", channel="push") == 0
        assert drained.value("herald_mailbox_capacity", mailbox="recorder") == herald.config.recorder_mailbox
        assert drained.value("herald_metrics_source_up", source="bus_lag") == 1


async def test_only_an_admin_key_reads_metrics_on_the_main_port(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as admin:
        _, sender = await herald.gateway.keys.create(["send", "read"], "no admin")
        token = await token_for(admin, "u1")
        async with httpx.AsyncClient(base_url=herald.url, timeout=10) as anyone:
            bare = await anyone.get("/metrics")
            assert bare.status_code == 401 and bare.headers["content-type"] == "application/problem+json"
            assert bare.json()["errors"][0]["field"] == "Authorization"
            forbidden = await anyone.get("/metrics", headers={"Authorization": f"Bearer {sender}"})
            assert forbidden.status_code == 403 and "`admin`" in forbidden.json()["detail"]
            as_subscriber = await anyone.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert as_subscriber.status_code == 401
            by_query = await anyone.get("/metrics", params={"token": token})
            assert by_query.status_code in (400, 401)
            for response in (bare, forbidden, as_subscriber, by_query):
                assert "herald_" not in response.text
        assert herald.metrics_port is None and herald.metrics_url == ""  # off by default
        assert (await admin.get("/metrics")).status_code == 200


async def test_the_metrics_port_serves_the_scrape_without_a_key_and_nothing_else(tmp_path):
    async with running_node(tmp_path, metrics_port=0) as herald, httpx.AsyncClient(timeout=10) as anyone:
        assert herald.metrics_url.startswith("http://127.0.0.1:") and herald.metrics_url.endswith("/metrics")
        response = await anyone.get(herald.metrics_url)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        assert WORKER_FAMILIES | HTTP_FAMILIES <= parse(response.text).families
        base = herald.metrics_url.removesuffix("/metrics")
        assert (await anyone.get(f"{base}/v1/admin/circuits")).status_code == 404
        assert (await anyone.get(f"{base}/healthz")).status_code == 404
        refused = await anyone.post(herald.metrics_url, content=b"{}")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        assert (await anyone.head(herald.metrics_url)).status_code == 200
        openmetrics = await anyone.get(herald.metrics_url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.rstrip().endswith("# EOF")


def metrics_role_nodes(tmp_path: Path) -> AbstractAsyncContextManager[dict[str, Herald]]:
    """An api, a worker (with its metrics port: it has no front end) and an edge node on one set of embedded backends."""
    return role_nodes(tmp_path, worker={"metrics_port": 0})


async def test_each_role_shows_the_families_of_what_it_runs(tmp_path):
    async with metrics_role_nodes(tmp_path) as node, http(node["api"]) as api, http(node["edge"]) as edge, httpx.AsyncClient(timeout=10) as anyone:
        accepted = await api.post("/v1/notifications", json=sms_only("r1"))
        assert accepted.status_code == 202
        await wait_final(api, accepted.json()["notification_id"])
        api_scrape, edge_scrape = await scrape(api), await scrape(edge)
        worker_scrape = parse((await anyone.get(node["worker"].metrics_url)).text)

        assert HTTP_FAMILIES | COMMON_FAMILIES <= api_scrape.families
        assert not (WORKER_FAMILIES | SESSION_FAMILIES) & api_scrape.families  # no provider, delivery, lag, DLQ or session family
        assert {m["mailbox"] for m in api_scrape.labels_of("herald_mailbox_messages")} == {"recorder", "ingress", "jobs", "scheduler"}
        assert api_scrape.value("herald_http_requests_total", method="POST", route="/v1/notifications", status="202") == 1

        assert WORKER_FAMILIES | COMMON_FAMILIES | PORT_SOURCE_FAMILIES <= worker_scrape.families
        assert not (HTTP_FAMILIES | SESSION_FAMILIES) & worker_scrape.families
        assert worker_scrape.value("herald_deliveries_total", channel="sms", outcome="delivered") == 1

        assert HTTP_FAMILIES | SESSION_FAMILIES | COMMON_FAMILIES <= edge_scrape.families
        assert not WORKER_FAMILIES & edge_scrape.families
        assert {m["mailbox"] for m in edge_scrape.labels_of("herald_mailbox_messages")} == {"recorder", "registry"}
        assert FANOUT_FAMILIES <= worker_scrape.families  # the worker runs the fan-out actor
        for scraped in (api_scrape, edge_scrape):
            assert not FANOUT_FAMILIES & scraped.families


async def test_label_values_stay_bounded_whatever_clients_send(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as api:
        templates = {rule.rule for rule in herald.front.quart.url_map.iter_rules()}
        for i in range(40):
            junk = secrets.token_hex(8)
            await api.get(f"/v1/notifications/{junk}")  # a real template, a made-up id
            await api.get(f"/v1/{junk}/{i}")  # no route
            await api.request(f"X{junk[:6].upper()}", "/v1/notifications")  # a made-up method
            await api.get(f"/v1/users/{junk}/notifications")
        scraped = await scrape(api)
        labels = scraped.labels_of("herald_http_requests_total")
        assert {label["route"] for label in labels} <= templates | {"unmatched", "/v1/ws"}
        assert {label["method"] for label in labels} <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
        assert scraped.value("herald_http_requests_total", method="other", route="unmatched", status="405") == 40  # no route for it
        assert scraped.total("herald_http_requests_total", route="/v1/users/<user_id>/notifications") == 40
        assert scraped.total("herald_http_requests_total", route="/v1/notifications/<notification:nid>") == 40
        assert scraped.value("herald_http_requests_total", method="GET", route="unmatched", status="404") == 40
        assert len(labels) < 20  # 160 requests to 121 distinct paths: a handful of series


class StuckBus:
    """A bus whose offsets never come back while `stuck`: the metrics actor's read times out."""

    def __init__(self) -> None:
        self.stuck = True
        self.reads = 0

    async def end_offset(self, topic, partition):
        self.reads += 1
        while self.stuck:
            await trio.sleep(3600)
        return 7

    async def committed(self, group, topic, partition):
        return 2


class FakeStore:
    failing = False

    async def dead_letter_count(self, channel=None):
        if self.failing:
            raise OSError("store unreachable")
        return 3


async def test_a_slow_port_never_holds_a_scrape_and_its_last_values_are_served_marked_stale(autojump_clock):
    from actors.metrics import ConsumedTopic

    bus, store = StuckBus(), FakeStore()
    metrics = NodeMetrics(
        "worker", bus=bus, store=store, consumed=[ConsumedTopic("herald-sms", "herald.sms", lambda: [0])], dlq_channels=["sms"],
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(metrics.run)
        body, _ = await metrics.scrape()  # answered after SCRAPE_WAIT_S, with what there is: the DLQ read, no lag yet
        first = parse(body.decode())
        assert first.value("herald_dlq_entries", channel="sms") == 3
        assert first.labels_of("herald_bus_consumer_lag_records") == []
        assert first.value("herald_metrics_source_up", source="dlq") == 1 and first.value("herald_metrics_source_up", source="bus_lag") == 0
        await trio.sleep(10)  # past SOURCE_TIMEOUT_S: the stuck read was abandoned
        bus.stuck = False
        await trio.sleep(2)
        later = parse((await metrics.scrape())[0].decode())
        assert later.value("herald_bus_consumer_lag_records", group="herald-sms", topic="herald.sms", partition="0") == 5
        assert later.value("herald_metrics_source_up", source="bus_lag") == 1
        reads = bus.reads
        await metrics.scrape()  # within CACHE_S of the last read: served from the cache, nothing read
        assert bus.reads == reads
        store.failing = True  # a backend that errors: its last values are served, marked down
        await trio.sleep(2)
        failed = parse((await metrics.scrape())[0].decode())
        assert failed.value("herald_dlq_entries", channel="sms") == 3 and failed.value("herald_metrics_source_up", source="dlq") == 0
        assert failed.value("herald_metrics_source_age_seconds", source="dlq") >= 2
        metrics.stop()


async def test_the_fanout_families_carry_what_the_reader_returns():
    class Bus:
        pass

    progress = FanoutProgress(subscribers_expanded=1200, sends_pending=2, subscribers_pending=98_800)
    given = NodeMetrics("all", bus=Bus(), store=FakeStore(), fanout=lambda: progress)
    scraped = parse((await given.scrape())[0].decode())
    assert scraped.value("herald_fanout_subscribers_expanded_total") == 1200
    assert scraped.value("herald_fanout_sends_pending") == 2
    assert scraped.value("herald_fanout_subscribers_pending") == 98_800
    idle = parse((await NodeMetrics("all", bus=Bus(), store=FakeStore(), fanout=no_fanout).scrape())[0].decode())
    assert FANOUT_FAMILIES <= idle.families and idle.labels_of("herald_fanout_sends_pending") == []
    none = parse((await NodeMetrics("all", bus=Bus(), store=FakeStore()).scrape())[0].decode())
    assert not FANOUT_FAMILIES & none.families


def test_an_answer_of_the_send_ledger_counts_as_a_suppressed_duplicate():
    assert PartitionConsumer._sent_outcome(Sent(Status.DELIVERED, ALREADY_SENT)) == "duplicate_suppressed"
    assert PartitionConsumer._sent_outcome(Sent(Status.DELIVERED, "ok")) == "delivered"
    assert PartitionConsumer._sent_outcome(Sent(Status.SENT, "")) == "sent"


async def test_every_mailbox_of_the_node_is_a_series(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as api:
        scraped = await scrape(api)
        names = {m["mailbox"] for m in scraped.labels_of("herald_mailbox_messages")}
        expected = {"recorder", "scheduler", "ingress", "jobs", "registry"} | {f"provider:{c.value}" for c in Channel}
        per_channel = {f"provider:{c.value}:{m}" for c in Channel for m in ("queries", "critical")}  # the critical lane's own
        assert expected | per_channel == names
        assert isinstance(herald.metrics, NodeMetrics) and all(isinstance(m, Mailbox) for m in herald.metrics.mailboxes)



async def test_herald_metrics_prints_the_scrape_or_the_families_asked(tmp_path):
    async with running_node(tmp_path) as herald:
        def run(*args: str) -> tuple[int, str]:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = cli(["metrics", "--server", herald.url, "--api-key", "test-key", *args])
            return code, out.getvalue()

        code, whole = await trio.to_thread.run_sync(run)
        assert code == 0 and WORKER_FAMILIES <= parse(whole).families
        code, some = await trio.to_thread.run_sync(run, "--family", "herald_dlq", "--family", "herald_sessions_open")
        assert code == 0 and parse(some).families == {"herald_dlq_entries", "herald_sessions_open", "herald_sessions_opened_total"}  # prefixes
        refused = io.StringIO()
        with contextlib.redirect_stdout(refused):
            code = await trio.to_thread.run_sync(lambda: cli(["metrics", "--server", herald.url, "--api-key", "wrong"]))
        assert code != 0 and "herald_" not in refused.getvalue()


def test_the_metrics_port_setting_is_off_by_default_and_checked():
    from actors.config import ConfigError, load_config

    assert load_config(env={}).metrics_port == -1 and load_config(env={}).metrics_host == "127.0.0.1"
    assert load_config(env={"HERALD_METRICS_PORT": "9464"}).metrics_port == 9464
    assert load_config(env={"HERALD_METRICS_PORT": "-1"}).metrics_port == -1
    assert load_config(env={"HERALD_METRICS_PORT": "0"}).metrics_port == 0
    for wrong in ("-2", "65536", "x", "-1.0", " -1"):
        with pytest.raises(ConfigError, match="HERALD_METRICS_PORT"):
            load_config(env={"HERALD_METRICS_PORT": wrong})
    with pytest.raises(ConfigError, match="metrics_port"):
        load_config(metrics_port=-5)


async def test_the_fanout_families_move_with_a_topic_send(tmp_path):
    users = [f"fan-{i}" for i in range(7)]
    async with running_node(tmp_path, fanout_batch=3) as herald, http(herald) as api:
        for user in users:
            assert (await api.put(f"/v1/users/{user}/preferences", json={"contact": {"phone": "+15555550100"}})).status_code < 300
        assert (await api.put("/v1/topics/news/subscribers", json={"user_ids": users})).status_code < 300
        before = await scrape(api)
        assert before.value("herald_fanout_subscribers_expanded_total") == 0
        sent = await api.post("/v1/notifications", json={"topic": "news", "channels": ["sms"], "content": {"sms": {"text": "x"}}})
        assert sent.status_code == 202, sent.text
        after = await until(api, lambda s: s.value("herald_fanout_subscribers_expanded_total") == len(users))
        assert after.value("herald_fanout_sends_pending") in (0, 1)
        settled = await until(api, lambda s: s.value("herald_fanout_sends_pending") == 0)
        assert settled.value("herald_fanout_subscribers_pending") == 0
