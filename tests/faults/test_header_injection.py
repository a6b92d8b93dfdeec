"""Header injection (CVE-2024-6923 class) and the reproductions of issue 7: refused at the API, safe past it.

Reproduced on the tree before the fix: 8 POSTs with the subject "Hi\\r\\nBcc: x" (a key
holding only `send`) were all answered 202 and crashed the email provider until the
node stopped; six with "Hello\\u2028world" did the same; the subject
`Hello =?utf-8?q?x=0D=0ABcc:_evil@attacker.example=0D=0A=0D=0AFake_body?=` (inline or
through `Welcome {{name}}`) wrote an .eml with a Bcc header and a fake body.
"""

from __future__ import annotations

import random

import httpx
import trio

from protocol.ids import make_notification_id
from protocol.messages import decode_delivery
from reactor.clock import wall_ms
from reactor.ports import DlqFilter
from tests.faults.support import EMAIL_HEADERS, eml_headers, put_on_the_bus, restarts, wait_status
from tests.helpers import http, running_node, wait_final

CVE = "Hello =?utf-8?q?x=0D=0ABcc:_evil@attacker.example=0D=0A=0D=0AFake_body?="


def email_body(user: str, subject: str, **extra):
    return {"user_id": user, "channels": ["email"], "content": {"email": {"subject": subject, "text": "hello"}},
            "to": {"email": f"{user}@example.org"}, **extra}


async def send_only_key(herald, admin: httpx.AsyncClient) -> httpx.AsyncClient:
    created = await admin.post("/v1/admin/keys", json={"scopes": ["send"], "name": "attacker"})
    assert created.status_code == 201, created.text
    return http(herald, key=created.json()["key"])


