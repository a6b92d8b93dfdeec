"""POST /v1/notifications is served on the ASGI fast path; the Quart route answers the same."""

import json

from tests.helpers import http, running_node, web_notification

CASES = [
    (web_notification("fp1"), {}, 202),
    ({"user_id": "fp1", "channels": ["fax"], "content": {}}, {}, 400),
    ({"user_id": "fp1", "channels": ["sms"], "content": {}}, {}, 422),
    (web_notification("fp1"), {"Idempotency-Key": "x" * 256}, 400),
]


async def test_the_fast_path_serves_the_route_and_the_quart_route_gives_the_same_answers(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        quart = herald.front.quart.test_client()
        for body, headers, status in CASES:
            fast = await client.post("/v1/notifications", json=body, headers=headers)
            slow = await quart.post("/v1/notifications", json=body, headers={"Authorization": "Bearer test-key", **headers})
            assert fast.status_code == slow.status_code == status, (body, fast.text)
            assert fast.headers["content-type"] == slow.headers["content-type"]
            fast_body, slow_body = fast.json(), json.loads(await slow.get_data())
            if status == 202:
                assert set(fast_body) == set(slow_body) == {"notification_id", "status"}
                assert slow.headers["location"] == f"/v1/notifications/{slow_body['notification_id']}"
            else:
                assert fast_body == slow_body
        assert herald.front.fast.served == len(CASES)


async def test_the_fast_path_refuses_what_the_quart_route_refuses(tmp_path):
    async with running_node(tmp_path) as herald, http(herald, key="wrong") as wrong, http(herald) as client:
        unauthorized = await wrong.post("/v1/notifications", json=web_notification())
        assert unauthorized.status_code == 401 and unauthorized.headers["www-authenticate"].startswith("Bearer")
        too_big = await client.post("/v1/notifications", content=b"x" * (herald.config.max_body_bytes + 1))
        assert too_big.status_code == 413 and too_big.headers["content-type"] == "application/problem+json"
        # other methods on the path still go to Quart, which knows only POST there
        assert (await client.get("/v1/notifications")).status_code == 405
