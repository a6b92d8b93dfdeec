"""Templates over HTTP, on a whole node: save, version, roll back, preview, and send from a template."""

import email
import email.policy
import json
import sqlite3

import httpx

from actors.domain.template_choice import pick_variant
from tests.helpers import http, running_node, wait_final

TO = {"email": "someone@example.org", "phone": "+15555550100", "device_token": "tok-1"}

WELCOME = {
    "name": "Welcome",
    "default_locale": "en",
    "locales": {
        "en": {
            "email": {"subject": "Welcome, {{name}}", "text": "Hi {{name}}", "html": "<p>Hi {{name}}</p>"},
            "sms": {"text": "Hi {{name}}, welcome{{#vip}} back{{/vip}}!"},
        },
        "fr": {
            "email": {"subject": "Bienvenue, {{name}}", "text": "Salut {{name}}", "html": "<p>Salut {{name}}</p>"},
            "sms": {"text": "Salut {{name}} !"},
        },
    },
    "variants": {
        "A": {"weight": 50},
        "B": {"weight": 50, "locales": {
            "en": {"email": {"subject": "{{name}}, you're in", "text": "Hey {{name}}", "html": "<h1>Hey {{name}}</h1>"}},
            "fr": {"email": {"subject": "{{name}}, c'est parti", "text": "Coucou {{name}}", "html": "<h1>Coucou {{name}}</h1>"}},
        }},
    },
}

# What each (locale, variant) must produce for the name below: subject, html body, SMS text.
NAME = "Zoë <&> O'Neil"
ESCAPED = "Zoë &lt;&amp;&gt; O&#x27;Neil"
EXPECTED = {
    ("en", "A"): (f"Welcome, {NAME}", f"<p>Hi {ESCAPED}</p>", f"Hi {NAME}, welcome!"),
    ("en", "B"): (f"{NAME}, you're in", f"<h1>Hey {ESCAPED}</h1>", f"Hi {NAME}, welcome!"),
    ("fr", "A"): (f"Bienvenue, {NAME}", f"<p>Salut {ESCAPED}</p>", f"Salut {NAME} !"),
    ("fr", "B"): (f"{NAME}, c'est parti", f"<h1>Coucou {ESCAPED}</h1>", f"Salut {NAME} !"),
}


