"""Odd inputs found while describing the API (issue 4, item 7): each is a 4xx problem, never a 5xx.

A known bug whose fix belongs to code another change owns is marked xfail(strict=True), so that it fails the
suite once fixed and the mark comes off with the fix.
"""

from __future__ import annotations

import base64
import json

import trio

from reactor.backends.embedded.log_store import encode_cursor, encode_inbox_cursor
from tests.helpers import http, running_node, web_notification

HUGE = "99999999999999999999"  # past SQLite's 64-bit INTEGER


def assert_bad_request(response, field: str) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == field, response.text


async def test_out_of_range_numbers_and_unicode_digits_are_refused(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        for cursor in ("\u00b2", HUGE, "-1"):
            assert_bad_request(await client.get("/v1/admin/dlq", params={"cursor": cursor}), "cursor")
        for method in ("POST", "DELETE"):
            path = "/v1/admin/dlq/replay" if method == "POST" else "/v1/admin/dlq"
            response = await client.request(method, path, json={"ids": [2**63]})
            assert_bad_request(response, "ids.0")
        assert (await client.post("/v1/templates/t1", json={"locales": {"en": {"web": {"title": "x"}}}})).status_code == 201
        assert_bad_request(await client.post("/v1/templates/t1/render", json={"version": 2**63}), "version")
        assert_bad_request(await client.post("/v1/templates/t1/render", json={"version": 2**31 + 1}), "version")


async def test_cursors_out_of_range_or_nested_too_deep_are_refused(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        for cursor in (encode_cursor("u1", 10**30, "x", "y"), encode_cursor("u1", -(10**30), "x", "y")):
            assert_bad_request(await client.get("/v1/users/u1/notifications", params={"cursor": cursor}), "cursor")
        deep = base64.urlsafe_b64encode(b"[" * 5000).decode()
        for cursor in (encode_inbox_cursor("u1", 10**30, "x"), deep):
            assert_bad_request(await client.get("/v1/users/u1/inbox", params={"cursor": cursor}), "cursor")


async def test_another_users_cursor_or_another_listings_is_a_400_naming_it(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        for user in ("u1", "u2"):
            for i in range(3):
                assert (await client.post("/v1/notifications", json=web_notification(user, f"n{i}"))).status_code == 202
        with trio.fail_after(10):  # the inbox rows are written once the web channel delivered
            while len(await herald.logstore.inbox_after("u1", None)) < 3:
                await trio.sleep(0.02)
        history = (await client.get("/v1/users/u1/notifications", params={"limit": 2})).json()["next_cursor"]
        inbox = (await client.get("/v1/users/u1/inbox", params={"limit": 2})).json()["next_cursor"]
        assert history and inbox
        assert (await client.get("/v1/users/u1/notifications", params={"cursor": history})).status_code == 200
        assert (await client.get("/v1/users/u1/inbox", params={"cursor": inbox})).status_code == 200
        assert_bad_request(await client.get("/v1/users/u2/notifications", params={"cursor": history}), "cursor")
        assert_bad_request(await client.get("/v1/users/u2/inbox", params={"cursor": inbox}), "cursor")
        assert_bad_request(await client.get("/v1/users/u1/inbox", params={"cursor": history}), "cursor")
        assert_bad_request(await client.get("/v1/users/u1/notifications", params={"cursor": inbox}), "cursor")


async def test_a_method_the_path_does_not_take_is_a_405_with_allow(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        response = await client.request("PATCH", "/v1/users/u1/preferences")
        assert response.status_code == 405 and response.headers["content-type"] == "application/problem+json"
        assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "OPTIONS", "PUT"}
        response = await client.request("TRACE", "/healthz")
        assert response.status_code == 405 and "GET" in response.headers["allow"]


async def test_odd_limits_and_times_elsewhere_than_the_history_are_refused(tmp_path):
    """tests/actors/test_bad_input.py has the history's; the same helpers serve these."""
    async with running_node(tmp_path) as herald, http(herald) as client:
        for path in ("/v1/users/u1/inbox", "/v1/admin/dlq"):
            for limit in ("\u00b2", HUGE):
                assert_bad_request(await client.get(path, params={"limit": limit}), "limit")
        for method, path in (("POST", "/v1/admin/dlq/replay"), ("DELETE", "/v1/admin/dlq")):
            refused = await client.request(method, path, json={"before": HUGE})  # a body field: 422, as every DLQ selection problem
            assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "before", refused.text


async def test_json_nested_too_deep_is_refused(tmp_path):
    deep = "[" * 3000 + "]" * 3000  # written out: the test's own json module would refuse to encode it
    notification = json.dumps(web_notification(data={"x": "DEEP"})).replace('"DEEP"', deep)
    async with running_node(tmp_path) as herald, http(herald) as client:
        headers = {"Content-Type": "application/json"}
        response = await client.post("/v1/notifications", content=notification, headers=headers)
        assert 400 <= response.status_code < 500, response.status_code
        response = await client.post("/v1/templates/t1", content='{"locales": ' + deep + "}", headers=headers)
        assert 400 <= response.status_code < 500, response.status_code


async def test_a_trailing_newline_does_not_pass_a_pattern(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        assert_bad_request(await client.put("/v1/users/u1%0A/preferences", json={}), "user_id")
        response = await client.post("/v1/users/u1/devices", json={"platform": "fcm", "token": "tok\n"})
        assert response.status_code == 400, response.text


async def test_a_keep_alive_connection_closes_after_an_early_answer_to_a_request_with_a_body(tmp_path):
    """The server answers (405, 401, 413...) before the request's body arrives: the answer says `Connection: close` and
    the connection ends, so the body sent after it is never read as the next request and the client does not hang
    (tests/api/test_connection_close.py has the 401s and 413s, on Quart and on the fast path)."""
    async with running_node(tmp_path, shutdown_grace_s=1) as herald:
        host, port = herald.url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(b"PATCH /v1/users/u1/preferences HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
            first = b""
            with trio.fail_after(10):
                while b"405" not in first or not first.endswith(b"}"):
                    first += await stream.receive_some()
            assert b"\r\nconnection: close\r\n" in first.lower(), first
            await stream.send_all(b"{}")  # the body, after the answer
            try:
                await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            except trio.BrokenResourceError:
                pass
            with trio.fail_after(10):  # not a hang: the end of the connection
                assert await stream.receive_some() == b""
