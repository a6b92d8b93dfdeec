"""No /v1 REST route answers without an API key; a key without the route's scope gets 403.

The routes come from the app's own url_map, so a route added later is checked too: it
must refuse a request without a key at once, and `test_the_scope_table_matches_the_app`
fails until it is classified below.
"""

from __future__ import annotations

from typing import Any

import httpx

from actors.api.gateway import create_app
from protocol.ids import make_notification_id
from tests.helpers import http, running_node

# Which scope each /v1 REST route needs. Cross-checked against the code by behaviour:
# a key with every other scope gets 403, a key with only this one gets past auth.
ROUTE_SCOPES: dict[tuple[str, str], str] = {
    ("POST", "/v1/notifications"): "send",
    ("POST", "/v1/notifications/batch"): "send",
    ("GET", "/v1/notifications/<notification:nid>"): "read",
    ("DELETE", "/v1/notifications/<notification:nid>"): "send",
    ("GET", "/v1/users/<user_id>/notifications"): "read",
    ("POST", "/v1/users/<user_id>/tokens"): "read",  # a token reads the user's notifications
    ("PUT", "/v1/topics/<topic>/subscribers"): "send",  # a topic is an audience to send to: a subscriber token never writes one
    ("DELETE", "/v1/topics/<topic>/subscribers"): "send",
    ("GET", "/v1/topics/<topic>/subscribers"): "read",
    ("GET", "/v1/admin/circuits"): "admin",
    ("GET", "/v1/admin/stream"): "admin",
    ("GET", "/v1/admin/dlq"): "admin",
    ("POST", "/v1/admin/dlq/replay"): "admin",
    ("DELETE", "/v1/admin/dlq"): "admin",
    ("GET", "/v1/admin/jobs/<job_id>"): "admin",
    ("POST", "/v1/admin/keys"): "admin",
    ("GET", "/v1/admin/keys"): "admin",
    ("DELETE", "/v1/admin/keys/<key_id>"): "admin",
    ("GET", "/v1/admin/signing-keys"): "admin",
    ("POST", "/v1/admin/signing-keys"): "admin",
    ("DELETE", "/v1/admin/signing-keys/<kid>"): "admin",
    # the sandbox providers' fault settings
    ("GET", "/v1/admin/sandbox/faults"): "admin",
    ("PUT", "/v1/admin/sandbox/faults/<channel>"): "admin",
    ("DELETE", "/v1/admin/sandbox/faults/<channel>"): "admin",
    # templates: authoring is admin, reading and previewing is read
    ("POST", "/v1/templates/<template_id>"): "admin",
    ("PUT", "/v1/templates/<template_id>"): "admin",
    ("GET", "/v1/templates/<template_id>"): "read",
    ("GET", "/v1/templates/<template_id>/versions"): "read",
    ("POST", "/v1/templates/<template_id>/versions/<version>/activate"): "admin",
    ("POST", "/v1/templates/<template_id>/render"): "read",
    # preferences and devices: what decides where notifications go is written with send
    ("GET", "/v1/users/<user_id>/preferences"): "read",
    ("PUT", "/v1/users/<user_id>/preferences"): "send",
    ("GET", "/v1/users/<user_id>/devices"): "read",
    ("GET", "/v1/users/<user_id>/digests"): "read",
    ("POST", "/v1/users/<user_id>/devices"): "send",
    ("DELETE", "/v1/users/<user_id>/devices/<token>"): "send",
    # the inbox: an API key with this scope, or a subscriber token of the user in the path
    # (actors/api/subscriber.py; the inbox's own tests cover tokens)
    ("GET", "/v1/users/<user_id>/inbox"): "read",
    ("GET", "/v1/users/<user_id>/inbox/unread_count"): "read",
    ("POST", "/v1/users/<user_id>/inbox/<nid>/read"): "send",
    ("POST", "/v1/users/<user_id>/inbox/read_all"): "send",
    ("POST", "/v1/users/<user_id>/inbox/<nid>/archive"): "send",
    # outside /v1 (KEYED_OUTSIDE_V1): the Prometheus scrape
    ("GET", "/metrics"): "admin",
}

