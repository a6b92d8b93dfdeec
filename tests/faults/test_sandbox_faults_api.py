"""The sandbox faults at run time: /v1/admin/sandbox/faults and `herald sandbox faults`, against a node on loopback."""

from __future__ import annotations

import json

import httpx
import trio

from actors import cli
from protocol.channels import Channel
from protocol.messages import Sent
from tests.helpers import http, running_node, wait_final


def sms(user: str) -> dict:
    return {"user_id": user, "channels": ["sms"], "content": {"sms": {"text": "hi"}}, "to": {"phone": "+15555550100"}}


async def test_put_makes_the_sandbox_fail_get_shows_it_delete_clears_it(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        listed = (await client.get("/v1/admin/sandbox/faults")).json()["faults"]
        assert [(f["channel"], f["active"]) for f in listed] == [("email", False), ("sms", False), ("push", False), ("webhook", False)]

        response = await client.put("/v1/admin/sandbox/faults/sms", json={"error_rate": 1, "kind": "permanent", "latency_ms": 5})
        assert response.status_code == 200, response.text
        view = response.json()
        assert (view["channel"], view["error_rate"], view["kind"], view["latency_ms"], view["active"]) == ("sms", 1.0, "permanent", 5.0, True)
        assert view["fail_for_s"] == 0 and view["outage_until"] is None and view["calls"] == view["failed"] == 0

        failed = (await client.post("/v1/notifications", json=sms("erin"))).json()["notification_id"]
        body = await wait_final(client, failed)
        assert body["channels"]["sms"]["status"] == "failed"
        assert "sandbox fault on sms (permanent): error_rate 1" in body["channels"]["sms"]["attempts"][-1]["detail"]
        shown = {f["channel"]: f for f in (await client.get("/v1/admin/sandbox/faults")).json()["faults"]}
        assert (shown["sms"]["calls"], shown["sms"]["failed"]) == (1, 1) and not shown["email"]["active"]

        outage = (await client.put("/v1/admin/sandbox/faults/sms", json={"fail_for_s": 3600})).json()
        assert outage["outage_until"] is not None and outage["error_rate"] == 0 and outage["kind"] == "retryable"

        cleared = await client.delete("/v1/admin/sandbox/faults/sms")
        assert cleared.status_code == 200 and cleared.json()["active"] is False and cleared.json()["outage_until"] is None
        delivered = (await client.post("/v1/notifications", json=sms("erin"))).json()["notification_id"]
        assert (await wait_final(client, delivered))["channels"]["sms"]["status"] == "delivered"


async def test_a_setting_that_does_not_fit_is_a_problem_naming_the_field(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        for body, field in (
            ({"error_rate": 1.5}, "error_rate"),
            ({"error_rate": -0.1}, "error_rate"),
            ({"error_rate": "half"}, "error_rate"),
            ({"kind": "sometimes"}, "kind"),
            ({"latency_ms": 10_001}, "latency_ms"),
            ({"fail_for_s": -1}, "fail_for_s"),
            ({"seed": 0.5}, "seed"),
            ({"rate": 1}, "rate"),
        ):
            response = await client.put("/v1/admin/sandbox/faults/sms", json=body)
            assert response.status_code == 400, (body, response.status_code, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["errors"][0]["field"] == field, (body, response.json())
        for raw in (b"", b"{", b"[]"):
            response = await client.put("/v1/admin/sandbox/faults/sms", content=raw, headers={"Content-Type": "application/json"})
            assert response.status_code == 400 and response.json()["errors"][0]["field"] == "body", (raw, response.text)
        for channel in ("web", "fax"):
            for method in ("PUT", "DELETE"):
                response = await client.request(method, f"/v1/admin/sandbox/faults/{channel}", json={})
                assert response.status_code == 404, (method, channel, response.text)
                assert response.json()["errors"][0]["field"] == "channel"
        form = await client.put("/v1/admin/sandbox/faults/sms", content=b"error_rate=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert form.status_code == 415
        unknown = await client.get("/v1/admin/sandbox/faults?channel=sms")
        assert unknown.status_code == 400 and unknown.json()["errors"][0]["field"] == "channel"
        # nothing refused changed anything
        assert not any(f["active"] for f in (await client.get("/v1/admin/sandbox/faults")).json()["faults"])


class Steady:
    async def send(self, delivery):
        return Sent()


async def test_faults_apply_only_to_sandbox_clients(tmp_path):
    async with running_node(tmp_path, clients={Channel.SMS: Steady()}, faults={"sms": {"error_rate": 1}}) as herald, http(herald) as client:
        assert [f["channel"] for f in (await client.get("/v1/admin/sandbox/faults")).json()["faults"]] == ["email", "push", "webhook"]
        assert (await client.put("/v1/admin/sandbox/faults/sms", json={"error_rate": 1})).status_code == 404
        nid = (await client.post("/v1/notifications", json=sms("finn"))).json()["notification_id"]
        assert (await wait_final(client, nid))["channels"]["sms"]["status"] == "delivered"  # the config's sms fault is ignored


async def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`herald <args>` in a thread (the CLI is synchronous; the node runs on this Trio loop)."""
    capsys.readouterr()
    code = await trio.to_thread.run_sync(cli.main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def test_herald_sandbox_faults_shows_sets_and_clears(tmp_path, capsys):
    async with running_node(tmp_path) as herald:
        where = ("--server", herald.url, "--api-key", "test-key")
        code, out, _ = await run_cli(capsys, "sandbox", "faults", "set", "sms", "--error-rate", "0.25", "--latency-ms", "5",
                                     "--fail-for", "60", "--seed", "9", *where)
        assert code == 0, out
        view = json.loads(out)
        assert (view["error_rate"], view["kind"], view["latency_ms"], view["fail_for_s"], view["seed"]) == (0.25, "retryable", 5.0, 60.0, 9)
        code, out, _ = await run_cli(capsys, "sandbox", "faults", "set", "push", "--error-rate", "1", "--kind", "permanent", *where)
        assert code == 0 and json.loads(out)["kind"] == "permanent"
        assert herald.sandbox_faults is not None and herald.sandbox_faults.clients[Channel.PUSH].state.spec.error_rate == 1.0

        code, out, _ = await run_cli(capsys, "sandbox", "faults", "show", *where)
        assert code == 0
        assert {f["channel"]: f["active"] for f in json.loads(out)["faults"]} == {"email": False, "sms": True, "push": True, "webhook": False}

        code, out, _ = await run_cli(capsys, "sandbox", "faults", "clear", "sms", *where)
        assert code == 0 and json.loads(out)["active"] is False
        assert herald.sandbox_faults.clients[Channel.SMS].state.spec.active is False

        # refused: a value the node refuses (the problem printed, exit 1); a missing channel (one line, exit 2)
        code, out, _ = await run_cli(capsys, "sandbox", "faults", "set", "sms", "--error-rate", "2", *where)
        assert code == 1 and json.loads(out)["errors"][0]["field"] == "error_rate"
        code, out, err = await run_cli(capsys, "sandbox", "faults", "set", *where)
        assert code == 2 and err.strip() == "herald: sandbox faults set needs a channel (email, sms, push or webhook)"


async def test_the_fault_routes_need_an_admin_key(tmp_path):
    async with running_node(tmp_path) as herald, httpx.AsyncClient(base_url=herald.url, timeout=10) as client:
        _, send_only = await herald.gateway.keys.create(["send", "read"], "no admin")
        for method, path in (("GET", "/v1/admin/sandbox/faults"), ("PUT", "/v1/admin/sandbox/faults/sms"), ("DELETE", "/v1/admin/sandbox/faults/sms")):
            assert (await client.request(method, path, json={})).status_code == 401
            refused = await client.request(method, path, json={"error_rate": 1}, headers={"Authorization": f"Bearer {send_only}"})
            assert refused.status_code == 403, (method, path)
        assert herald.sandbox_faults is not None and not herald.sandbox_faults.clients[Channel.SMS].state.spec.active
