"""Smaller things a product team tripped on (issue 8 item 11), on a running node.

- History rows say what the status says: the template tag (with its variant), the detail,
  whether the channel is final.
- One locale rule: `fr_CA` is `fr-CA` for a send, a preview, the preferences and a
  template's locales; what is not a locale is refused the same way everywhere.
- A problem says what a pattern means, never the regex.
- A locale's email part may override only the subject: the rest falls back field by field.
- /v1/admin/circuits has every field, zero or empty ones included.
(The inbox's count and archived rules: tests/realtime/test_inbox_api.py and test_inbox_store.py.)
"""

from __future__ import annotations

import email
import email.policy

import httpx

from tests.helpers import http, running_node, wait_final

TEMPLATE = {
    "default_locale": "en",
    "locales": {
        "en": {"email": {"subject": "Welcome, {{name}}", "text": "Hi {{name}}", "html": "<p>Hi {{name}}</p>"}},
        "fr": {"email": {"subject": "Bienvenue, {{name}}"}},  # only the subject: text and html from en
        "fr_CA": {"email": {"text": "Allo {{name}}"}},  # only the text: the subject from fr, html from en
    },
}
WHOLE = {  # every locale's part complete
    "default_locale": "en",
    "locales": {
        "en": {"email": {"subject": "Welcome, {{name}}", "text": "Hi {{name}}"}},
        "fr_CA": {"email": {"subject": "Bienvenue, {{name}}", "text": "Allo {{name}}"}},
    },
}
NO_REGEX = ("regex", "^", "(?!")


