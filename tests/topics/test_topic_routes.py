"""PUT, DELETE and GET /v1/topics/{topic}/subscribers: batches, paging across a boundary, names, scopes, bodies."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from protocol.topics import MAX_SUBSCRIBERS_PER_CALL
from tests.helpers import http, running_node, token_for


def field_of(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return str(response.json()["errors"][0]["field"])


async def every_page(client: httpx.AsyncClient, topic: str, limit: int) -> list[str]:
    got: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"/v1/topics/{topic}/subscribers", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["user_ids"]) <= limit
        got += page["user_ids"]
        cursor = page["next_cursor"]
        if cursor is None:
            return got


async def test_subscribers_are_added_in_batches_and_paged_each_once(tmp_path) -> None:
    users = [f"user-{i:04d}" for i in range(2500)]
    async with running_node(tmp_path) as herald, http(herald) as client:
        for start in range(0, len(users), MAX_SUBSCRIBERS_PER_CALL):
            response = await client.put("/v1/topics/news/subscribers", json={"user_ids": users[start : start + MAX_SUBSCRIBERS_PER_CALL]})
            assert response.status_code == 200, response.text
        assert response.json() == {"topic": "news", "changed": 500, "subscribers": 2500}
        again = await client.put("/v1/topics/news/subscribers", json={"user_ids": ["user-0001", "user-0001", "zed"]})
        assert again.json() == {"topic": "news", "changed": 1, "subscribers": 2501}, "a repeat, in the call or from before, counts once"
        for limit in (200, 7, 1):  # 2501 is no multiple of these: the last page is short; 1: every row is a boundary
            assert await every_page(client, "news", limit) == sorted([*users, "zed"])
        exact = await client.get("/v1/topics/news/subscribers", params={"limit": "200", "cursor": ""})
        assert exact.status_code == 400 and field_of(exact) == "cursor"  # an empty cursor is not one handed out
        removed = await client.request("DELETE", "/v1/topics/news/subscribers", json={"user_ids": ["zed", "user-0000", "nobody"]})
        assert removed.json() == {"topic": "news", "changed": 2, "subscribers": 2499}
        assert (await every_page(client, "news", 200)) == users[1:]
        assert (await client.get("/v1/topics/other/subscribers")).json() == {"topic": "other", "user_ids": [], "next_cursor": None}


async def test_bad_names_batches_cursors_and_limits_are_refused_naming_the_field(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        too_many = [f"u{i}" for i in range(MAX_SUBSCRIBERS_PER_CALL + 1)]
        response = await client.put("/v1/topics/news/subscribers", json={"user_ids": too_many})
        assert response.status_code == 422 and field_of(response) == "user_ids", response.text
        response = await client.request("DELETE", "/v1/topics/news/subscribers", json={"user_ids": too_many})
        assert response.status_code == 422 and field_of(response) == "user_ids"
        for body in ({"user_ids": []}, {"user_ids": ["has space"]}, {"user_ids": ["a", ".."]}, {"user_ids": ["x" * 129]}, {}):
            response = await client.put("/v1/topics/news/subscribers", json=body)
            assert response.status_code in (400, 422) and field_of(response).startswith("user_ids"), (body, response.text)
        assert (await client.put("/v1/topics/news/subscribers", json={"user_ids": ["a"], "x": 1})).status_code in (400, 422)
        assert (await client.put("/v1/topics/news/subscribers", content=b'{"user_ids": ["a"')).status_code == 400
        huge = b'{"user_ids": [' + b'"a",' * 40_000 + b'"a"]}'  # over max_body_bytes
        assert (await client.put("/v1/topics/news/subscribers", content=huge)).status_code == 413
        for bad in ("News", "-news", "a" * 101, "new s", "news\n", "ニュース"):
            response = await client.put(f"/v1/topics/{quote(bad, safe='')}/subscribers", json={"user_ids": ["a"]})
            assert response.status_code in (400, 404), (bad, response.status_code)
            if response.status_code == 400:
                assert field_of(response) == "topic", bad
        assert (await client.put(f"/v1/topics/{'a' * 100}/subscribers", json={"user_ids": ["a"]})).status_code == 200
        await client.put("/v1/topics/news/subscribers", json={"user_ids": ["a", "b", "c"]})
        first = (await client.get("/v1/topics/news/subscribers", params={"limit": "1"})).json()
        other = (await client.get("/v1/topics/other/subscribers", params={"cursor": first["next_cursor"]}))
        assert other.status_code == 400 and field_of(other) == "cursor", "a cursor of another topic"
        for cursor in ("garbage!", "AAAA", "e30", first["next_cursor"] + "x"):
            response = await client.get("/v1/topics/news/subscribers", params={"cursor": cursor})
            assert response.status_code == 400 and field_of(response) == "cursor", (cursor, response.text)
        for limit in ("0", "201", "x", "-1", "３"):
            response = await client.get("/v1/topics/news/subscribers", params={"limit": limit})
            assert response.status_code == 400 and field_of(response) == "limit", limit


async def test_only_a_key_that_may_send_writes_a_topic(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        _, reader = await herald.gateway.keys.create(["read"], "reader")
        _, sender = await herald.gateway.keys.create(["send"], "sender")
        token = await token_for(client, "alice")
        for credential in (reader, token):
            response = await client.put("/v1/topics/news/subscribers", json={"user_ids": ["alice"]},
                                        headers={"Authorization": f"Bearer {credential}"})
            assert response.status_code in (401, 403), response.text
            response = await client.request("DELETE", "/v1/topics/news/subscribers", json={"user_ids": ["alice"]},
                                            headers={"Authorization": f"Bearer {credential}"})
            assert response.status_code in (401, 403), response.text
        ok = await client.put("/v1/topics/news/subscribers", json={"user_ids": ["alice"]}, headers={"Authorization": f"Bearer {sender}"})
        assert ok.status_code == 200
        listed = await client.get("/v1/topics/news/subscribers", headers={"Authorization": f"Bearer {reader}"})
        assert listed.json()["user_ids"] == ["alice"]
        assert (await client.get("/v1/topics/news/subscribers", headers={"Authorization": f"Bearer {token}"})).status_code == 401