def assert_problem(response: httpx.Response, status: int, *fields: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == list(fields), response.text


async def test_a_template_in_two_locales_with_an_ab_split_renders_per_user_and_the_variant_is_logged(tmp_path):
    """THE CHECK of issue 4: two locales, an A/B split, the right content per user, the variant in the log."""
    users = [f"user-{i}" for i in range(12)]
    locales = {user: ("fr-CA" if i % 2 else "en-US") for i, user in enumerate(users)}
    variants = {user: pick_variant("welcome", user, [("A", 50), ("B", 50)]) for user in users}
    cells = {(locales[u][:2], variants[u]) for u in users}
    assert cells == set(EXPECTED), "the users cover both locales in both variants"

    async with running_node(tmp_path) as herald, http(herald) as client:
        created = await client.post("/v1/templates/welcome", json=WELCOME)
        assert created.status_code == 201, created.text
        sent = {}
        for user in users:
            response = await client.post("/v1/notifications", json={
                "user_id": user, "channels": ["email", "sms"], "template_id": "welcome", "locale": locales[user],
                "data": {"name": NAME}, "to": TO,
            })
            assert response.status_code == 202, response.text
            sent[user] = response.json()["notification_id"]
        # a second send to the same user lands in the same variant
        again = await client.post("/v1/notifications", json={
            "user_id": users[0], "channels": ["email"], "template_id": "welcome", "data": {"name": NAME}, "to": TO,
        })
        statuses = {user: await wait_final(client, nid) for user, nid in sent.items()}
        repeat = await wait_final(client, again.json()["notification_id"])
        preview = await client.post("/v1/templates/welcome/render", json={"user_id": users[1], "data": {"name": NAME}, "locale": "fr-CA"})

    sms_lines = {line["notification_id"]: line for line in map(json.loads, (herald.config.data_dir / "sms.jsonl").read_text().splitlines())}
    log = sqlite3.connect(herald.config.data_dir / "logs.sqlite3")
    for user, nid in sent.items():
        cell = (locales[user][:2], variants[user])
        subject, html_body, sms_text = EXPECTED[cell]
        message = email.message_from_bytes((herald.config.outbox_dir / f"{nid}.eml").read_bytes(), policy=email.policy.default)
        assert message["Subject"] == subject, (user, cell)
        assert message.get_body(("html",)).get_content().strip() == html_body, (user, cell)
        assert NAME in message.get_body(("plain",)).get_content()  # text parts are never HTML-escaped
        assert sms_lines[nid]["text"] == sms_text, (user, cell)
        tag = f"welcome@1#{variants[user]}"
        assert statuses[user]["template"] == tag
        assert {s["status"] for s in statuses[user]["channels"].values()} == {"delivered"}
        rows = log.execute("SELECT channel, template_id FROM notification_logs WHERE notification_id = ? ORDER BY channel", (nid,)).fetchall()
        assert rows == [("email", tag), ("sms", tag)]  # the delivery log keeps template, version and variant
    log.close()
    assert repeat["template"] == f"welcome@1#{variants[users[0]]}"
    assert preview.json()["template"] == f"welcome@1#{variants[users[1]]}"
    assert preview.json()["locales"] == {"email": "fr", "sms": "fr"}


async def test_save_version_read_and_roll_back(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        created = await client.post("/v1/templates/welcome", json=WELCOME)
        assert created.status_code == 201 and created.headers["location"] == "/v1/templates/welcome"
        body = created.json()
        assert (body["version"], body["active_version"]) == (1, 1)
        assert body["variables"] == {"required": ["name"], "optional": ["vip"]}
        assert body["template"]["locales"]["fr"]["sms"] == {"text": "Salut {{name}} !"}
        assert_problem(await client.post("/v1/templates/welcome", json=WELCOME), 409, "template_id")

        v2 = {"locales": {"en": {"sms": {"text": "v2 {{first}} {{last}}"}}}}
        updated = await client.put("/v1/templates/welcome", json=v2)
        assert updated.status_code == 200, updated.text
        assert (updated.json()["version"], updated.json()["variables"]["required"]) == (2, ["first", "last"])
        assert_problem(await client.put("/v1/templates/unknown", json=v2), 404, "template_id")
        unclosed = {"locales": {"en": {"sms": {"text": "v3 {{first"}}}}
        assert_problem(await client.put("/v1/templates/welcome", json=unclosed), 422, "locales.en.sms.text")  # no version 3

        current = (await client.get("/v1/templates/welcome")).json()
        assert (current["version"], current["active_version"]) == (2, 2)
        old = (await client.get("/v1/templates/welcome?version=1")).json()
        assert (old["version"], old["active_version"], old["template"]["name"]) == (1, 2, "Welcome")
        versions = (await client.get("/v1/templates/welcome/versions")).json()
        assert [(v["version"], v["active"]) for v in versions["versions"]] == [(2, True), (1, False)]

        sms = {"user_id": "u1", "channels": ["sms"], "template_id": "welcome", "data": {"first": "Ada", "last": "L"}, "to": TO}
        first = await client.post("/v1/notifications", json=sms)
        rolled = await client.post("/v1/templates/welcome/versions/1/activate")
        assert (rolled.status_code, rolled.json()["version"], rolled.json()["active_version"]) == (200, 1, 1)
        second = await client.post("/v1/notifications", json={**sms, "data": {"name": "Ada"}})
        assert (await wait_final(client, first.json()["notification_id"]))["template"] == "welcome@2"
        assert (await wait_final(client, second.json()["notification_id"]))["template"].startswith("welcome@1#")
        assert (await client.get("/v1/templates/welcome/versions")).json()["active_version"] == 1

        assert_problem(await client.post("/v1/templates/welcome/versions/9/activate"), 404, "template_id")
        assert_problem(await client.post("/v1/templates/welcome/versions/x/activate"), 400, "version")
        assert_problem(await client.get("/v1/templates/welcome?version=0"), 400, "version")
        assert_problem(await client.get("/v1/templates/welcome?v=1"), 400, "v")
        assert_problem(await client.get("/v1/templates/welcome?version=5"), 404, "template_id")
        assert_problem(await client.get("/v1/templates/nope"), 404, "template_id")
        assert_problem(await client.get("/v1/templates/nope/versions"), 404, "template_id")
        assert_problem(await client.get("/v1/templates/bad%20id"), 400, "template_id")


async def test_invalid_templates_are_refused_naming_the_field(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        broken = {"locales": {"en": {"sms": {"text": "ok"}}, "fr": {"email": {"subject": "Salut {{name}", "text": "x"}}}}
        assert_problem(await client.post("/v1/templates/t1", json=broken), 422, "locales.fr.email.subject")
        partial = {"default_locale": "de", "locales": {"en": {"web": {"title": "{{> header}}"}}}}
        assert_problem(await client.post("/v1/templates/t1", json=partial), 422, "locales.en.web.title", "default_locale")
        assert_problem(await client.post("/v1/templates/t1", json={"locales": {"en": {"fax": {}}}}), 400, "locales.en.fax")
        assert_problem(await client.post("/v1/templates/t1", json={"locales": {"e n": {}}}), 400, "locales")
        wrong_type = {"locales": {"en": {"sms": {"text": "ok"}}}, "variants": {"B": {"weight": 1, "locales": {"fr": {"sms": {"text": 3}}}}}}
        assert_problem(await client.post("/v1/templates/t1", json=wrong_type), 400, "variants.B.locales.fr.sms.text")
        push_data = {"locales": {"en": {"sms": {"text": "ok"}}, "de": {"push": {"title": "t", "data": {"a": "x", "b": 1}}}}}
        assert_problem(await client.post("/v1/templates/t1", json=push_data), 400, "locales.de.push.data.b")
        assert_problem(await client.post("/v1/templates/t1", json={"locales": {}}), 400, "locales")
        assert_problem(await client.post("/v1/templates/t1", content=b"{"), 400, "body")
        assert (await client.get("/v1/templates/t1")).status_code == 404  # nothing was saved


async def test_preview_renders_parts_with_sms_segments_and_push_size(tmp_path):
    template = {
        "locales": {"en": {
            "sms": {"text": "{{greeting}} {{name}}"},
            "push": {"title": "Hi {{name}}", "body": "{{body}}", "data": {"link": "app://x/{{id}}"}},
            "web": {"title": "Hi {{name}}", "url": "https://example.org/{{id}}"},
        }},
        # a variant's part replaces the base part as a whole: B's push has no body and no data
        "variants": {"A": {"weight": 1}, "B": {"weight": 1, "locales": {"en": {"push": {"title": "Yo {{name}}"}}}}},
    }
    data = {"greeting": "Hello", "name": "Łukasz", "body": "b", "id": "7"}
    async with running_node(tmp_path) as herald, http(herald) as client:
        assert (await client.post("/v1/templates/promo", json=template)).status_code == 201
        preview = await client.post("/v1/templates/promo/render", json={"data": data, "variant": "B"})
        assert preview.status_code == 200, preview.text
        body = preview.json()
        assert body["template"] == "promo@1#B" and body["variant"] == "B"
        assert body["content"]["push"] == {"title": "Yo Łukasz"}
        assert body["content"]["web"]["url"] == "https://example.org/7"
        assert body["sms"] == {"encoding": "UCS-2", "characters": 12, "units": 12, "segments": 1, "per_segment": 70, "max_segments": 10}
        base = (await client.post("/v1/templates/promo/render", json={"data": data})).json()
        assert (base["template"], sorted(base["content"])) == ("promo@1", ["push", "sms", "web"])
        assert base["content"]["push"] == {"title": "Hi Łukasz", "body": "b", "data": {"link": "app://x/7"}}
        assert base["push_bytes"] == len(json.dumps(base["content"]["push"], ensure_ascii=False, separators=(",", ":")).encode())
        only_sms = (await client.post("/v1/templates/promo/render", json={"data": data, "channels": ["sms"]})).json()
        assert list(only_sms["content"]) == ["sms"] and "push_bytes" not in only_sms

        long = await client.post("/v1/templates/promo/render", json={"data": {**data, "name": "ł" * 700}, "channels": ["sms"]})
        assert_problem(long, 422, "locales.en.sms.text")
        huge = await client.post("/v1/templates/promo/render", json={"data": {**data, "body": "é" * 2100}, "channels": ["push"]})
        assert_problem(huge, 422, "locales.en.push")
        assert_problem(await client.post("/v1/templates/promo/render", json={"data": {"name": "x"}}), 422, "data.body", "data.greeting", "data.id")
        assert_problem(await client.post("/v1/templates/promo/render", json={"data": data, "variant": "C"}), 422, "variant")
        assert_problem(await client.post("/v1/templates/promo/render", json={"data": data, "variant": "B", "user_id": "u"}), 422, "variant")
        assert_problem(await client.post("/v1/templates/promo/render", json={"data": data, "channels": ["email"]}), 422, "channels")
        assert_problem(await client.post("/v1/templates/promo/render", json={"data": data, "version": 2}), 404, "template_id")
        assert_problem(await client.post("/v1/templates/promo/render", json={"dat": {}}), 400, "dat")


async def test_sending_from_a_template_is_checked_like_inline_content(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        assert (await client.post("/v1/templates/welcome", json=WELCOME)).status_code == 201
        base = {"user_id": "u1", "channels": ["sms"], "template_id": "welcome", "data": {"name": "Al"}, "to": TO}
        inline = {"sms": {"text": "hi"}}
        assert_problem(await client.post("/v1/notifications", json={**base, "content": inline}), 422, "template_id")
        assert_problem(await client.post("/v1/notifications", json={k: v for k, v in base.items() if k != "template_id"}), 422, "content")
        assert_problem(await client.post("/v1/notifications", json={**base, "template_id": "nope"}), 422, "template_id")
        assert_problem(await client.post("/v1/notifications", json={**base, "channels": ["sms", "push"]}), 422, "channels")
        assert_problem(await client.post("/v1/notifications", json={**base, "data": {}}), 422, "data.name")
        assert_problem(await client.post("/v1/notifications", json={**base, "data": {"name": "€" * 800}}), 422, "locales.en.sms.text")
        assert_problem(await client.post("/v1/notifications", json={**base, "to": {}}), 422, "to.phone")
        assert_problem(await client.post("/v1/notifications", json={**base, "locale": "not a locale"}), 400, "locale")
        ok = await client.post("/v1/notifications", json={**base, "locale": "fr", "data": {"name": "Al", "vip": True}})
        assert ok.status_code == 202, ok.text
        status = await wait_final(client, ok.json()["notification_id"])
        assert status["template"].startswith("welcome@1#")
        line = json.loads((herald.config.data_dir / "sms.jsonl").read_text().splitlines()[-1])
        assert line["text"] == "Salut Al !"
        inline_sent = await client.post("/v1/notifications", json={"user_id": "u1", "channels": ["sms"], "content": inline, "to": TO})
        assert (await wait_final(client, inline_sent.json()["notification_id"]))["template"] is None


async def test_writes_need_admin_and_reads_need_read(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as admin:
        assert (await admin.post("/v1/templates/welcome", json=WELCOME)).status_code == 201
        created = await admin.post("/v1/admin/keys", json={"scopes": ["read"], "name": "viewer"})
        assert created.status_code == 201, created.text
        async with http(herald, created.json()["key"]) as viewer, httpx.AsyncClient(base_url=herald.url) as anonymous:
            assert (await viewer.get("/v1/templates/welcome")).status_code == 200
            assert (await viewer.get("/v1/templates/welcome/versions")).status_code == 200
            assert (await viewer.post("/v1/templates/welcome/render", json={"data": {"name": "x"}})).status_code == 200
            assert (await viewer.post("/v1/templates/other", json=WELCOME)).status_code == 403
            assert (await viewer.put("/v1/templates/welcome", json=WELCOME)).status_code == 403
            assert (await viewer.post("/v1/templates/welcome/versions/1/activate")).status_code == 403
            for method, path in [("GET", "/v1/templates/welcome"), ("POST", "/v1/templates/welcome/render"), ("PUT", "/v1/templates/welcome")]:
                assert (await anonymous.request(method, path, json={})).status_code == 401


async def test_without_a_locale_in_the_request_the_users_preferred_locale_is_used(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        assert (await client.post("/v1/templates/welcome", json=WELCOME)).status_code == 201
        prefs = (await client.get("/v1/users/amelie/preferences")).json()
        prefs["locale"] = "fr-CA"
        assert (await client.put("/v1/users/amelie/preferences", json=prefs)).status_code == 200
        body = {"user_id": "amelie", "channels": ["sms"], "template_id": "welcome", "data": {"name": "Amélie"}, "to": TO}
        nid = (await client.post("/v1/notifications", json=body)).json()["notification_id"]
        await wait_final(client, nid)
        lines = [json.loads(line) for line in (herald.config.data_dir / "sms.jsonl").read_text().splitlines()]
        assert [line["text"] for line in lines if line["notification_id"] == nid] == ["Salut Amélie !"]
