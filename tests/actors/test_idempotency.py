"""Idempotency-Key on POST /v1/notifications."""

import trio

from tests.helpers import http, running_node, web_notification


async def test_same_key_same_body_replays_the_original_response(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        body = web_notification("idem1")
        first = await client.post("/v1/notifications", json=body, headers={"Idempotency-Key": "k-1"})
        again = await client.post("/v1/notifications", json=body, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == again.status_code == 202
        assert again.json()["notification_id"] == first.json()["notification_id"]
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert again.headers["location"] == first.headers["location"]
        history = (await client.get("/v1/users/idem1/notifications")).json()
        assert len(history["items"]) == 1


async def test_same_key_different_body_is_422(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        await client.post("/v1/notifications", json=web_notification("idem2", "a"), headers={"Idempotency-Key": "k-2"})
        other = await client.post("/v1/notifications", json=web_notification("idem2", "b"), headers={"Idempotency-Key": "k-2"})
        assert other.status_code == 422
        assert other.headers["content-type"] == "application/problem+json"
        assert other.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_concurrent_requests_with_one_key_make_one_notification(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        body = web_notification("idem3")
        results = []

        async def post():
            response = await client.post("/v1/notifications", json=body, headers={"Idempotency-Key": "k-3"})
            results.append((response.status_code, response.json()["notification_id"]))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(post)
        assert {status for status, _ in results} == {202}
        assert len({nid for _, nid in results}) == 1
        assert herald.ingress.accepted == 1


async def test_keys_longer_than_255_are_400_and_bad_bodies_are_not_kept(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        too_long = await client.post("/v1/notifications", json=web_notification(), headers={"Idempotency-Key": "x" * 256})
        assert too_long.status_code == 400
        assert too_long.json()["errors"][0]["field"] == "Idempotency-Key"
        ok = await client.post("/v1/notifications", json=web_notification("idem4"), headers={"Idempotency-Key": "x" * 255})
        assert ok.status_code == 202
        # a 4xx answer is kept too: the same bad request with the same key gets the same answer
        bad = {"user_id": "idem4", "channels": ["sms"], "content": {}}
        first = await client.post("/v1/notifications", json=bad, headers={"Idempotency-Key": "k-5"})
        second = await client.post("/v1/notifications", json=bad, headers={"Idempotency-Key": "k-5"})
        assert first.status_code == second.status_code == 422
        assert second.headers["idempotent-replayed"] == "true"


async def test_keys_expire_after_24_hours(tmp_path, mock_clock):
    # time jumps only after 0.25 s of real idleness: never in the middle of a request
    mock_clock.autojump_threshold = 0.25
    async with running_node(tmp_path) as herald, http(herald) as client:
        body = web_notification("idem6")
        first = await client.post("/v1/notifications", json=body, headers={"Idempotency-Key": "k-6"})
        await trio.sleep(24 * 3600 + 1)
        later = await client.post("/v1/notifications", json=body, headers={"Idempotency-Key": "k-6"})
        assert later.status_code == 202
        assert later.json()["notification_id"] != first.json()["notification_id"]
