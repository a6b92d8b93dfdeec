"""A subscriber token may do what the key that minted it may: a token from a `read` key reads the
user's inbox and live sessions but does not change the inbox (mark read, archive, read_all need a
token minted by a key with `send`)."""

from __future__ import annotations

import httpx

from tests.helpers import http, running_node, token_for
from tests.realtime.streams import open_ws, poll, send_web, subscriber_client, wait_unread, ws_sync


async def test_a_token_minted_with_a_read_key_reads_but_does_not_write(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as admin, subscriber_client(herald.url) as browser:
        nid = await send_web(admin, "alice", "for alice")
        await wait_unread(admin, "alice", 1)
        _, reader = await herald.gateway.keys.create(["read"], "a reader")
        _, writer = await herald.gateway.keys.create(["read", "send"], "a backend")
        async with http(herald, reader) as as_reader, http(herald, writer) as as_writer:
            read_only, read_write = await token_for(as_reader, "alice"), await token_for(as_writer, "alice")

        def bearer(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        # reading: either token
        for token in (read_only, read_write):
            assert (await browser.get("/v1/users/alice/inbox", headers=bearer(token))).status_code == 200
            assert (await browser.get("/v1/users/alice/inbox/unread_count", headers=bearer(token))).json() == {"unread": 1}
            assert (await poll(browser, token, timeout=0))["items"] == []
            async with open_ws(herald.url, token) as ws:
                assert [f["id"] for f in await ws_sync(ws)] == [nid]

        writes = [
            ("POST", f"/v1/users/alice/inbox/{nid}/read"),
            ("POST", f"/v1/users/alice/inbox/{nid}/archive"),
            ("POST", "/v1/users/alice/inbox/read_all"),
        ]
        for method, path in writes:
            refused = await browser.request(method, path, headers=bearer(read_only))
            assert refused.status_code == 403, (path, refused.text)
            problem = refused.json()
            assert problem["errors"][0]["field"] == "Authorization" and "`send`" in problem["detail"], problem
            assert refused.headers["WWW-Authenticate"].endswith('error="insufficient_scope", scope="send"')
        # nothing changed
        inbox = (await browser.get("/v1/users/alice/inbox", headers=bearer(read_only))).json()["items"]
        assert [(i["read_at"], i["archived_at"]) for i in inbox] == [(None, None)]
        assert (await admin.get(f"/v1/notifications/{nid}")).json()["channels"]["web"]["status"] != "read"

        # the token of a key with `send` does all three
        for method, path in writes:
            response = await browser.request(method, path, headers=bearer(read_write))
            assert response.status_code == 200, (path, response.text)
        listed = (await browser.get("/v1/users/alice/inbox", params={"archived": "true"}, headers=bearer(read_write))).json()
        assert [(i["id"], i["read_at"] is not None, i["archived_at"] is not None) for i in listed["items"]] == [(nid, True, True)]


async def test_the_bootstrap_key_mints_tokens_that_write(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as admin:
        nid = await send_web(admin, "bob", "for bob")
        await wait_unread(admin, "bob", 1)
        token = await token_for(admin, "bob")
        async with httpx.AsyncClient(base_url=herald.url, headers={"Authorization": f"Bearer {token}"}) as browser:
            assert (await browser.post(f"/v1/users/bob/inbox/{nid}/read")).status_code == 200
