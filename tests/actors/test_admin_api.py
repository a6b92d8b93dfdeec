"""The admin API and CLI: circuits, and the dead-letter queue (list; replay and purge, as jobs the CLI follows)."""

import contextlib
import io
import json

import trio

from actors.cli import main as cli
from protocol.channels import Channel
from protocol.messages import RetryLater, Sent
from tests.helpers import http, running_node, wait_final


class Switchable:
    def __init__(self):
        self.down = True

    async def send(self, delivery):
        return RetryLater("provider down") if self.down else Sent()


def sms(user: str) -> dict:
    return {"user_id": user, "channels": ["sms"], "content": {"sms": {"text": "hi"}}, "to": {"phone": "+15555550100"}}


async def run_cli(*args: str) -> tuple[int, dict]:
    out = io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out):
            return cli(list(args))

    code = await trio.to_thread.run_sync(call)
    return code, json.loads(out.getvalue())


async def test_dlq_list_replay_and_purge_over_http_and_cli(tmp_path):
    client_impl = Switchable()
    settings = {"max_attempts": 2, "retry_initial_s": 0.01, "retry_max_s": 0.02, "limits": {"sms": {"failure_threshold": 1000}}}
    async with running_node(tmp_path, clients={Channel.SMS: client_impl}, **settings) as herald, http(herald) as client:
        ids = [(await client.post("/v1/notifications", json=sms(f"d{i}"))).json()["notification_id"] for i in range(5)]
        for nid in ids:
            assert (await wait_final(client, nid))["channels"]["sms"]["status"] == "dead_lettered"

        page = (await client.get("/v1/admin/dlq", params={"channel": "sms", "limit": 2})).json()
        assert page["total"] == 5 and len(page["items"]) == 2 and page["next_cursor"]
        entry = page["items"][0]
        assert entry["error"] == "provider down" and entry["attempts"] == 2
        assert [h["attempt"] for h in entry["history"]] == [1, 2]
        rest = (await client.get("/v1/admin/dlq", params={"channel": "sms", "cursor": page["next_cursor"]})).json()
        assert len(rest["items"]) == 3 and rest["next_cursor"] is None
        listed = [e["notification_id"] for e in page["items"] + rest["items"]]
        assert sorted(listed) == sorted(ids)

        # a selection must be explicit
        vague = await client.post("/v1/admin/dlq/replay", json={})
        assert vague.status_code == 422 and "all" in {e["field"] for e in vague.json()["errors"]}
        both = await client.post("/v1/admin/dlq/replay", json={"all": True, "channel": "sms"})
        assert both.status_code == 422

        cli_args = ["--server", herald.url, "--api-key", "test-key"]
        code, listed_by_cli = await run_cli("dlq", "list", "--channel", "sms", *cli_args)
        assert code == 0 and listed_by_cli["total"] == 5

        # purge one by id, then replay the rest after the provider recovers
        code, purged = await run_cli("dlq", "purge", "--id", str(entry["id"]), *cli_args)
        assert code == 0 and (purged["kind"], purged["state"], purged["total"], purged["discarded"]) == ("dlq_purge", "done", 1, 1)
        client_impl.down = False
        code, replayed = await run_cli("dlq", "replay", "--all", *cli_args)
        assert code == 0 and (replayed["kind"], replayed["state"], replayed["replayed"], replayed["discarded"]) == ("dlq_replay", "done", 4, 0)
        assert replayed["started_at"] and replayed["finished_at"] and replayed["errors"] == 0
        for nid in ids:
            status = (await wait_final(client, nid))["channels"]["sms"]
            expected = "dead_lettered" if nid == entry["notification_id"] else "delivered"
            assert status["status"] == expected, (nid, status)
        assert (await client.get("/v1/admin/dlq")).json()["total"] == 0

        circuits = {c["channel"]: c for c in (await client.get("/v1/admin/circuits")).json()["circuits"]}
        assert circuits["sms"]["state"] == "closed"
        assert circuits["sms"]["calls"] == 5 * 2 + 4
        assert circuits["email"]["bucket_capacity"] == 1000
        code, from_cli = await run_cli("circuits", *cli_args)
        assert {c["channel"] for c in from_cli["circuits"]} == {"email", "sms", "push", "web", "webhook"}


async def test_circuits_show_an_open_breaker_and_when_it_will_probe(tmp_path):
    client_impl = Switchable()
    settings = {"max_attempts": 10, "retry_initial_s": 0.01, "retry_max_s": 0.02, "limits": {"sms": {"failure_threshold": 2, "open_timeout_s": 300}}}
    async with running_node(tmp_path, clients={Channel.SMS: client_impl}, **settings) as herald, http(herald) as client:
        await client.post("/v1/notifications", json=sms("c1"))
        with trio.fail_after(10):
            while True:
                sms_circuit = {c["channel"]: c for c in (await client.get("/v1/admin/circuits")).json()["circuits"]}["sms"]
                if sms_circuit["state"] == "open":
                    break
                await trio.sleep(0.02)
        assert sms_circuit["opened"] == 1 and sms_circuit["retry_at"]
        assert sms_circuit["transitions"] == {"closed->open": 1}
        assert sms_circuit["calls"] == 2  # nothing more reaches the provider while it is open
