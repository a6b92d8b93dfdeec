"""The OpenAPI description against the app: every route in it and nothing else, the scopes the auth tests
check, valid OpenAPI 3.1, examples the handlers' own types accept, a docs page that loads nothing."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import httpx
import msgspec
import schemathesis

from actors.api.gateway import create_app
from actors.api.openapi import NOT_IN_SPEC, OPERATIONS, Auth, CircuitList, PollResponse, app_routes, build_spec
from protocol import frames
from protocol.api import CircuitView
from tests.auth.test_every_route_needs_a_key import NOT_API_KEY_ROUTES, PUBLIC_ROUTES, ROUTE_SCOPES
from tests.helpers import running_node

CATALOGUE = {(op.method, op.rule): op for op in OPERATIONS}


async def test_the_catalogue_and_the_apps_routes_match_both_ways(tmp_path):
    async with running_node(tmp_path) as herald:
        app = create_app(herald.gateway)
    routes = app_routes(app)
    websockets = {rule.rule for rule in app.url_map.iter_rules() if rule.websocket}
    undocumented = {(m, rule) for m, rule in routes if (m, rule) not in CATALOGUE and rule not in NOT_IN_SPEC}
    assert not undocumented, f"routes missing from actors/api/openapi.py OPERATIONS (add them): {sorted(undocumented)}"
    gone = set(CATALOGUE) - routes
    assert not gone, f"OPERATIONS entries without a route in the app: {sorted(gone)}"
    assert websockets and websockets <= set(NOT_IN_SPEC), websockets
    assert set(NOT_IN_SPEC) <= {rule for _, rule in routes} | websockets, "NOT_IN_SPEC names a route the app lacks"
    assert websockets == set(build_spec()["x-websockets"]), "each WebSocket route is described in x-websockets"


def test_each_operation_has_the_scope_the_auth_tests_check():
    for (method, rule), op in CATALOGUE.items():
        what = f"{method} {rule}"
        if op.auth in (Auth.API_KEY, Auth.API_KEY_OR_SUBSCRIBER):
            assert ROUTE_SCOPES.get((method, rule)) == op.scope, (what, op.scope, ROUTE_SCOPES.get((method, rule)))
        elif rule.startswith("/v1/"):
            assert rule in NOT_API_KEY_ROUTES and (method, rule) not in ROUTE_SCOPES, what
            assert op.scope is None, what
        else:
            assert op.auth is Auth.NONE and rule in PUBLIC_ROUTES, what
    for (method, rule), scope in ROUTE_SCOPES.items():
        assert (method, rule) in CATALOGUE, f"{method} {rule} ({scope}) is not in the OpenAPI catalogue"
    for_the_user = {key for key, op in CATALOGUE.items() if op.auth is Auth.API_KEY_OR_SUBSCRIBER}
    assert for_the_user == {
        key for key in CATALOGUE if key[1].startswith("/v1/users/<user_id>/inbox") or key[1] == "/v1/users/<user_id>/digests"
    }


def test_the_security_requirements_say_the_same():
    spec = build_spec()
    for op in OPERATIONS:
        document = spec["paths"][op.path][op.method.lower()]
        requirement = document["security"]
        assert document["x-herald-auth"]["kind"] == op.auth.value
        if op.scope is not None:
            assert requirement[0] == {"apiKey": [op.scope]} and document["x-herald-auth"]["scope"] == op.scope, op.operation_id
            assert {"401", "403", "429"} <= set(document["responses"]), op.operation_id
        elif op.auth is Auth.SUBSCRIBER:
            assert requirement == [{"subscriberToken": []}, {"subscriberTokenQuery": []}] and "401" in document["responses"]
        else:
            assert requirement == [], op.operation_id
        if op.rule.startswith("/v1/"):
            assert "503" in document["responses"], op.operation_id


def test_the_document_is_valid_openapi_31_and_every_reference_resolves():
    spec = build_spec()
    assert spec["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(spec).validate()  # against the OpenAPI 3.1 meta-schema
    ids = [op.operation_id for op in OPERATIONS]
    assert len(ids) == len(set(ids))

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    assert value.startswith("#/"), value
                    target: Any = spec
                    for part in value[2:].split("/"):
                        assert part in target, f"{value} does not resolve"
                        target = target[part]
                elif key == "links":
                    assert all(link["operationId"] in ids for link in value.values()), value
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(spec)


def test_the_schemas_are_the_handlers_types():
    """The bodies and answers are the msgspec Structs the handlers decode and encode, as msgspec describes them."""
    spec = build_spec()
    schemas = spec["components"]["schemas"]
    for op in OPERATIONS:
        for kind, content in [("body", op.body.content if op.body else {})] + [(s, r.content) for s, r in op.replies.items()]:
            for media, value in content.items():
                if isinstance(value, dict):
                    continue
                _, components = msgspec.json.schema_components([value], ref_template="#/components/schemas/{name}")
                name = value.__name__
                assert schemas[name] == components[name], (op.operation_id, kind, media, name)
    # the shapes built inline by handlers have the fields of what they stand for
    assert msgspec.structs.fields(PollResponse)[0].name == "items"
    assert [f.name for f in msgspec.structs.fields(PollResponse)] == [f.name for f in msgspec.structs.fields(frames.PollResponse)]
    assert [f.name for f in msgspec.structs.fields(CircuitList)] == ["circuits"]
    assert msgspec.structs.fields(CircuitList)[0].type == list[CircuitView]


def test_the_examples_are_accepted_by_the_handlers_types():
    checked = 0
    for op in OPERATIONS:
        if op.body is not None and op.body.example is not None:
            msgspec.convert(op.body.example, op.body.content["application/json"])
            checked += 1
        for param in op.params:
            if param.example is not None and "pattern" in param.schema:
                assert re.search(param.schema["pattern"], param.example), (op.operation_id, param.name)
    assert checked >= 8


def test_a_filtered_document_drops_the_links_to_what_it_leaves_out():
    spec = build_spec({("POST", "/v1/notifications")})
    assert list(spec["paths"]) == ["/v1/notifications"]
    assert "links" not in spec["paths"]["/v1/notifications"]["post"]["responses"]["202"]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.urls: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("href", "src", "action", "srcset", "poster", "data") and value is not None:
                self.urls.append(value)
            if name == "id" and value:
                self.ids.add(value)


async def test_the_json_and_the_page_need_no_key_and_the_page_loads_nothing(tmp_path):
    async with running_node(tmp_path) as herald, httpx.AsyncClient(base_url=herald.url, timeout=10) as client:
        served = await client.get("/openapi.json")
        assert served.status_code == 200 and served.headers["content-type"] == "application/json"
        spec = served.json()
        assert spec == msgspec.json.decode(msgspec.json.encode(build_spec(app_routes(create_app(herald.gateway)))))
        docs = await client.get("/docs")
        assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
        assert docs.headers["content-security-policy"].startswith("default-src 'none'")
        again = await client.get("/openapi.json")
        assert again.content == served.content  # built once
    page = _Page()
    page.feed(docs.text)
    assert not page.tags & {"script", "link", "img", "iframe", "object", "embed", "video", "audio", "source"}, page.tags
    assert "@import" not in docs.text and "url(" not in docs.text
    for url in page.urls:
        assert url.startswith("#") or url == "openapi.json", url  # anchors in the page, or the document beside it
        assert not url.startswith("#") or url[1:] in page.ids, f"{url} points nowhere"
    for methods in spec["paths"].values():
        for operation in methods.values():
            assert f'id="op-{operation["operationId"]}"' in docs.text
    for name in spec["components"]["schemas"]:
        assert f'id="schema-{name}"' in docs.text
    assert "/v1/ws" in docs.text and "4100" in docs.text  # the WebSocket, described outside OpenAPI
