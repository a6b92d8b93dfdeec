"""Hundreds of malformed requests: every answer is a 4xx problem+json naming the field, never a 5xx."""

import json
import random

import trio

from tests.helpers import all_channels, http, running_node, web_notification


def mutations(seed: int, count: int):
    """Deterministic malformed bodies: broken JSON, wrong types, unknown and missing fields, junk bytes."""
    rng = random.Random(seed)
    valid = all_channels("fuzz")
    junk_values = [None, 0, -1, 1.5, True, "", "x" * 300, [], {}, [1, 2], {"a": {}}, "\u0000", "\udbff", 2**70]
    paths = [
        ("user_id",), ("channels",), ("content",), ("content", "email"), ("content", "email", "subject"),
        ("content", "sms", "text"), ("content", "push", "data"), ("content", "web", "url"), ("to",),
        ("to", "email"), ("to", "phone"), ("priority",), ("data",),
    ]
    for _ in range(count):
        kind = rng.randrange(7)
        body = json.loads(json.dumps(valid))
        if kind == 0:  # wrong type somewhere
            path = rng.choice(paths)
            target = body
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = rng.choice(junk_values)
            yield json.dumps(body, default=str).encode(errors="surrogatepass")
        elif kind == 1:  # a required field missing
            del body[rng.choice(["user_id", "channels", "content"])]
            yield json.dumps(body).encode()
        elif kind == 2:  # an unknown field, at the top or nested
            target = rng.choice([body, body["content"], body["content"]["email"], body["to"]])
            target[f"unknown_{rng.randrange(100)}"] = 1
            yield json.dumps(body).encode()
        elif kind == 3:  # truncated JSON
            raw = json.dumps(body).encode()
            yield raw[: rng.randrange(1, len(raw) - 1)]
        elif kind == 4:  # random bytes
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        elif kind == 5:  # semantic errors: content missing for a channel, an unknown channel, no address
            body["channels"] = rng.choice([["fax"], ["email", "email"], [], ["web", "sms"]])
            if rng.random() < 0.5:
                body.pop("to")
            yield json.dumps(body).encode()
        else:  # a non-object document
            yield rng.choice([b"[]", b"null", b"42", b'"text"', b"{}", b"true"])


async def test_malformed_notification_bodies_get_problems_naming_the_field(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        statuses = {}
        for body in mutations(seed=1, count=400):
            response = await client.post("/v1/notifications", content=body, headers={"Content-Type": "application/json"})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (body, response.text)
            if response.status_code >= 400:
                assert response.headers["content-type"] == "application/problem+json"
                problem = response.json()
                assert problem["status"] == response.status_code
                assert problem["errors"][0]["field"], problem
        assert set(statuses) <= {202, 400, 422}, statuses
        assert statuses.get(400, 0) > 100 and statuses.get(422, 0) > 10, statuses


async def test_oversized_body_is_413(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        big = web_notification(data={"blob": "x" * (herald.config.max_body_bytes + 1)})
        response = await client.post("/v1/notifications", json=big)
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        # and without a Content-Length (chunked): still refused
        async def chunks():
            yield json.dumps(big).encode()

        response = await client.post("/v1/notifications", content=chunks())
        assert response.status_code == 413


async def test_bad_paths_methods_and_parameters_are_4xx_problems(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        cases = [
            ("GET", "/v1/notifications/not-an-id"),
            ("GET", "/v1/notifications/01J0000000000000000000000A"),
            ("GET", "/v1/users/u1/notifications?limit=0"),
            ("GET", "/v1/users/u1/notifications?limit=abc"),
            ("GET", "/v1/users/u1/notifications?channel=fax"),
            ("GET", "/v1/users/u1/notifications?since=yesterday"),
            ("GET", "/v1/users/u1/notifications?bogus=1"),
            ("GET", "/v1/users/" + "x" * 200 + "/notifications"),
            ("DELETE", "/v1/notifications"),
            ("GET", "/v1/nothing-here"),
            ("POST", "/v1/users/u1/tokens"),
        ]
        for method, path in cases:
            response = await client.request(method, path, content=b'{"ttl_s": 1}' if method == "POST" else None)
            assert 400 <= response.status_code < 500, (method, path, response.status_code, response.text)
            assert response.headers["content-type"] == "application/problem+json", (method, path)


async def test_a_full_ingress_mailbox_answers_503_not_500(tmp_path):
    async with running_node(tmp_path, ingress_workers=1, ingress_mailbox=1) as herald, http(herald) as client:
        codes = []

        async def post():
            codes.append((await client.post("/v1/notifications", json=web_notification())).status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(60):
                nursery.start_soon(post)
        assert set(codes) <= {202, 503}
        assert 202 in codes


async def test_odd_numbers_in_query_parameters_are_400_not_500(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        for params in ({"limit": "²"}, {"limit": "9" * 30}, {"since": "9" * 30}, {"until": "²"}, {"since": "0001-01-01T00:00:00"}):
            response = await client.get("/v1/users/u1/notifications", params=params)
            assert response.status_code == 400, (params, response.text)
            assert response.json()["errors"][0]["field"] in params
