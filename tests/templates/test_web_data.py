"""Template data stays where the template puts it (issue 7, item 9).

A password-reset template renders a code into the email only; its web part declares
one data key of its own. The code must appear in no output a browser reads: the live
WebSocket frame, the SSE stream, a long poll, the inbox API, a replay on reconnect, and
the status and history routes. The declared key must reach all of them.
"""

from __future__ import annotations

import email
import email.policy
import json

import msgspec
import trio

from actors.domain.rendering import compile_template, render_template
from protocol.channels import Channel
from protocol.template_schemas import TemplateSpec
from tests.helpers import http, open_websocket_url, receive_json, running_node, token_for, ws_url
from tests.realtime.streams import open_sse, poll, subscriber_client, ws_sync

SECRET = "SECRET-123456"
USER = "reset-user"
RESET = {
    "locales": {
        "en": {
            "email": {"subject": "Your reset code", "text": "Your code is {{code}}. Reference {{ref}}."},
            "web": {"title": "Password reset requested", "body": "Check your email ({{ref}}).", "data": {"ref": "{{ref}}", "kind": "reset"}},
        },
    },
}
DATA = {"code": SECRET, "ref": "R-42", "nested": {"also": SECRET}}
DECLARED = {"ref": "R-42", "kind": "reset"}


async def test_data_the_web_part_does_not_declare_never_reaches_the_browser(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        created = await client.post("/v1/templates/reset", json=RESET)
        assert created.status_code == 201, created.text
        token = await token_for(client, USER)
        first = await client.post("/v1/notifications", json={"user_id": USER, "channels": ["web"], "content": {"web": {"title": "Hi"}}})
        assert first.status_code == 202, first.text
        first_id = first.json()["notification_id"]
        async with open_websocket_url(ws_url(herald.url, token)) as ws:
            await ws_sync(ws)  # live from here
            sent = await client.post("/v1/notifications", json={
                "user_id": USER, "channels": ["email", "web"], "template_id": "reset", "data": DATA,
                "to": {"email": "reset@example.org"},
            })
            assert sent.status_code == 202, sent.text
            nid = sent.json()["notification_id"]
            with trio.fail_after(10):
                frame = await receive_json(ws)
        outputs: dict[str, str] = {"websocket frame": json.dumps(frame)}
        assert frame["type"] == "notification" and frame["id"] == nid and frame["data"] == DECLARED

        # The email got the code (so it was in the data the template was given) ...
        path = herald.config.outbox_dir / f"{nid}.eml"
        with trio.fail_after(10):
            while not path.exists():
                await trio.sleep(0.05)
        eml = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert SECRET in eml.get_content()
        # ... and nothing a browser reads has it.
        with trio.fail_after(10):
            while len((inbox := (await client.get(f"/v1/users/{USER}/inbox")).json())["items"]) < 2:
                await trio.sleep(0.05)
        outputs["inbox (API key)"] = json.dumps(inbox)
        subscriber = {"Authorization": f"Bearer {token}"}
        outputs["inbox (subscriber token)"] = (await browser.get(f"/v1/users/{USER}/inbox", headers=subscriber)).text
        # Resuming after the first notification: each transport replays the reset one from the inbox.
        polled = await poll(browser, token, after=first_id, timeout=0)
        assert [item["id"] for item in polled["items"]] == [nid]
        outputs["long poll"] = json.dumps(polled)
        async with open_sse(browser, token, last_id=first_id) as stream:
            outputs["sse replay"] = json.dumps([e.data for e in await stream.until_synced()])
        async with open_websocket_url(ws_url(herald.url, token)) as ws:
            replayed = await ws_sync(ws, last_id=first_id)
            assert [f["id"] for f in replayed] == [nid]
            outputs["websocket replay"] = json.dumps(replayed)
        outputs["status"] = (await client.get(f"/v1/notifications/{nid}")).text
        outputs["history"] = (await client.get(f"/v1/users/{USER}/notifications")).text
        for name, text in outputs.items():
            assert SECRET not in text, f"the email's code reached the browser through the {name}: {text}"
            assert name in ("status", "history") or '"kind":"reset"' in text.replace(" ", ""), f"{name} lacks the declared data: {text}"
        assert inbox["items"][0]["id"] == nid and inbox["items"][0]["data"] == DECLARED


async def test_preview_shows_what_the_web_item_carries(tmp_path) -> None:
    async with running_node(tmp_path) as herald, http(herald) as client:
        assert (await client.post("/v1/templates/reset", json=RESET)).status_code == 201
        preview = (await client.post("/v1/templates/reset/render", json={"data": DATA})).json()
        assert preview["web_data"] == DECLARED
        assert "data" not in preview["content"]["web"]
        # Inline content is not rendered: its `data` is the web item's data, as the sender wrote it.
        token = await token_for(client, "inline-user")
        async with open_websocket_url(ws_url(herald.url, token)) as ws:
            await ws_sync(ws)
            inline = {"user_id": "inline-user", "channels": ["web"], "content": {"web": {"title": "Hi"}}, "data": {"k": [1, "v"]}}
            assert (await client.post("/v1/notifications", json=inline)).status_code == 202
            with trio.fail_after(10):
                assert (await receive_json(ws))["data"] == {"k": [1, "v"]}


def test_the_web_part_renders_only_its_declared_data() -> None:
    template = compile_template("reset", 1, msgspec.convert(RESET, TemplateSpec))
    rendered = render_template(template, [Channel.WEB, Channel.EMAIL], DATA)
    assert not isinstance(rendered, list)
    assert rendered.web_data == DECLARED
    assert rendered.content.web is not None and SECRET not in json.dumps([rendered.content.web.title, rendered.content.web.body])
    # A web part without `data` carries none.
    bare = compile_template("bare", 1, msgspec.convert({"locales": {"en": {"web": {"title": "Hi {{code}}"}}}}, TemplateSpec))
    result = render_template(bare, [Channel.WEB], DATA)
    assert not isinstance(result, list) and result.web_data == {}