def named(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    return [e["field"] for e in response.json()["errors"]]


async def test_the_reproductions_are_refused_with_422_and_the_node_stays_up(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as admin:
        async with await send_only_key(herald, admin) as attacker:
            answers = []
            for i in range(8):
                answers.append(await attacker.post("/v1/notifications", json=email_body(f"crlf{i}", "Hi\r\nBcc: x")))
            for i in range(6):
                answers.append(await attacker.post("/v1/notifications", json=email_body(f"ls{i}", "Hello\u2028world")))
            fields = [named(a) for a in answers]
            assert fields == [["content.email.subject"]] * 14
            assert "carriage return" in answers[0].json()["detail"] and "U+2028" in answers[-1].json()["detail"]
            # and the node is still whole: a normal email goes through
            ok = await attacker.post("/v1/notifications", json=email_body("fine", "Hi"))
            assert ok.status_code == 202
        assert (await wait_final(admin, ok.json()["notification_id"]))["channels"]["email"]["status"] == "delivered"
        assert (await admin.get("/healthz")).status_code == 200
        assert sum(restarts(herald).values()) == 0, restarts(herald)
        assert [p.name for p in herald.config.outbox_dir.glob("*.eml")] == [f"{ok.json()['notification_id']}.eml"]
        print(f"reproductions: crlf=8 u2028=6 answered_422={len(fields)} restarts=0")


async def test_encoded_words_are_refused_in_subject_address_template_data_and_preferences(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        assert named(await client.post("/v1/notifications", json=email_body("u1", CVE))) == ["content.email.subject"]
        to_encoded = email_body("u1", "Hi")
        to_encoded["to"]["email"] = "=?utf-8?q?a=0D=0ABcc:_x?=@example.org"
        assert named(await client.post("/v1/notifications", json=to_encoded)) == ["to.email"]
        to_unparsable = email_body("u1", "Hi")
        to_unparsable["to"]["email"] = "a@[b.c"
        assert named(await client.post("/v1/notifications", json=to_unparsable)) == ["to.email"]

        spec = {"locales": {"en": {"email": {"subject": "Welcome {{name}}", "text": "Hi {{name}}"}}}}
        assert (await client.post("/v1/templates/welcome", json=spec)).status_code == 201
        templated = {"user_id": "u2", "channels": ["email"], "template_id": "welcome", "to": {"email": "u2@example.org"}}
        for name in (CVE[6:], "Al\r\nBcc: evil@attacker.example", "Al\u2028Bo", "Al\x85", "=?utf-8?b?QWwNCkJjYzogeA==?="):
            answer = await client.post("/v1/notifications", json={**templated, "data": {"name": name}})
            assert named(answer) == ["data.name"], name
            preview = await client.post("/v1/templates/welcome/render", json={"data": {"name": name}})
            assert named(preview) == ["data.name"]
        nested = await client.put("/v1/templates/welcome", json={
            "locales": {"en": {"email": {"subject": "Welcome {{#people}}{{name}}{{/people}}", "text": "Hi"}}},
        })
        assert nested.status_code == 200
        answer = await client.post("/v1/notifications", json={**templated, "data": {"people": [{"name": "Al\u2028Bo"}]}})
        assert named(answer) == ["locales.en.email.subject"]  # read inside a section: the field is named

        prefs = await client.put("/v1/users/u3/preferences", json={"contact": {"email": "=?utf-8?q?x=0D=0A?=@example.org"}})
        assert named(prefs) == ["contact.email"]
        prefs = await client.put("/v1/users/u3/preferences", json={"contact": {"email": "a@[b.c"}})
        assert named(prefs) == ["contact.email"]
        assert (await client.put("/v1/users/u3/preferences", json={"contact": {"email": "u3@example.org"}})).status_code == 200

        # a templated send with a harmless name writes exactly the expected headers
        fine = await client.post("/v1/notifications", json={**templated, "data": {"people": [{"name": "Zoë = ? Ål"}]}})
        assert fine.status_code == 202, fine.text
        nid = fine.json()["notification_id"]
        assert (await wait_final(client, nid))["channels"]["email"]["status"] == "delivered"
        keys, message = eml_headers(herald.config.outbox_dir / f"{nid}.eml")
        assert keys == EMAIL_HEADERS and message["Subject"] == "Welcome Zoë = ? Ål"
        assert message["To"] == "u2@example.org" and message.get_content().strip() == "Hi"
        assert not list(herald.config.outbox_dir.glob("*.eml.tmp"))
        assert sum(restarts(herald).values()) == 0


async def test_an_encoded_word_that_slipped_past_the_api_is_dead_lettered_not_written(tmp_path):
    """A record from before the fix, still on the bus: build_email refuses it, on any Python."""
    async with running_node(tmp_path) as herald:
        rng = random.Random(7)
        subjects = [CVE, "Hi\r\nBcc: x", "Hello\u2028world", "=?utf-8?b?SGkNCkJjYzogeA==?=", "Hi\x0bthere"]
        ids = []
        for i, subject in enumerate(subjects):
            nid = make_notification_id(wall_ms(), rng.getrandbits(80))
            ids.append(nid)
            await put_on_the_bus(herald, nid, f"old{i}", subject)
        for nid in ids:
            assert await wait_status(herald, nid, "email") == "dead_lettered"
        entries = await herald.store.dead_letters(DlqFilter(channel="email"))
        assert sorted(e.notification_id for e in entries) == sorted(ids)
        assert all("poison message" in e.error and "Subject" in e.error for e in entries)
        assert not list(herald.config.outbox_dir.glob("*.eml"))
        assert sum(restarts(herald).values()) == 0

        # replaying them cannot crash anything either: each comes back to the queue, once
        replayed = await herald.gateway.dead_letters.replay(DlqFilter(channel="email"))
        assert replayed == len(ids)
        with trio.fail_after(20):
            while len(entries := await herald.store.dead_letters(DlqFilter(channel="email"))) < len(ids):
                await trio.sleep(0.05)
        assert [decode_delivery(e.record).replays for e in entries] == [1] * len(ids)
        assert [await wait_status(herald, nid, "email") for nid in ids] == ["dead_lettered"] * len(ids)
        assert sorted(e.notification_id for e in entries) == sorted(ids)
        assert not list(herald.config.outbox_dir.glob("*.eml"))
        assert sum(restarts(herald).values()) == 0