def problem_fields(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return {e["field"]: e["message"] for e in response.json()["errors"]}


async def test_history_rows_show_template_detail_and_final(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        assert (await client.post("/v1/templates/welcome", json=WHOLE)).status_code == 201
        sent = await client.post("/v1/notifications", json={
            "user_id": "ana", "channels": ["email", "web"], "template_id": "welcome", "data": {"name": "Ana"},
            "to": {"email": "ana@example.org"},
        })
        assert sent.status_code == 422  # the template has no web part: nothing is sent
        sent = await client.post("/v1/notifications", json={
            "user_id": "ana", "channels": ["email"], "template_id": "welcome", "data": {"name": "Ana"},
            "to": {"email": "ana@example.org"},
        })
        nid = sent.json()["notification_id"]
        status = await wait_final(client, nid)
        [row] = (await client.get("/v1/users/ana/notifications")).json()["items"]
        assert row == {
            "notification_id": nid, "channel": "email", "status": "delivered", "created_at": status["created_at"],
            "updated_at": status["channels"]["email"]["updated_at"], "detail": status["channels"]["email"]["attempts"][-1]["detail"],
            "final": True, "template": "welcome@1",
        }
        assert row["template"] == status["template"]
        plain = (await client.post("/v1/notifications", json={
            "user_id": "ana", "channels": ["web"], "content": {"web": {"title": "t"}},
        })).json()["notification_id"]
        await wait_final(client, plain)
        newest = (await client.get("/v1/users/ana/notifications", params={"limit": 1})).json()["items"][0]
        assert newest["notification_id"] == plain and newest["template"] is None and newest["final"] is True
        assert newest["detail"] == "in the inbox; no live session"


async def sent_email(herald, client: httpx.AsyncClient, **request) -> email.message.EmailMessage:
    """Send from a template; the .eml the outbox got."""
    sent = await client.post("/v1/notifications", json={"channels": ["email"], "to": {"email": "zoe@example.org"}, **request})
    assert sent.status_code == 202, sent.text
    nid = sent.json()["notification_id"]
    assert (await wait_final(client, nid))["channels"]["email"]["status"] == "delivered"
    raw = (herald.config.data_dir / "outbox" / f"{nid}.eml").read_bytes()
    return email.message_from_bytes(raw, policy=email.policy.default)


async def test_one_locale_rule_for_sends_previews_preferences_and_templates(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        assert (await client.post("/v1/templates/welcome", json=WHOLE)).status_code == 201
        # preferences: fr_CA is accepted and kept as fr-CA, as is fr_ca
        for spelled in ("fr_CA", "fr_ca", "fr-CA"):
            saved = await client.put("/v1/users/zoe/preferences", json={"locale": spelled})
            assert saved.status_code == 200 and saved.json()["locale"] == "fr-CA", saved.text
        assert (await client.get("/v1/users/zoe/preferences")).json()["locale"] == "fr-CA"
        # a send with the user's preferred fr-CA, and with fr_CA given: the template's fr_CA part
        for extra in ({}, {"locale": "fr_CA"}, {"locale": "FR-ca"}):
            message = await sent_email(herald, client, user_id="zoe", template_id="welcome", data={"name": "Zoé"}, **extra)
            assert message["Subject"] == "Bienvenue, Zoé" and message.get_content().strip() == "Allo Zoé"
        # a preview with fr_CA: the same part
        preview = await client.post("/v1/templates/welcome/render", json={"locale": "fr_CA", "data": {"name": "Zoé"}})
        assert preview.status_code == 200, preview.text
        assert preview.json()["content"]["email"] == {"subject": "Bienvenue, Zoé", "text": "Allo Zoé"}
        # a template: fr_CA and fr-CA are one locale (named twice: 422); default_locale may be spelled with _
        twice = {"locales": {"fr_CA": {"sms": {"text": "a"}}, "fr-CA": {"sms": {"text": "b"}}}, "default_locale": "fr_CA"}
        assert "locales.fr-CA" in problem_fields(await client.post("/v1/templates/twice", json=twice))
        once = {"locales": {"fr_CA": {"sms": {"text": "a"}}}, "default_locale": "fr-ca"}
        assert (await client.post("/v1/templates/once", json=once)).status_code == 201
        # what is not a locale is refused by every field, with the same sentence
        for bad in ("f", "french-canada-x-y-z-w", "fr CA", "fr--CA", "fr_CA\n"):
            refusals = {
                "preferences": await client.put("/v1/users/zoe/preferences", json={"locale": bad}),
                "send": await client.post("/v1/notifications", json={
                    "user_id": "zoe", "channels": ["sms"], "template_id": "once", "locale": bad, "to": {"phone": "+15555550100"},
                }),
                "preview": await client.post("/v1/templates/once/render", json={"locale": bad}),
                "template": await client.post("/v1/templates/bad", json={"locales": {"en": {"sms": {"text": "a"}}}, "default_locale": bad}),
            }
            for where, response in refusals.items():
                assert response.status_code == 400, (where, bad, response.text)
                [message] = [m for f, m in problem_fields(response).items() if f in ("locale", "default_locale")]
                assert "a BCP 47 language tag such as fr-CA" in message, (where, message)


async def test_problems_say_what_a_pattern_means(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        cases = [
            ("POST", "/v1/notifications", {"user_id": "u", "channels": ["sms"], "content": {"sms": {"text": "x"}}, "to": {"phone": "555-0100"}},
             "to.phone", "an E.164 number such as +14155550100"),
            ("POST", "/v1/notifications", {"user_id": "u", "channels": ["email"], "content": {"email": {"subject": "x", "text": "y"}},
                                           "to": {"email": "not an address"}}, "to.email", "an email address such as alice@example.org"),
            ("POST", "/v1/notifications", {"user_id": "..", "channels": ["web"], "content": {"web": {"title": "x"}}},
             "user_id", "a user id: 1-128 characters"),
            ("POST", "/v1/notifications", {"user_id": "u", "channels": ["web"], "content": {"web": {"title": "x"}}, "category": "Big News"},
             "category", "a category such as marketing"),
            ("POST", "/v1/notifications", {"user_id": "u", "channels": ["web"], "template_id": "-x"}, "template_id", "a template id"),
            ("PUT", "/v1/users/u/preferences", {"contact": {"phone": "+0123"}}, "contact.phone", "an E.164 number"),
            ("PUT", "/v1/users/u/preferences", {"contact": {"email": "a@b"}}, "contact.email", "an email address"),
            ("PUT", "/v1/users/u/preferences", {"quiet_hours": {"start": "25:00", "end": "07:00"}}, "quiet_hours.start", "a time of day as HH:MM"),
            ("PUT", "/v1/users/u/preferences", {"opt_out": ["Marketing!"]}, "opt_out.0", "a category such as marketing"),
            ("POST", "/v1/users/u/devices", {"platform": "fcm", "token": "a b"}, "token", "a device token"),
            ("POST", "/v1/admin/keys", {"scopes": ["send"], "name": "a\nb"}, "name", "text with no control characters"),
            ("POST", "/v1/templates/t", {"locales": {"en": {"sms": {"text": "x"}}}, "variants": {"B C": {"weight": 1}}},
             "variants", "a variant name"),
            ("POST", "/v1/templates/t/render", {"user_id": "a b"}, "user_id", "a user id"),
        ]
        for method, path, body, field, sentence in cases:
            response = await client.request(method, path, json=body)
            assert response.status_code == 400, (path, body, response.text)
            fields = problem_fields(response)
            assert sentence in fields.get(field, ""), (field, fields)
            detail = response.json()["detail"]
            assert sentence in detail and not any(mark in detail for mark in NO_REGEX), detail


async def test_a_locale_may_override_only_the_subject(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        created = await client.post("/v1/templates/welcome", json=TEMPLATE)
        assert created.status_code == 201, created.text
        expected = {  # locale -> (subject, text, html): each field from the most specific locale that has it
            "fr": ("Bienvenue, Zoé", "Hi Zoé", "<p>Hi Zoé</p>"),
            "fr-CA": ("Bienvenue, Zoé", "Allo Zoé", "<p>Hi Zoé</p>"),
            "de": ("Welcome, Zoé", "Hi Zoé", "<p>Hi Zoé</p>"),
        }
        for locale, (subject, text, html) in expected.items():
            message = await sent_email(herald, client, user_id="zoe", template_id="welcome", data={"name": "Zoé"}, locale=locale)
            assert message["Subject"] == subject
            assert message.get_body(("plain",)).get_content().strip() == text
            assert message.get_body(("html",)).get_content().strip() == html
            preview = await client.post("/v1/templates/welcome/render", json={"locale": locale, "data": {"name": "Zoé"}})
            assert preview.json()["content"]["email"] == {"subject": subject, "text": text, "html": html}


async def test_an_email_part_must_be_complete_once_it_falls_back(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        no_body = {"locales": {"en": {"email": {"subject": "Hi"}}}}
        assert problem_fields(await client.post("/v1/templates/t", json=no_body)) == {
            "locales.en.email": "needs text or html, here or in a locale it falls back to (en)",
        }
        no_subject_anywhere = {"locales": {"en": {"sms": {"text": "x"}}, "fr": {"email": {"text": "Salut"}}}}
        assert problem_fields(await client.post("/v1/templates/t", json=no_subject_anywhere)) == {
            "locales.fr.email.subject": "needs a subject, here or in a locale it falls back to (fr, en)",
        }


async def test_circuits_have_every_field(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        circuits = (await client.get("/v1/admin/circuits")).json()["circuits"]
        for circuit in circuits:
            assert set(circuit) == {
                "channel", "state", "consecutive_failures", "opened", "rejected", "calls", "suppressed_duplicates", "tokens",
                "bucket_capacity", "refill_per_s", "deferred", "throttled", "transitions", "retry_at", "detail",
                "in_flight", "queued", "max_in_flight",
            }, circuit
            assert (circuit["deferred"], circuit["throttled"], circuit["transitions"], circuit["retry_at"]) == (0, 0, {}, None)
            assert circuit["detail"] == ""
