"""POST /v1/notifications/batch: per-item results, one bus append, the single route's checks, idempotency, limits."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest

from actors.api.errors import ProblemError
from actors.api.notifications import batch_items
from tests.helpers import http, running_node, wait_final, web_notification

BATCH = "/v1/notifications/batch"
CVE = "Hello =?utf-8?q?x=0D=0ABcc:_evil@attacker.example=0D=0A=0D=0AFake_body?="


def email(user: str, subject: str = "Hi", **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "channels": ["email"], "content": {"email": {"subject": subject, "text": "t"}},
            "to": {"email": f"{user}@example.org"}, **extra}


def fields(item: dict[str, Any]) -> list[str]:
    return [e["field"] for e in item["problem"]["errors"]]


class CountingProduce:
    """Wraps a bus's produce: how many calls, how many records each."""

    def __init__(self, bus: Any) -> None:
        self.calls: list[int] = []
        self.inner = bus.produce
        bus.produce = self

    async def __call__(self, items: Any) -> Any:
        self.calls.append(len(items))
        return await self.inner(items)


async def test_a_mixed_batch_answers_each_item_in_order_and_accepts_the_valid_ones_in_one_append(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        assert herald.ingress is not None
        produce = CountingProduce(herald.ingress.bus)
        items = [
            web_notification("b0"),
            {"user_id": "b1", "channels": ["fax"], "content": {}},  # schema: 400 as on the single route
            email("b2", "Hi\r\nBcc: x"),  # header injection
            email("b3"),
            {"user_id": "b4", "channels": ["sms"], "content": {}},  # rules: content.sms missing
            email("b5", CVE),  # an encoded word in the subject
            "not an object",
            {**web_notification("b7"), "extra": 1},  # unknown field
            web_notification("b8"),
        ]
        answer = await client.post(BATCH, json={"items": items})
        assert answer.status_code == 202, answer.text
        assert answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert (body["accepted"], body["rejected"]) == (3, 6)
        results = body["items"]
        assert len(results) == len(items)
        accepted = {i: r["notification_id"] for i, r in enumerate(results) if "notification_id" in r}
        assert sorted(accepted) == [0, 3, 8]
        assert fields(results[1]) == ["items[1].channels.0"] and results[1]["problem"]["status"] == 400
        assert fields(results[2]) == ["items[2].content.email.subject"] and "carriage return" in results[2]["problem"]["detail"]
        assert fields(results[4]) == ["items[4].content.sms", "items[4].to.phone"] and results[4]["problem"]["status"] == 422
        assert fields(results[5]) == ["items[5].content.email.subject"]
        assert fields(results[6]) == ["items[6]"]
        assert fields(results[7]) == ["items[7].extra"]
        assert all(r["problem"]["detail"].startswith(f"items[{i}]") for i, r in enumerate(results) if "problem" in r)
        # one durable append for the three accepted (one record each), and they are found and delivered
        assert produce.calls == [3]
        for i, nid in accepted.items():
            status = await wait_final(client, nid)
            assert status["user_id"] == items[i]["user_id"]  # type: ignore[index]
        assert (await wait_final(client, accepted[3]))["channels"]["email"]["status"] == "delivered"


async def test_a_batch_to_many_users_reaches_each_of_them(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        users = [f"many{i}" for i in range(200)]
        answer = await client.post(BATCH, json={"items": [web_notification(u, title=f"to {u}") for u in users]})
        assert answer.status_code == 202 and answer.json()["accepted"] == 200
        ids = [r["notification_id"] for r in answer.json()["items"]]
        assert len(set(ids)) == 200
        for user, nid in zip(users[::40], ids[::40], strict=True):
            history = (await client.get(f"/v1/users/{user}/notifications")).json()["items"]
            assert [h["notification_id"] for h in history] == [nid]


async def test_a_batch_with_no_valid_item_is_a_422_with_each_items_problem(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        assert herald.ingress is not None
        produce = CountingProduce(herald.ingress.bus)
        answer = await client.post(BATCH, json={"items": [email("n0", "a\nb"), {"user_id": "n1"}]})
        assert answer.status_code == 422
        assert answer.headers["content-type"] == "application/problem+json"
        body = answer.json()
        assert (body["accepted"], body["rejected"]) == (0, 2)
        assert [e["field"] for e in body["errors"]] == ["items[0].content.email.subject", "items[1].channels"]
        assert [fields(item) for item in body["items"]] == [["items[0].content.email.subject"], ["items[1].channels"]]
        assert produce.calls == []


async def test_the_batch_itself_is_checked(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        too_many = await client.post(BATCH, json={"items": [web_notification(f"t{i}") for i in range(1001)]})
        assert too_many.status_code == 422 and [e["field"] for e in too_many.json()["errors"]] == ["items"]
        assert "1 to 1000" in too_many.json()["detail"]
        empty = await client.post(BATCH, json={"items": []})
        assert empty.status_code == 422 and [e["field"] for e in empty.json()["errors"]] == ["items"]
        for bad, field in (({"item": []}, "item"), ({}, "items"), ({"items": {}}, "items")):
            answer = await client.post(BATCH, json=bad)
            assert answer.status_code == 400 and [e["field"] for e in answer.json()["errors"]] == [field], answer.text
        malformed = await client.post(BATCH, content=b'{"items": [', headers={"Content-Type": "application/json"})
        assert malformed.status_code == 400 and malformed.json()["title"] == "Malformed JSON"
        form = await client.post(BATCH, content=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert form.status_code == 415
        assert (await client.post(f"{BATCH}?x=1", json={"items": [web_notification()]})).status_code == 400


async def test_the_body_limit_fits_a_full_batch_and_says_what_it_is(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        limit, item_limit = herald.config.max_batch_body_bytes, herald.config.max_body_bytes
        # a full batch far past the single route's limit is read
        full = [web_notification(f"f{i}", data={"pad": "x" * 1500}) for i in range(1000)]
        answer = await client.post(BATCH, json={"items": full})
        assert len(json.dumps({"items": full})) > 20 * item_limit
        assert answer.status_code == 202 and answer.json()["accepted"] == 1000, answer.text[:500]
        # past the batch limit: a 413 naming it, whether the length is announced or not
        big = json.dumps({"items": [web_notification("big", data={"pad": "x" * (item_limit - 200)}) for _ in range(limit // item_limit + 1)]})
        for content in (big.encode(), _chunks(big.encode())):
            refused = await client.post(BATCH, content=content, headers={"Content-Type": "application/json"})
            assert refused.status_code == 413 and refused.headers["content-type"] == "application/problem+json"
            assert f"body over {limit} bytes (max_batch_body_bytes)" in refused.json()["detail"]
        # an item over the single route's limit is refused alone
        mixed = await client.post(BATCH, json={"items": [web_notification("big", data={"x": "y" * item_limit}), web_notification("ok")]})
        assert mixed.status_code == 202, mixed.text
        first, second = mixed.json()["items"]
        assert first["problem"]["status"] == 413 and fields(first) == ["items[0]"] and "notification_id" in second


async def _chunks(data: bytes):  # a body sent chunked, with no Content-Length
    for start in range(0, len(data), 65536):
        yield data[start : start + 65536]


async def test_one_idempotency_key_covers_the_batch(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        assert herald.ingress is not None
        produce = CountingProduce(herald.ingress.bus)
        batch = {"items": [web_notification("i0"), web_notification("i1"), {"user_id": "i2"}]}
        first = await client.post(BATCH, json=batch, headers={"Idempotency-Key": "k1"})
        again = await client.post(BATCH, content=json.dumps(batch, indent=2), headers={"Idempotency-Key": "k1",
                                                                                       "Content-Type": "application/json"})
        assert first.status_code == again.status_code == 202
        assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
        assert produce.calls == [2]
        other = await client.post(BATCH, json={"items": [web_notification("i0")]}, headers={"Idempotency-Key": "k1"})
        assert other.status_code == 422 and [e["field"] for e in other.json()["errors"]] == ["Idempotency-Key"]
        # the key is the batch route's: the single route with the same key is another request
        single = await client.post("/v1/notifications", json=web_notification("i0"), headers={"Idempotency-Key": "k1"})
        assert single.status_code == 202


async def test_a_batch_of_n_costs_n_tokens_and_needs_send(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as admin:
        made = await admin.post("/v1/admin/keys", json={"scopes": ["send"], "rate_per_s": 0.01, "burst": 10})
        reader = await admin.post("/v1/admin/keys", json={"scopes": ["read"]})
        assert made.status_code == reader.status_code == 201
        async with http(herald, key=made.json()["key"]) as sender, http(herald, key=reader.json()["key"]) as read_only:
            refused = await read_only.post(BATCH, json={"items": [web_notification()]})
            assert refused.status_code == 403
            over_burst = await sender.post(BATCH, json={"items": [web_notification(f"r{i}") for i in range(11)]})
            assert over_burst.status_code == 422 and [e["field"] for e in over_burst.json()["errors"]] == ["items"]
            assert "burst (10)" in over_burst.json()["detail"]
            # that refusal cost its one request token: 9 are left; a batch of 9 takes them all
            nine = await sender.post(BATCH, json={"items": [web_notification(f"r{i}") for i in range(9)]})
            assert nine.status_code == 202 and nine.json()["accepted"] == 9
            after = await sender.post("/v1/notifications", json=web_notification("r9"))
            assert after.status_code == 429 and "retry-after" in after.headers


async def test_every_call_costs_its_items_a_replay_too_and_a_429_leaves_the_key_free(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as admin:
        made = await admin.post("/v1/admin/keys", json={"scopes": ["send"], "rate_per_s": 0.01, "burst": 10})
        async with http(herald, key=made.json()["key"]) as sender:
            batch = {"items": [web_notification(f"q{i}") for i in range(4)]}
            first = await sender.post(BATCH, json=batch, headers={"Idempotency-Key": "k"})
            replay = await sender.post(BATCH, json=batch, headers={"Idempotency-Key": "k"})
            assert first.status_code == replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
            # 8 tokens spent: a batch of 4 more is refused before anything is sent, and its key is not taken
            other = {"items": [web_notification(f"o{i}") for i in range(4)]}
            over = await sender.post(BATCH, json=other, headers={"Idempotency-Key": "retry-me"})
            assert over.status_code == 429 and over.headers["retry-after"]
            assert "items" in over.json()["detail"]
            single = await sender.post("/v1/notifications", json=web_notification("q"))  # the 429 took one token
            assert single.status_code == 202
        assert (await admin.get("/v1/users/o0/notifications")).json()["items"] == []
        state, prefix = herald.gateway.idempotency.state, f"idempotency:{made.json()['key_id']}:POST {BATCH}"
        assert await state.get(f"{prefix}:k") is not None and await state.get(f"{prefix}:retry-me") is None


async def test_preferences_and_templates_apply_to_each_item(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        assert (await client.put("/v1/users/pa/preferences", json={"contact": {"email": "pa@example.org"}})).status_code == 200
        spec = {"locales": {"en": {"email": {"subject": "Welcome {{name}}", "text": "Hi {{name}}"}}}}
        assert (await client.post("/v1/templates/welcome", json=spec)).status_code == 201
        templated = {"channels": ["email"], "template_id": "welcome"}
        items = [
            {"user_id": "pa", "channels": ["email"], "content": {"email": {"subject": "s", "text": "t"}}},  # address from preferences
            {"user_id": "pb", "channels": ["email"], "content": {"email": {"subject": "s", "text": "t"}}},  # none anywhere
            {**templated, "user_id": "pa", "data": {"name": "Al\r\nBcc: evil@attacker.example"}},  # injection through data
            {**templated, "user_id": "pa", "data": {"name": "Al"}},
            {**templated, "user_id": "pa", "template_id": "missing"},
        ]
        answer = await client.post(BATCH, json={"items": items})
        assert answer.status_code == 202, answer.text
        results = answer.json()["items"]
        assert "notification_id" in results[0] and "notification_id" in results[3]
        assert fields(results[1]) == ["items[1].to.email"]
        assert fields(results[2]) == ["items[2].data.name"]
        assert fields(results[4]) == ["items[4].template_id"]
        status = await wait_final(client, results[3]["notification_id"])
        assert status["channels"]["email"]["status"] == "delivered" and status["template"].startswith("welcome@1")


async def test_the_quart_route_gives_the_fast_paths_answers(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        assert herald.front is not None
        quart = herald.front.quart.test_client()
        served = herald.front.fast.served
        for batch in ({"items": [{"user_id": "x"}]}, {"items": []}, {"items": [web_notification("qa"), {"user_id": "x"}]}):
            fast = await client.post(BATCH, json=batch)
            slow = await quart.post(BATCH, json=batch, headers={"Authorization": "Bearer test-key"})
            assert fast.status_code == slow.status_code, fast.text
            fast_body, slow_body = fast.json(), json.loads(await slow.get_data())
            if fast.status_code == 202:
                assert [set(i) for i in fast_body["items"]] == [set(i) for i in slow_body["items"]]
            else:
                assert fast_body == slow_body
        assert herald.front.fast.served == served + 3


async def test_the_batch_path_is_posts_alone(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        for method in ("GET", "PUT", "DELETE"):  # GET is not a status lookup of a notification "batch"
            answer = await client.request(method, BATCH)
            allowed = set(answer.headers.get("allow", "").split(", "))
            assert answer.status_code == 405 and "POST" in allowed and "GET" not in allowed, (method, answer.status_code, allowed)
            assert answer.headers["content-type"] == "application/problem+json"
        options = await client.options(BATCH)
        assert "GET" not in options.headers["allow"] and "POST" in options.headers["allow"]
        lookalike = await client.get(f"{BATCH}x")  # still the status route, which names the bad id
        assert lookalike.status_code == 400 and lookalike.json()["errors"][0]["field"] == "notification_id"


def test_a_million_tiny_items_are_refused_without_building_them():
    """msgspec builds a list before its length is checked: 1,000,000 `1`s would be ~56 MB of objects for a 2 MB body."""
    for body in (b'{"items":[' + b",".join([b"1"] * 1_000_000) + b"]}", b'{"items":[[' + b",".join([b"1"] * 1_000_000) + b"]]}"):
        tracemalloc.start()
        try:
            if body.startswith(b'{"items":[['):
                assert len(batch_items(body)) == 1  # one item (refused later, alone), not a million objects
            else:
                with pytest.raises(ProblemError) as refused:
                    batch_items(body)
                assert refused.value.problem.status == 422 and refused.value.problem.errors[0].field == "items"
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1_000_000, f"decoding took {peak} bytes at its peak"
    assert [bytes(r) for r in batch_items(b'{"items": [1, {"a": [2, 3]}, "x"]}')] == [b"1", b'{"a": [2, 3]}', b'"x"']
