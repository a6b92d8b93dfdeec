"""One rule on every route: unknown query parameters, numbers, user ids, control characters, Content-Type.

The routes come from the app's url_map and the operations from the served /openapi.json,
so a route added later is checked too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest
from trio_websocket import ConnectionRejected, open_websocket_url

from actors.api.gateway import create_app
from tests.auth.test_every_route_needs_a_key import SAMPLE_ARGUMENTS
from tests.helpers import http, running_node, token_for, web_notification

ODD_NUMBERS = ["３", "٣", "1_0", " 5", "5 ", "1e1", "+5", "-1", "0x10", "²", "", "5.", ".5", "nan", "inf", "1,5"]
CONTROLS = ["\x00", "\x01", "\t", "\n", "\r", "\x1f", "\x7f", "\x85", "\x9f", "\u2028", "\u2029"]


def concrete(rule: str, **overrides: str) -> str:
    """A path for a rule, with sample values for its arguments."""
    for name, value in {**SAMPLE_ARGUMENTS, "token": "fcm-token-1", **overrides}.items():
        rule = rule.replace(f"<{name}>", value)
    return rule


def problem_field(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return str(response.json()["errors"][0]["field"])


async def spec_and_token(client: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    spec = (await client.get("/openapi.json")).json()
    return spec, await token_for(client, SAMPLE_ARGUMENTS["user_id"])


def credentials(operation: dict[str, Any], token: str) -> dict[str, str]:
    """The Authorization header an operation takes: the subscriber token where that is all it takes, else the key."""
    kinds = {name for requirement in operation.get("security", []) for name in requirement}
    return {"Authorization": f"Bearer {token}"} if kinds and "apiKey" not in kinds else {}


async def test_an_unknown_query_parameter_is_a_400_naming_it_on_every_route(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        spec, token = await spec_and_token(client)
        checked = 0
        for rule in create_app(herald.gateway).url_map.iter_rules():
            if rule.websocket:
                continue
            for method in sorted(rule.methods - {"OPTIONS"}):
                path = concrete(rule.rule)
                operation = spec["paths"].get(rule.rule.replace("<", "{").replace(">", "}"), {}).get(method.lower(), {})
                response = await client.request(
                    method, path, params={"bogus_param": "1"}, headers=credentials(operation, token),
                    content=b"{}" if method in ("POST", "PUT", "DELETE") else None,
                )
                what = f"{method} {rule.rule}"
                assert response.status_code == 400, (what, response.status_code, response.text)
                if method != "HEAD":
                    assert problem_field(response) == "bogus_param", what
                    assert "unknown query parameter" in response.json()["detail"], what
                checked += 1
        assert checked >= 40
        # the WebSocket too: refused at the handshake, before it is accepted
        url = herald.url.replace("http://", "ws://") + f"/v1/ws?token={token}&bogus_param=1"
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(url):
                pass
        assert rejected.value.status_code == 400 and b"bogus_param" in (rejected.value.body or b"")
        # and a known one is not refused
        async with open_websocket_url(url.replace("&bogus_param=1", "&last_id=" + SAMPLE_ARGUMENTS["nid"])) as ws:
            await ws.send_message('{"type": "ping"}')


async def test_every_numeric_query_parameter_takes_ascii_digits_only(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        spec, token = await spec_and_token(client)
        checked: set[str] = set()
        for template, item in spec["paths"].items():
            for method, operation in item.items():
                for parameter in operation.get("parameters", []):
                    schema = parameter["schema"]
                    numeric = schema.get("type") in ("integer", "number") or schema.get("pattern") == "^[0-9]+$"
                    if parameter["in"] != "query" or not numeric:
                        continue
                    name, path = parameter["name"], concrete(template.replace("{", "<").replace("}", ">"))
                    headers = credentials(operation, token)
                    for odd in ODD_NUMBERS:
                        response = await client.request(method.upper(), path, params={name: odd}, headers=headers)
                        assert response.status_code == 400, (method, template, name, odd, response.status_code, response.text)
                        assert problem_field(response) == name, (template, name, odd)
                    base = {"timeout": "0"} if template == "/v1/poll" else {}  # a poll that answers at once
                    fine = await client.request(method.upper(), path, params={**base, name: "1"}, headers=headers)
                    assert fine.status_code != 400, (method, template, name, fine.text)
                    checked.add(f"{template}?{name}")
        assert {"/v1/poll?timeout", "/v1/poll?limit", "/v1/users/{user_id}/notifications?limit", "/v1/admin/dlq?cursor",
                "/v1/templates/{template_id}?version", "/v1/users/{user_id}/inbox?limit"} <= checked, checked
        # the times take milliseconds as the same digits, or RFC 3339
        for odd in ODD_NUMBERS[:6]:
            response = await client.get("/v1/users/u1/notifications", params={"since": odd})
            assert response.status_code == 400 and problem_field(response) == "since", (odd, response.text)
        poll = await client.get("/v1/poll", params={"timeout": "0.2"}, headers={"Authorization": f"Bearer {token}"})
        assert poll.status_code == 200 and poll.json()["items"] == [], poll.text


async def test_the_user_ids_dot_and_dot_dot_are_refused_everywhere(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        for dots in (".", ".."):
            checked = 0
            for rule in create_app(herald.gateway).url_map.iter_rules():
                if "<user_id>" not in rule.rule:
                    continue
                # percent-encoded, or the client would resolve them as path segments before sending
                path = concrete(rule.rule, user_id=dots.replace(".", "%2E"))
                for method in sorted(rule.methods - {"OPTIONS", "HEAD"}):
                    response = await client.request(method, path, content=b"{}" if method != "GET" else None)
                    assert response.status_code == 400, (method, path, response.status_code, response.text)
                    assert problem_field(response) == "user_id", (method, path)
                    checked += 1
            assert checked >= 12
            for body in (web_notification(user=dots), {"user_id": dots, "data": {}}):
                url = "/v1/notifications" if "channels" in body else "/v1/templates/t1/render"
                response = await client.post(url, json=body)
                assert response.status_code == 400 and problem_field(response) == "user_id", (url, dots, response.text)
        assert (await client.post("/v1/notifications", json=web_notification(user="a.b..c"))).status_code == 202


async def test_control_characters_are_refused_in_tokens_names_and_descriptions(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        template = {"locales": {"en": {"web": {"title": "Hi"}}}}
        for char in CONTROLS:
            cases = [
                ("POST", "/v1/users/u1/devices", {"platform": "fcm", "token": f"tok{char}en"}, "token"),
                ("POST", "/v1/notifications", {**web_notification(), "channels": ["push"],
                                               "content": {"push": {"title": "t"}}, "to": {"device_token": f"tok{char}"}},
                 "to.device_token"),
                ("POST", "/v1/admin/keys", {"scopes": ["read"], "name": f"ops{char}team"}, "name"),
                ("POST", "/v1/templates/t-control", {**template, "name": f"Welcome{char}"}, "name"),
            ]
            if char not in "\t\n":  # a description may run over lines
                cases.append(("POST", "/v1/templates/t-control", {**template, "description": f"a{char}b"}, "description"))
            for method, path, body, field in cases:
                response = await client.request(method, path, json=body)
                assert response.status_code == 400, (path, repr(char), response.status_code, response.text)
                assert problem_field(response) == field, (path, repr(char))
                assert "regex" not in response.text, response.text  # said in words
                assert "control characters" in response.json()["errors"][0]["message"], response.text
            deleted = await client.delete(f"/v1/users/u1/devices/tok{quote(char)}en")
            assert deleted.status_code == 400 and problem_field(deleted) == "token", (repr(char), deleted.text)
        # the same text without the control character goes through; a description keeps its line feeds
        assert (await client.post("/v1/users/u1/devices", json={"platform": "fcm", "token": "tok-en"})).status_code == 201
        assert (await client.post("/v1/admin/keys", json={"scopes": ["read"], "name": "ops team"})).status_code == 201
        saved = await client.post("/v1/templates/t-control", json={**template, "name": "Welcome", "description": "one\n\ttwo"})
        assert saved.status_code == 201, saved.text


async def test_a_json_body_needs_a_json_content_type_or_none_on_every_route(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        spec, _ = await spec_and_token(client)
        bodies = {
            "/v1/notifications": web_notification(),
            "/v1/admin/keys": {"scopes": ["read"]},
            "/v1/users/{user_id}/devices": {"platform": "fcm", "token": "fcm-token-1"},
            "/v1/templates/{template_id}": {"locales": {"en": {"web": {"title": "Hi"}}}},
        }
        checked = 0
        for template, item in spec["paths"].items():
            for method, operation in item.items():
                content = operation.get("requestBody", {}).get("content", {})
                if "application/json" not in content:
                    continue
                path = concrete(template.replace("{", "<").replace("}", ">"))
                body = httpx.Request("POST", "/", json=bodies.get(template, {})).content
                for refused in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x",
                                "application/json; charset=latin-1", "application/jsonx", "application/+json", "json", ""):
                    response = await client.request(method.upper(), path, content=body, headers={"Content-Type": refused})
                    what = (method, template, refused)
                    assert response.status_code == 415, (*what, response.status_code, response.text)
                    assert problem_field(response) == "Content-Type", what
                    assert "application/json" in response.json()["detail"], what
                for accepted in ("application/json", "application/json; charset=UTF-8", 'Application/JSON;charset="utf-8"',
                                 "application/vnd.herald+json", None):
                    headers = {} if accepted is None else {"Content-Type": accepted}
                    response = await client.request(method.upper(), path, content=body, headers=headers)
                    assert response.status_code != 415, (method, template, accepted, response.text)
                    if template in bodies and method == "post":
                        assert response.status_code in (201, 202, 409), (method, template, accepted, response.text)
                checked += 1
        assert checked >= 11
        # the one-click unsubscribe is a form by RFC 8058: it keeps taking one (tests/users cover the token)
        form = await client.post("/v1/unsubscribe", params={"token": "x.y"}, content=b"List-Unsubscribe=One-Click",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert form.status_code == 400 and problem_field(form) == "token", form.text