# Routes outside /v1 that take an API key all the same (checked with the /v1 routes), and why they are not under /v1.
KEYED_OUTSIDE_V1: dict[str, str] = {
    "/metrics": "the Prometheus scrape, where scrapers look for it (docs/metrics.md); admin-scoped",
}

# /v1 routes that take another credential than an API key, and why. They must still
# never answer 2xx to a request that carries no credential at all.
NOT_API_KEY_ROUTES: dict[str, str] = {
    "/v1/ws": "WebSocket: a subscriber token in ?token= (tests/auth/test_subscriber_tokens.py)",
    "/v1/sse": "Server-Sent Events: a subscriber token, the WebSocket's fallback (issue 4, item 5)",
    "/v1/poll": "long-poll: a subscriber token, the WebSocket's fallback (issue 4, item 5)",
    "/v1/unsubscribe": "the one-click unsubscribe link of an email (RFC 8058): its signed token is the credential",
    "/v1/webhooks/sendgrid": "delivery receipts: SendGrid's ECDSA signature is the credential (tests/receipts)",
    "/v1/webhooks/twilio": "delivery receipts: Twilio's HMAC signature is the credential (tests/receipts)",
}

# Routes outside /v1 that answer without any credential, and why (test_the_public_routes_are_these).
PUBLIC_ROUTES: dict[str, str] = {
    "/healthz": "liveness, for load balancers and orchestrators: no data",
    "/readyz": "readiness, for load balancers and orchestrators: no data",
    "/openapi.json": "the API's OpenAPI description (issue 4, item 7): the same for every caller, no data",
    "/docs": "the API reference page made from /openapi.json: no data",
    "/console": "the operator console's static page: it asks for an admin key and holds no data of its own",
    "/demo/inbox": "the inbox widget demo's static page: it asks for a key or token and holds no data of its own",
    "/ui/<asset>": "the pages' scripts and style sheets: static files, no data",
}

# OPTIONS is answered by the framework with the Allow header only (no handler runs, no
# data): a CORS preflight carries no credentials by definition.
UNAUTHENTICATED_METHODS = {"OPTIONS"}

SAMPLE_ARGUMENTS = {
    "nid": make_notification_id(1_700_000_000_000, 1), "user_id": "u1", "key_id": "0123456789ab", "template_id": "t1", "version": "1",
    "channel": "sms", "topic": "news",
}


def rest_routes(herald: Any) -> list[tuple[str, str, str]]:
    """(method, rule, concrete path) of every /v1 REST route of the app."""
    routes = []
    for rule in create_app(herald.gateway).url_map.iter_rules():
        if not (rule.rule.startswith("/v1/") or rule.rule in KEYED_OUTSIDE_V1) or rule.websocket:
            continue
        path = rule.rule
        for name in rule.arguments:
            path = path.replace(f"<{name}>", SAMPLE_ARGUMENTS.get(name, "x1"))
        routes.extend((method, rule.rule, path) for method in sorted(rule.methods - UNAUTHENTICATED_METHODS))
    return routes


