"""The composition root builds a node by role (issue 9 item 6): api, worker, edge, all.

With the embedded backends only `all` runs as a process (`herald serve --role api` is
refused); but the stage sets of the other roles exist, and here they run in one Trio run
on one set of embedded backends opened once by the test (`run_herald(backends=)`): a POST
to the api node reaches a WebSocket client of the edge node through the bus, the worker
node (consumer, web provider) and the broker, and the client's ack, recorded by the edge,
is what the api node answers for the notification's status. Each role's front end serves
its own routes only: another role's is a 421 naming the roles that serve it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from actors.app import run_herald
from actors.config import ConfigError
from protocol.channels import Channel
from protocol.preferences import ContactPoints, Preferences, QuietHours
from reactor.clock import wall_ms
from tests.helpers import config_for, http, role_nodes, receive_json, running_node, token_for, wait_final, web_notification, ws_url

ROLES = ("api", "worker", "edge")


nodes = role_nodes


async def test_a_post_to_the_api_reaches_a_websocket_on_the_edge_through_the_bus_the_worker_and_the_broker(tmp_path):
    async with nodes(tmp_path) as node, http(node["api"]) as api, http(node["edge"]) as edge:
        assert node["worker"].url == "" and node["worker"].gateway is None  # a worker has no front end
        token = await token_for(api, "u1")  # signed with the key ring all of them share (the Store)
        async with open_websocket_url(ws_url(node["edge"].url, token)) as ws:
            await ws.send_message(json.dumps({"type": "sync"}))
            assert (await receive_json(ws))["type"] == "synced"
            accepted = await api.post("/v1/notifications", json=web_notification("u1", "across the roles"))
            assert accepted.status_code == 202, accepted.text
            nid = accepted.json()["notification_id"]
            with trio.fail_after(10):
                frame = await receive_json(ws)
            assert (frame["type"], frame["id"], frame["title"]) == ("notification", nid, "across the roles")
            await ws.send_message(json.dumps({"type": "ack", "id": nid}))
            status = await wait_final(api, nid, web="delivered")  # the edge recorded the ack; the api reads it
            assert status["channels"]["web"]["status"] == "delivered", status
            web = status["channels"]["web"]["attempts"]
            assert "in the inbox; pushed to the live sessions on 1 node(s)" in [a.get("detail") for a in web]
        inbox = await edge.get("/v1/users/u1/inbox")
        assert [item["id"] for item in inbox.json()["items"]] == [nid]
        assert node["worker"].providers[Channel.WEB].calls == 1
        assert node["edge"].registry is not None and node["edge"].registry.pushed == 1


async def test_each_role_runs_its_stages_and_serves_its_routes_only(tmp_path):
    async with nodes(tmp_path) as node, http(node["api"]) as api, http(node["edge"]) as edge:
        stages = {role: [s.name for s in herald.system.supervisors()] for role, herald in node.items()}
        assert stages == {
            "api": ["storage", "recording", "ingress", "metrics", "front"],
            "worker": ["storage", "recording", "delivery", "consumers", "metrics"],
            "edge": ["storage", "recording", "delivery", "metrics", "front"],
        }
        children = {role: {c.name for s in h.system.supervisors() for c in s.statistics()} for role, h in node.items()}
        assert {"ingress", "schedule-writer", "jobs", "http"} <= children["api"] and "registry" not in children["api"]
        assert {"scheduler", "provider:web", "provider:web:queries", "consumer-group:web"} <= children["worker"]
        assert "registry" in children["edge"] and not {"ingress", "scheduler", "provider:web"} & children["edge"]

        # the edge takes no notification: a 421 naming its role and the roles that take one
        refused = await edge.post("/v1/notifications", json=web_notification("u1"))
        assert refused.status_code == 421 and refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["detail"] == "this node's role is edge: POST /v1/notifications is served by nodes of the role api (or all)"
        assert (await edge.get("/v1/admin/circuits")).status_code == 421
        assert (await edge.get("/v1/nowhere")).status_code == 404  # a route of no role is still a 404
        # the api serves no session and no inbox
        token = await token_for(api, "u1")
        for path in ("/v1/sse", "/v1/poll"):
            misdirected = await api.get(path, params={"token": token})
            assert misdirected.status_code == 421, (path, misdirected.text)
            assert "role is api" in misdirected.json()["detail"] and "role edge (or all)" in misdirected.json()["detail"]
        assert (await api.get("/v1/users/u1/inbox")).status_code == 421
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(ws_url(node["api"].url, token)):
                pass
        assert rejected.value.status_code == 421
        # each describes its own routes
        api_paths = set((await api.get("/openapi.json")).json()["paths"])
        edge_paths = set((await edge.get("/openapi.json")).json()["paths"])
        assert "/v1/notifications" in api_paths and not any(p.startswith(("/v1/sse", "/v1/poll")) or "inbox" in p for p in api_paths)
        assert {p for p in edge_paths if p.startswith("/v1/")} == {
            "/v1/sse", "/v1/poll", "/v1/users/{user_id}/inbox", "/v1/users/{user_id}/inbox/unread_count",
            "/v1/users/{user_id}/inbox/{nid}/read", "/v1/users/{user_id}/inbox/read_all", "/v1/users/{user_id}/inbox/{nid}/archive",
        }
        assert (await edge.get("/healthz")).status_code == 200 and (await api.get("/readyz")).status_code == 200


async def test_the_api_asks_for_circuits_it_cannot_reach_and_says_so(tmp_path):
    async with nodes(tmp_path) as node, http(node["api"]) as api:
        circuits = (await api.get("/v1/admin/circuits")).json()["circuits"]
        assert [c["channel"] for c in circuits] == [c.value for c in Channel]
        for circuit in circuits:
            assert circuit["state"] == "unavailable" and "its role is api" in circuit["detail"], circuit


async def test_the_api_role_stores_what_waits_for_the_workers_schedulers(tmp_path):
    """No Scheduler on an api node: a notification held by quiet hours goes to the Store before the 202."""
    async with nodes(tmp_path) as node, http(node["api"]) as api:
        zone = "Asia/Kolkata"
        local = dt.datetime.fromtimestamp(wall_ms() / 1000, ZoneInfo(zone))
        window = QuietHours((local - dt.timedelta(hours=1)).strftime("%H:%M"), (local + dt.timedelta(hours=2)).strftime("%H:%M"))
        users = node["api"].users
        assert users is not None
        await users.put_preferences("owl", Preferences(contact=ContactPoints(phone="+15555550142"), timezone=zone, quiet_hours=window), wall_ms())
        before = len(await node["api"].store.scheduled())
        accepted = await api.post("/v1/notifications", json={"user_id": "owl", "channels": ["sms"], "content": {"sms": {"text": "later"}}})
        assert accepted.status_code == 202, accepted.text
        assert len(await node["api"].store.scheduled()) == before + 1


async def test_a_role_other_than_all_is_refused_on_backends_a_node_opens_itself(tmp_path):
    config = dataclasses.replace(config_for(tmp_path), role="edge")
    with pytest.raises(ConfigError, match="the role 'edge' needs distributed backends"):
        await run_herald(config, signals=False)
    async with running_node(tmp_path) as herald:  # and `all` builds what it always did
        assert [s.name for s in herald.system.supervisors()] == ["storage", "recording", "delivery", "consumers", "ingress", "metrics", "front"]
