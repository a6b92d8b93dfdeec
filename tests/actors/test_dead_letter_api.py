"""The dead-letter API says what happened (issue 8 item 9).

A selection is exactly one of ids, a filter or all (422 naming the fields otherwise, and
nothing is replayed or discarded); a filter's notification_id and before must be what
they say. An entry replayed and dead-lettered again shows the second dead-lettering in
its timeline and counts its attempts across replays. `herald dlq --before` lists and
purges what was dead-lettered before a time.
"""

from __future__ import annotations

import trio

from protocol.channels import Channel
from reactor.clock import iso, wall_ms
from tests.actors.test_admin_api import Switchable, run_cli, sms
from tests.helpers import http, running_node, wait_final

SETTINGS = {"max_attempts": 2, "retry_initial_s": 0.01, "retry_max_s": 0.02, "limits": {"sms": {"failure_threshold": 1000}}}


async def dead_lettered(client, users: list[str]) -> list[str]:
    ids = [(await client.post("/v1/notifications", json=sms(user))).json()["notification_id"] for user in users]
    for nid in ids:
        assert (await wait_final(client, nid))["channels"]["sms"]["status"] == "dead_lettered"
    return ids


async def entries(client) -> list[dict]:
    return (await client.get("/v1/admin/dlq")).json()["items"]


async def job_done(client, method: str, path: str, body: dict) -> dict:
    """Start a replay or purge (202 with the job), follow it to its end, return it."""
    started = await client.request(method, path, json=body)
    assert started.status_code == 202, started.text
    job = started.json()
    assert started.headers["location"] == f"/v1/admin/jobs/{job['id']}"
    with trio.fail_after(10):
        while job["state"] in ("queued", "running"):
            await trio.sleep(0.01)
            job = (await client.get(started.headers["location"])).json()
    assert job["state"] == "done", job
    return job


def counts(job: dict) -> dict:
    return {k: job[k] for k in ("total", "replayed", "discarded", "skipped", "errors")}


async def test_a_selection_is_one_of_ids_a_filter_or_all(tmp_path):
    async with running_node(tmp_path, clients={Channel.SMS: Switchable()}, **SETTINGS) as herald, http(herald) as client:
        await dead_lettered(client, ["a", "b"])
        before = await entries(client)
        first = before[0]["id"]
        refused = [
            ({"ids": [first], "channel": "sms"}, {"ids", "channel"}),
            ({"ids": [first], "before": iso(wall_ms())}, {"ids", "before"}),
            ({"ids": [first], "all": True}, {"ids", "all"}),
            ({"channel": "sms", "all": True}, {"channel", "all"}),
            ({}, {"ids", "channel", "notification_id", "before", "all"}),
            ({"all": False}, {"ids", "channel", "notification_id", "before", "all"}),
            ({"notification_id": "nope"}, {"notification_id"}),
            ({"notification_id": "01M88CS2RM2B1CVFWE5N54XNG"}, {"notification_id"}),  # 25 characters
            ({"channel": "sms", "before": "yesterday"}, {"before"}),
        ]
        for body, fields in refused:
            for method, path in (("POST", "/v1/admin/dlq/replay"), ("DELETE", "/v1/admin/dlq")):
                response = await client.request(method, path, json=body)
                assert response.status_code == 422, (method, body, response.text)
                assert response.headers["content-type"].startswith("application/problem+json")
                assert {e["field"] for e in response.json()["errors"]} == fields, (body, response.json())
        assert await entries(client) == before  # nothing was replayed or discarded

        # each kind alone is taken
        one = {"total": 1, "replayed": 0, "discarded": 1, "skipped": 0, "errors": 0}
        assert counts(await job_done(client, "DELETE", "/v1/admin/dlq", {"ids": [first]})) == one
        nid = before[1]["notification_id"]
        kept = await job_done(client, "DELETE", "/v1/admin/dlq", {"channel": "sms", "notification_id": nid, "before": "0"})
        assert counts(kept) == {**one, "total": 0, "discarded": 0}  # nothing was dead-lettered before 1970
        assert counts(await job_done(client, "DELETE", "/v1/admin/dlq", {"notification_id": nid})) == one


async def test_a_second_dead_lettering_is_in_the_timeline_and_attempts_count_across_replays(tmp_path):
    async with running_node(tmp_path, clients={Channel.SMS: Switchable()}, **SETTINGS) as herald, http(herald) as client:
        [nid] = await dead_lettered(client, ["c"])
        [entry] = await entries(client)
        assert (entry["attempts"], entry["replays"], [h["attempt"] for h in entry["history"]]) == (2, 0, [1, 2])
        replayed = await job_done(client, "POST", "/v1/admin/dlq/replay", {"notification_id": nid})
        assert counts(replayed) == {"total": 1, "replayed": 1, "discarded": 0, "skipped": 0, "errors": 0}
        with trio.fail_after(10):  # the provider is still down: it comes back
            while not (again := await entries(client)):
                await trio.sleep(0.02)
        [entry] = again
        assert entry["attempts"] == 4 and entry["replays"] == 1
        assert [(h["attempt"], h["replay"]) for h in entry["history"]] == [(1, 0), (2, 0), (3, 1), (4, 1)]
        status = (await wait_final(client, nid))["channels"]["sms"]
        steps = [a["status"] for a in status["attempts"]]
        assert status["status"] == "dead_lettered"
        assert steps == ["accepted", "queued", "queued", "dead_lettered", "queued", "queued", "dead_lettered"], status
        assert status["attempts"][4]["detail"] == "replayed from the dead-letter queue (1)"
        times = [a["at"] for a in status["attempts"]]
        assert times == sorted(times)


async def test_dlq_before_over_the_cli(tmp_path):
    async with running_node(tmp_path, clients={Channel.SMS: Switchable()}, **SETTINGS) as herald, http(herald) as client:
        old = await dead_lettered(client, ["d1", "d2"])
        await trio.sleep(0.01)  # the next one is dead-lettered in a later millisecond
        new = await dead_lettered(client, ["d3"])
        cli_args = ["--server", herald.url, "--api-key", "test-key"]
        after_cut = iso(wall_ms())
        code, listed = await run_cli("dlq", "list", "--before", after_cut, *cli_args)
        assert code == 0 and sorted(e["notification_id"] for e in listed["items"]) == sorted(old + new)
        first_new_ms = min(e["dead_lettered_at"] for e in await entries(client) if e["notification_id"] in new)
        code, listed = await run_cli("dlq", "list", "--before", first_new_ms, *cli_args)
        assert sorted(e["notification_id"] for e in listed["items"]) == sorted(old)
        code, purged = await run_cli("dlq", "purge", "--before", first_new_ms, *cli_args)
        assert code == 0 and (purged["state"], purged["discarded"]) == ("done", 2)
        assert [e["notification_id"] for e in await entries(client)] == new
        bad = await client.get("/v1/admin/dlq", params={"before": "soon"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "before"
