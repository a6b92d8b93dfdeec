"""Fifty poison notifications of every kind through a running node, with normal ones alongside.

Each poison is answered 422 at the API or, when it slipped past the API (a contact
point stored before the API checked it, a record already on the bus, a channel client
that raises on some content), dead-lettered once with its error. No stage restarts,
and every normal notification sent in between is delivered.
"""

from __future__ import annotations

import random
from collections import Counter

import trio

from actors.clients.sandbox import JsonLinesSink
from protocol.channels import Channel
from protocol.ids import make_notification_id
from protocol.preferences import ContactPoints, Preferences
from reactor.clock import wall_ms
from reactor.ports import DlqFilter
from tests.faults.support import EMAIL_HEADERS, eml_headers, put_on_the_bus, restarts, wait_status
from tests.helpers import http, running_node

CVE = "Hello =?utf-8?q?x=0D=0ABcc:_evil@attacker.example=0D=0A=0D=0AFake_body?="
SEPARATORS = ["\r", "\n", "\r\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]


class ChokesOnBoom:
    """The SMS sandbox behind a client with a bug: it raises on any text holding "boom"."""

    def __init__(self, sink: JsonLinesSink) -> None:
        self.sink = sink
        self.raised: Counter[str] = Counter()

    async def send(self, delivery):
        if "boom" in delivery.content.sms.text:
            self.raised[delivery.notification_id] += 1
            raise UnicodeError(f"cannot encode {delivery.content.sms.text!r}")
        return await self.sink.send(delivery)


def inline(user: str, subject: str, address: str | None = None) -> dict:
    return {"user_id": user, "channels": ["email"], "content": {"email": {"subject": subject, "text": "t"}},
            "to": {"email": address or f"{user}@example.org"}}


def normal(i: int) -> dict:
    user = f"normal{i}"
    return {
        "user_id": user, "channels": ["email", "sms", "push"],
        "content": {"email": {"subject": f"Receipt nº{i} = ? ok", "text": "thanks"}, "sms": {"text": f"code {i}"},
                    "push": {"title": "Hi", "body": "there"}},
        "to": {"email": f"{user}@example.org", "phone": "+15555550100", "device_token": f"tok-{i}"},
    }


async def test_fifty_poison_notifications_are_refused_or_dead_lettered_and_nothing_restarts(tmp_path):
    sms = ChokesOnBoom(JsonLinesSink(tmp_path / "data" / "sms.jsonl", "sms"))
    async with running_node(tmp_path, clients={Channel.SMS: sms}) as herald, http(herald) as client:
        spec = {"locales": {"en": {"email": {"subject": "Welcome {{name}}", "text": "Hi {{name}}"}}}}
        assert (await client.post("/v1/templates/welcome", json=spec)).status_code == 201

        # the poison, as (kind, request body or None for what goes around the API)
        refused: list[tuple[str, dict, str]] = []  # kind, body, the field the 422 must name
        for i, sep in enumerate(SEPARATORS):
            refused.append(("subject separator", inline(f"p-sep{i}", f"Hi{sep}Bcc: x"), "content.email.subject"))
        for i, ctl in enumerate(["\x00", "\x7f", "\x9f", "\t"]):
            refused.append(("subject control", inline(f"p-ctl{i}", f"Hi{ctl}there"), "content.email.subject"))
        for i, word in enumerate([CVE, "=?utf-8?b?SGkNCkJjYzogeA==?="]):
            refused.append(("subject encoded word", inline(f"p-ew{i}", word), "content.email.subject"))
        for i, address in enumerate(["a@[b.c", "=?utf-8?q?a=0D=0AX:y?=@b.c", "a:b@c.d", "a,b@c.d"]):
            refused.append(("address", inline(f"p-addr{i}", "Hi", address), "to.email"))
        for i, name in enumerate([CVE[6:], "Al\r\nBcc: x", "Al\u2028Bo", "Al\x85Bo"]):
            body = {"user_id": f"p-tpl{i}", "channels": ["email"], "template_id": "welcome", "data": {"name": name},
                    "to": {"email": f"p-tpl{i}@example.org"}}
            refused.append(("template data", body, "data.name"))

        # stored before the API checked contact points (written around it, as an old database holds them)
        stale = ["a@[b.c", "=?utf-8?q?a=0D=0AX:y?=@b.c", "a:b@c.d", "a,b@c.d", "a(b)@c.d"]
        for i, address in enumerate(stale):
            await herald.users.put_preferences(f"p-pref{i}", Preferences(contact=ContactPoints(email=address)), wall_ms())
        # records already on the bus from before the fix
        on_bus = [CVE, "Hi\r\nBcc: x", "Hello\u2028world", "Hi\x0bthere", "Hi\x0cthere", "Hi\x1cthere", "Hi\x85there",
                  "Hi\u2029there", "=?utf-8?b?SGkNCkJjYzogeA==?=", "Hi\nthere"]

        rng = random.Random(50)
        answered: Counter[str] = Counter()
        slipped: list[tuple[str, str, str]] = []  # (kind, notification id, channel)
        delivered_ids: list[str] = []
        for i in range(50):  # a normal notification after every poison
            if i < len(refused):
                kind, body, field = refused[i]
                response = await client.post("/v1/notifications", json=body)
                assert response.status_code == 422, (kind, body, response.text)
                assert [e["field"] for e in response.json()["errors"]] == [field], (kind, response.text)
                answered[kind] += 1
            elif i < len(refused) + len(stale):
                user = f"p-pref{i - len(refused)}"
                body = {"user_id": user, "channels": ["email"], "content": {"email": {"subject": "Hi", "text": "t"}}}
                response = await client.post("/v1/notifications", json=body)
                assert response.status_code == 202, response.text
                slipped.append(("stored contact point", response.json()["notification_id"], "email"))
            elif i < len(refused) + len(stale) + len(on_bus):
                nid = make_notification_id(wall_ms(), rng.getrandbits(80))
                await put_on_the_bus(herald, nid, f"p-bus{i}", on_bus[i - len(refused) - len(stale)])
                slipped.append(("record on the bus", nid, "email"))
            else:
                body = {"user_id": f"p-boom{i}", "channels": ["sms"], "content": {"sms": {"text": "boom"}}, "to": {"phone": "+15555550199"}}
                response = await client.post("/v1/notifications", json=body)
                assert response.status_code == 202, response.text
                slipped.append(("client raises on content", response.json()["notification_id"], "sms"))
            response = await client.post("/v1/notifications", json=normal(i))
            assert response.status_code == 202, response.text
            delivered_ids.append(response.json()["notification_id"])
        assert sum(answered.values()) + len(slipped) == 50

        with trio.fail_after(60):
            for _, nid, channel in slipped:
                assert await wait_status(herald, nid, channel) == "dead_lettered", nid
            for nid in delivered_ids:
                for channel in ("email", "sms", "push"):
                    assert await wait_status(herald, nid, channel) == "delivered", (nid, channel)

        entries = await herald.store.dead_letters(DlqFilter(), 0, 1000)
        assert sorted((e.notification_id, e.channel) for e in entries) == sorted((nid, ch) for _, nid, ch in slipped)
        assert all("poison message" in e.error for e in entries)
        assert set(sms.raised.values()) == {2}  # a client that raises on a message: tried twice, then dead-lettered
        # written emails: one per normal notification, each with exactly the headers Herald sets
        emls = sorted(herald.config.outbox_dir.glob("*.eml"))
        assert sorted(p.stem for p in emls) == sorted(delivered_ids)
        for path in emls:
            assert eml_headers(path)[0] == EMAIL_HEADERS, path
        assert (await client.get("/healthz")).status_code == 200
        counts = restarts(herald)
        assert sum(counts.values()) == 0, counts

    kinds = Counter(kind for kind, _, _ in slipped)
    print(f"poison: sent=50 answered_422={sum(answered.values())} dead_lettered={len(entries)} "
          f"normal_delivered={len(delivered_ids)}/50 restarts={sum(counts.values())} "
          f"refused_by_kind={dict(answered)} dead_lettered_by_kind={dict(kinds)}")