async def call(client: httpx.AsyncClient, method: str, path: str, key: str | None) -> httpx.Response:
    """The route's answer; an event stream (GET /v1/admin/stream, which never ends by itself) is left after its head."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    body = None if method in ("GET", "HEAD") else b"{}"
    async with client.stream(method, path, content=body, headers=headers) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aread()
        return response


def assert_401(response: httpx.Response, what: str) -> None:
    assert response.status_code == 401, (what, response.status_code, response.text)
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="herald"'), what
    if response.request.method != "HEAD":
        assert response.headers["content-type"] == "application/problem+json", what
        assert response.json()["errors"][0]["field"] == "Authorization", what


async def test_no_rest_route_answers_without_a_valid_key(tmp_path):
    async with running_node(tmp_path) as herald, httpx.AsyncClient(base_url=herald.url, timeout=10) as client:
        _, full = await herald.gateway.keys.create(["send", "read", "admin"], "all scopes")
        wrong_secret = full[:-4] + ("0000" if not full.endswith("0000") else "1111")
        routes = rest_routes(herald)
        assert len(routes) >= len(ROUTE_SCOPES)
        for method, rule, path in routes:
            what = f"{method} {rule}"
            bare = await call(client, method, path, None)
            if rule in NOT_API_KEY_ROUTES:
                assert not 200 <= bare.status_code < 300, (what, bare.status_code)
                continue
            assert_401(bare, what)
            assert "WWW-Authenticate" in bare.headers and "error=" not in bare.headers["WWW-Authenticate"]
            for wrong in ("wrong", "test-keyx", "test-ke", wrong_secret, f"hk_ffffffffffff_{'0' * 64}", full.upper()):
                response = await call(client, method, path, wrong)
                assert_401(response, f"{what} with {wrong!r}")
            other_scheme = await client.request(method, path, headers={"Authorization": "Basic dGVzdC1rZXk6"})
            assert_401(other_scheme, f"{what} with Basic auth")
        assert herald.gateway.keys.throttled == 0


async def test_a_key_without_the_routes_scope_gets_403_naming_it(tmp_path):
    async with running_node(tmp_path) as herald, httpx.AsyncClient(base_url=herald.url, timeout=10) as client:
        scopes = ("send", "read", "admin")
        only = {s: (await herald.gateway.keys.create([s], f"only {s}"))[1] for s in scopes}
        all_but = {s: (await herald.gateway.keys.create([o for o in scopes if o != s], f"all but {s}"))[1] for s in scopes}
        checked = 0
        for method, rule, path in rest_routes(herald):
            scope = ROUTE_SCOPES.get((method if method != "HEAD" else "GET", rule))
            if scope is None:
                continue  # unclassified: test_the_scope_table_matches_the_app says so
            what = f"{method} {rule} ({scope})"
            refused = await call(client, method, path, all_but[scope])
            assert refused.status_code == 403, (what, refused.status_code, refused.text)
            assert f'scope="{scope}"' in refused.headers["WWW-Authenticate"], what
            if method != "HEAD":
                problem = refused.json()
                assert refused.headers["content-type"] == "application/problem+json", what
                assert f"`{scope}`" in problem["detail"] and problem["errors"][0]["field"] == "Authorization", (what, problem)
            admitted = await call(client, method, path, only[scope])
            assert admitted.status_code not in (401, 403, 429), (what, admitted.status_code, admitted.text)
            checked += 1
        assert checked >= len(ROUTE_SCOPES)


async def test_the_scope_table_matches_the_app(tmp_path):
    async with running_node(tmp_path) as herald:
        in_app = {(m, rule) for m, rule, _ in rest_routes(herald) if m != "HEAD" and rule not in NOT_API_KEY_ROUTES}
        unclassified = in_app - set(ROUTE_SCOPES)
        assert not unclassified, f"routes without a scope in ROUTE_SCOPES (add them, with the scope they need): {sorted(unclassified)}"
        gone = set(ROUTE_SCOPES) - in_app
        assert not gone, f"ROUTE_SCOPES names routes the app no longer has: {sorted(gone)}"


async def test_the_bootstrap_key_has_every_scope(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        for method, rule, path in rest_routes(herald):
            if rule in NOT_API_KEY_ROUTES:
                continue
            response = await call(client, method, path, "test-key")
            assert response.status_code not in (401, 403, 429), (method, rule, response.status_code, response.text)


async def test_the_public_routes_are_these(tmp_path):
    """Every route outside /v1 is in PUBLIC_ROUTES and answers without a key; PUBLIC_ROUTES names no route the app lacks."""
    async with running_node(tmp_path) as herald, httpx.AsyncClient(base_url=herald.url, timeout=10) as client:
        outside = {
            rule.rule for rule in create_app(herald.gateway).url_map.iter_rules()
            if not rule.rule.startswith("/v1/") and rule.rule not in KEYED_OUTSIDE_V1
        }
        assert outside == set(PUBLIC_ROUTES), sorted(outside ^ set(PUBLIC_ROUTES))
        for rule in outside:
            response = await client.get(rule.replace("<path:filename>", "x.txt").replace("<asset>", "console.js"))
            assert response.status_code != 401 and response.status_code < 500, (rule, response.status_code)
