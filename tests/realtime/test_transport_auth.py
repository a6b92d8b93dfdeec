"""Who may read what: one user's token never yields another user's notifications or inbox on
any transport; expired and tampered tokens are refused on SSE, long-poll and the inbox."""

from __future__ import annotations

import trio

from actors.domain.tokens import TOKEN_REFUSED
from protocol.ids import make_notification_id
from reactor.clock import wall_ms
from tests.auth.token_cases import refused_tokens
from tests.helpers import http, receive_json, running_node, token_for
from tests.realtime.streams import open_sse, open_ws, poll, send_web, subscriber_client, wait_unread, ws_sync


async def test_sse_and_poll_refuse_missing_expired_and_tampered_tokens(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        bare_sse, bare_poll = await browser.get("/v1/sse"), await browser.get("/v1/poll", params={"timeout": 0})
        for response in (bare_sse, bare_poll):
            assert response.status_code == 401 and response.headers["content-type"] == "application/problem+json"
            assert response.json()["errors"][0]["field"] == "Authorization"
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="herald"'
        cases = {**refused_tokens(herald.gateway.secret, wall_ms()), "the API key": "test-key"}
        for name, token in cases.items():
            for path, params in (("/v1/sse", {}), ("/v1/poll", {"timeout": 0})):
                by_query = await browser.get(path, params={**params, "token": token})
                by_header = await browser.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
                for response, field in ((by_query, "token"), (by_header, "Authorization")):
                    assert response.status_code == 401, (name, path, field, response.status_code)
                    assert response.json()["errors"][0]["field"] == field, (name, path)
                    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
                    if field == "token":  # a header with a space or a '!' is not a token's shape: the API key check answers
                        assert response.json()["detail"] == TOKEN_REFUSED, (name, path)
        # an expired token and a forged one get the same answer, byte for byte
        answers = set()
        for name in ("expired", "signature flipped", "signed with another secret", "signed with an unknown kid", "signature with trailing bits"):
            for path, params in (("/v1/sse", {}), ("/v1/poll", {"timeout": 0})):
                for headers, query in (({}, {"token": cases[name]}), ({"Authorization": f"Bearer {cases[name]}"}, {})):
                    response = await browser.get(path, params={**params, **query}, headers=headers)
                    answers.add((path, bool(query), response.status_code, response.headers["WWW-Authenticate"], response.content))
        assert len(answers) == 4, answers  # one per (route, token position)
        assert herald.gateway.sessions_opened == 0 and herald.registry.session_count() == 0
        # the same token, untampered, is let in
        assert (await poll(browser, await token_for(client, "alice"), timeout=0)) == {"items": [], "last_id": None}


async def test_inbox_takes_a_key_or_the_users_own_token_and_nothing_else(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        alice_id, bob_id = await send_web(client, "alice", "for alice"), await send_web(client, "bob", "for bob")
        await wait_unread(client, "alice", 1)
        await wait_unread(client, "bob", 1)
        alice = await token_for(client, "alice")

        def as_alice(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        own = [
            ("GET", "/v1/users/alice/inbox"),
            ("GET", "/v1/users/alice/inbox/unread_count"),
            ("POST", f"/v1/users/alice/inbox/{alice_id}/read"),
            ("POST", f"/v1/users/alice/inbox/{alice_id}/archive"),
            ("POST", "/v1/users/alice/inbox/read_all"),
        ]
        bobs = [
            ("GET", "/v1/users/bob/inbox"),
            ("GET", "/v1/users/bob/inbox/unread_count"),
            ("POST", f"/v1/users/bob/inbox/{bob_id}/read"),
            ("POST", f"/v1/users/bob/inbox/{bob_id}/archive"),
            ("POST", "/v1/users/bob/inbox/read_all"),
        ]
        for method, path in bobs:
            refused = await browser.request(method, path, headers=as_alice(alice))
            assert refused.status_code == 403, (method, path, refused.text)
            assert refused.json()["errors"][0]["field"] == "Authorization"
            assert "bob" not in refused.text.replace("/bob/", "")  # nothing of bob's inbox leaks
        inbox_answers = {}
        for name, forged in refused_tokens(herald.gateway.secret, wall_ms()).items():
            for method, path in own:
                response = await browser.request(method, path, headers=as_alice(forged))
                assert response.status_code == 401, (name, method, path, response.status_code)
                assert response.json()["errors"][0]["field"] == "Authorization"
                inbox_answers.setdefault(name, set()).add((response.headers["WWW-Authenticate"], response.content))
        assert inbox_answers["expired"] == inbox_answers["signature flipped"] == inbox_answers["signed with an unknown kid"]
        for method, path in own:
            bare = await browser.request(method, path)
            assert bare.status_code == 401, (method, path)
        # bob's inbox is as it was: nobody read or archived anything in it
        assert (await client.get("/v1/users/bob/inbox/unread_count")).json() == {"unread": 1}
        # alice's own token does everything in her inbox
        for method, path in own:
            response = await browser.request(method, path, headers=as_alice(alice))
            assert response.status_code == 200, (method, path, response.text)
        listed = (await browser.get("/v1/users/alice/inbox", params={"archived": "true"}, headers=as_alice(alice))).json()
        assert [(i["id"], i["read_at"] is not None, i["archived_at"] is not None) for i in listed["items"]] == [(alice_id, True, True)]


async def test_a_token_never_yields_another_users_notifications_on_any_transport(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        alice, bob = await token_for(client, "alice"), await token_for(client, "bob")
        to_bob = await send_web(client, "bob", "for bob")
        await wait_unread(client, "bob", 1)
        async with open_sse(browser, alice) as sse, open_ws(herald.url, alice) as ws, open_sse(browser, bob) as bob_sse:
            assert await sse.until_synced() == [] and await ws_sync(ws) == [] and await bob_sse.until_synced() == []
            waiting_poll: dict = {}

            async def alice_polls() -> None:
                waiting_poll.update(await poll(browser, alice, timeout=10))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(alice_polls)
                with trio.fail_after(5):  # alice's poll is registered and waiting (3 sessions for alice)
                    while herald.registry.session_count() < 4:
                        await trio.sleep(0.01)
                more_for_bob = await send_web(client, "bob", "more for bob")
                with trio.fail_after(5):
                    assert (await bob_sse.next_event()).id == more_for_bob  # the fan-out to bob has happened
                to_alice = await send_web(client, "alice", "for alice")
            # alice's next frame on every transport is hers: bob's never reached her
            assert [item["id"] for item in waiting_poll["items"]] == [to_alice]
            with trio.fail_after(5):
                assert (await sse.next_event()).id == to_alice
                assert (await receive_json(ws))["id"] == to_alice
        # resuming from bob's ids is refused on every transport (tests/realtime/test_acks_are_owned.py has the rest);
        # an id nobody knows replays only alice's own
        await wait_unread(client, "alice", 1)
        for last_id in (to_bob, more_for_bob):
            refused = await browser.get("/v1/sse", headers={"Authorization": f"Bearer {alice}", "Last-Event-ID": last_id})
            assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "Last-Event-ID"
            params = {"after": last_id, "timeout": 0}
            refused = await browser.get("/v1/poll", params=params, headers={"Authorization": f"Bearer {alice}"})
            assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "after"
            assert "bob" not in refused.text
        unknown = make_notification_id(wall_ms(), 7)
        async with open_sse(browser, alice, unknown) as sse:
            assert [e.id for e in await sse.until_synced()] == [to_alice]
        assert [i["id"] for i in (await poll(browser, alice, after=unknown, timeout=0))["items"]] == [to_alice]
        async with open_ws(herald.url, f"{alice}&last_id={unknown}") as ws:
            frames = [await receive_json(ws) for _ in range(2)]
            assert frames == [{**frames[0], "id": to_alice}, {"type": "synced", "count": 1}]
