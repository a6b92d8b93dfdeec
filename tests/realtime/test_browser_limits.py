"""Limits on what browsers hold (issue 7.7): session caps per user and per token, the
subscriber request rate, token issuance per API key, the WebSocket message size, and
streams that end when their token expires.

Transports run against a real node over loopback; bucket refills and token deadlines are
checked under MockClock.
"""

from __future__ import annotations

import json

import pytest
import trio
from hypercorn.protocol import ws_stream
from trio_websocket import ConnectionClosed

from actors.api.realtime import TokenExpiry
from actors.api.subscriber import SessionCaps, SubscriberLimits
from actors.domain.tokens import InvalidToken, issue_token, verify_token
from actors.registry import Session
from protocol.frames import MAX_CLIENT_MESSAGE_BYTES, CloseCode
from reactor.backends.embedded import MemoryState
from reactor.clock import wall_ms
from tests.helpers import http, receive_json, running_node, token_for
from tests.realtime.streams import open_sse, open_ws, send_web, subscriber_client, wait_unread, ws_sync


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def closed_with(ws, code: int) -> None:
    """Read until the server closes the WebSocket; require its close code (bounded)."""
    with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
        while True:
            await receive_json(ws)
    assert closed.value.reason.code == code, closed.value.reason


async def until(predicate, seconds: float = 10) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.01)


def assert_429(response, retry_after: str, *words: str) -> None:
    assert response.status_code == 429, (response.status_code, response.text)
    assert response.headers["Retry-After"] == retry_after
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"][0]["field"] == "Authorization"
    for word in words:
        assert word in problem["detail"], problem


# -- session caps


async def test_sessions_over_the_user_or_token_cap_are_refused_and_slots_free_when_sessions_end(tmp_path):
    async with (
        running_node(tmp_path, subscriber_sessions_per_user=3, subscriber_sessions_per_token=2) as herald,
        http(herald) as client,
        subscriber_client(herald.url) as browser,
    ):
        caps = herald.gateway.limits.caps
        first, second, bobs = await token_for(client, "alice"), await token_for(client, "alice"), await token_for(client, "bob")
        async with open_ws(herald.url, first) as ws, open_sse(browser, first) as sse:
            assert await ws_sync(ws) == [] and await sse.until_synced() == []
            assert caps.held("alice") == 2
            # the token holds 2: a third session of it is refused on every transport
            assert_429(await browser.get("/v1/poll", params={"timeout": 0}, headers=bearer(first)), "5", "token")
            assert_429(await browser.get("/v1/sse", headers=bearer(first)), "5", "token")
            async with open_ws(herald.url, first) as refused:
                await closed_with(refused, CloseCode.TOO_MANY_SESSIONS)
            # another token of alice's opens a third; then alice holds 3, the user cap
            async with open_sse(browser, second) as third:
                assert await third.until_synced() == []
                assert_429(await browser.get("/v1/poll", params={"timeout": 0}, headers=bearer(second)), "5", "user alice")
                async with open_ws(herald.url, second) as refused:
                    await closed_with(refused, CloseCode.TOO_MANY_SESSIONS)
                # bob is not alice
                assert (await browser.get("/v1/poll", params={"timeout": 0}, headers=bearer(bobs))).status_code == 200
            await until(lambda: caps.held("alice") == 2)  # the SSE stream left: its slot is free again
            assert (await browser.get("/v1/poll", params={"timeout": 0}, headers=bearer(second))).status_code == 200
        await until(lambda: caps.held("alice") == 0 and herald.registry.session_count() == 0)
        assert caps.refused == 5


async def test_a_stream_that_loses_the_race_for_the_last_slot_ends_with_an_error_event(tmp_path, monkeypatch):
    async with (
        running_node(tmp_path, subscriber_sessions_per_user=1) as herald,
        http(herald) as client,
        subscriber_client(herald.url) as browser,
    ):
        token = await token_for(client, "alice")
        async with open_sse(browser, token) as held:
            assert await held.until_synced() == []
            # the route saw a free slot, but another request took it before the stream registered
            monkeypatch.setattr(herald.gateway.limits.caps, "check", lambda user_id, token_id: None)
            async with open_sse(browser, token) as late:
                with trio.fail_after(5):
                    event = await late.next_event()
                    assert event.event == "error" and event.data["code"] == CloseCode.TOO_MANY_SESSIONS
                    with pytest.raises(EOFError):
                        await late.next_event()


def test_session_caps_count_in_and_out():
    caps = SessionCaps(per_user=2, per_token=1)
    a1, a1_again, a2, a3 = (Session("a", 4, token_id=t) for t in ("t1", "t1", "t2", "t3"))
    assert caps.admit(a1) is None and "token" in str(caps.admit(a1_again))
    assert caps.admit(a2) is None and "user a" in str(caps.admit(a3))
    caps.release(a1)
    assert caps.held("a") == 1 and caps.admit(a3) is None
    for session in (a2, a3):
        caps.release(session)
    assert caps.held("a") == 0 and caps.refusal("a", "t1") is None and caps.refused == 2
    with pytest.raises(ValueError):
        SessionCaps(0, 1)


# -- request rate of subscriber tokens


async def test_subscriber_requests_over_the_users_rate_get_429_with_retry_after(tmp_path):
    async with (
        running_node(tmp_path, subscriber_rate_per_s=0.01, subscriber_burst=6) as herald,
        http(herald) as client,
        subscriber_client(herald.url) as browser,
    ):
        nids = [await send_web(client, "alice", f"n{i}") for i in range(2)]
        await wait_unread(client, "alice", 2)
        alice, alice_too, bob = await token_for(client, "alice"), await token_for(client, "alice"), await token_for(client, "bob")
        requests = [
            ("GET", "/v1/poll", {"timeout": 0}),
            ("GET", "/v1/users/alice/inbox", {}),
            ("GET", "/v1/users/alice/inbox/unread_count", {}),
            ("POST", f"/v1/users/alice/inbox/{nids[0]}/read", {}),
            ("POST", f"/v1/users/alice/inbox/{nids[1]}/archive", {}),
            ("POST", "/v1/users/alice/inbox/read_all", {}),
        ]
        for method, path, params in requests:  # the burst: 6 requests, whatever they are
            response = await browser.request(method, path, params=params, headers=bearer(alice))
            assert response.status_code == 200, (path, response.text)
        for method, path, params in [*requests, ("GET", "/v1/sse", {})]:  # one bucket per user, whichever token asks
            response = await browser.request(method, path, params=params, headers=bearer(alice_too))
            assert_429(response, "100", "user alice", "0.01/s, burst 6")
        async with open_ws(herald.url, alice) as ws:
            await closed_with(ws, CloseCode.RATE_LIMITED)
        # bob's bucket is his own, and the API key has its own limit, not alice's
        assert (await browser.get("/v1/poll", params={"timeout": 0}, headers=bearer(bob))).status_code == 200
        assert (await client.get("/v1/users/alice/inbox/unread_count")).status_code == 200
        # a WebSocket sync reads the inbox: it counts too (the connect took 1, five syncs the rest)
        carol = await token_for(client, "carol")
        async with open_ws(herald.url, carol) as ws:
            for _ in range(5):
                assert await ws_sync(ws) == []
            await ws.send_message(json.dumps({"type": "sync"}))
            await closed_with(ws, CloseCode.RATE_LIMITED)
        assert herald.gateway.limits.throttled == 9


async def test_the_users_bucket_refills_at_its_rate(autojump_clock):
    limits = SubscriberLimits(MemoryState(), SessionCaps(1, 1), rate_per_s=2, burst=3, issue_rate_per_s=1, issue_burst=1)
    assert [await limits.take("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await limits.take("alice")
    assert wait == pytest.approx(0.5)
    assert await limits.take("bob") == 0.0  # per user
    assert await limits.take_issue("k1") == 0.0 and await limits.take_issue("k1") == pytest.approx(1.0)  # its own bucket
    await trio.sleep(wait)
    assert await limits.take("alice") == 0.0 and await limits.take("alice") > 0
    with pytest.raises(ValueError):
        SubscriberLimits(MemoryState(), SessionCaps(1, 1), rate_per_s=0, burst=3, issue_rate_per_s=1, issue_burst=1)


async def test_token_buckets_of_the_memory_state_are_bounded(autojump_clock):
    state = MemoryState(max_keys=10)
    for user in range(100):
        await state.take_tokens(f"ratelimit:subscriber:u{user}", 1, 5, 1)
    assert len(state._buckets) == 10  # a bucket per user ever seen would grow without end


# -- token issuance


async def test_token_issuance_is_rate_limited_per_api_key(tmp_path):
    async with running_node(tmp_path, token_issue_rate_per_s=0.01, token_issue_burst=3) as herald:
        _, backend = await herald.gateway.keys.create(["read"], "a backend")
        _, other = await herald.gateway.keys.create(["read"], "another backend")
        async with http(herald, key=backend) as client, http(herald, key=other) as neighbour, http(herald) as bootstrap:
            for user in ("a", "b", "c"):
                assert (await client.post(f"/v1/users/{user}/tokens", json={})).status_code == 201
            limited = await client.post("/v1/users/d/tokens", json={})
            assert_429(limited, "100", "token-issuance rate", "0.01/s, burst 3")
            assert (await neighbour.post("/v1/users/d/tokens", json={})).status_code == 201  # per key
            assert (await client.get("/v1/users/d/notifications")).status_code == 200  # the key's other routes go on
            for user in ("a", "b", "c", "d", "e"):  # the bootstrap key has no rate limit, this one included
                assert (await bootstrap.post(f"/v1/users/{user}/tokens", json={})).status_code == 201


# -- WebSocket message size


async def test_a_15_mib_websocket_message_is_refused_with_1009_without_being_buffered(tmp_path, monkeypatch):
    async with running_node(tmp_path) as herald, http(herald) as client:
        peak = [0]
        installed = ws_stream.WebsocketBuffer  # what the node's WebSockets use

        class Recording(installed):  # type: ignore[misc, valid-type]
            def extend(self, event):
                try:
                    super().extend(event)
                finally:
                    peak[0] = max(peak[0], self.length if self.value is not None else 0)

        monkeypatch.setattr(ws_stream, "WebsocketBuffer", Recording)
        token = await token_for(client, "alice")
        async with open_ws(herald.url, token) as bystander, open_ws(herald.url, token) as ws:
            assert await ws_sync(bystander) == []
            # at the limit: the server reads it (and answers that it is no frame it knows)
            await ws.send_message("x" * MAX_CLIENT_MESSAGE_BYTES)
            with trio.fail_after(5):
                assert (await receive_json(ws))["type"] == "error"
            with trio.fail_after(30):
                try:
                    await ws.send_message("x" * (15 * 1024 * 1024))
                except ConnectionClosed:
                    pass
            await closed_with(ws, 1009)
            assert peak[0] <= MAX_CLIENT_MESSAGE_BYTES, peak[0]
            await until(lambda: herald.registry.session_count() == 1)  # the refused one has left; the other stays
            await bystander.send_message('{"type": "ping"}')
            with trio.fail_after(5):
                assert await receive_json(bystander) == {"type": "pong"}


# -- token expiry


async def test_open_streams_end_when_their_token_expires(tmp_path):
    async with running_node(tmp_path) as herald, subscriber_client(herald.url) as browser:
        token = issue_token(herald.gateway.secret, "alice", wall_ms() + 1500)  # the API's shortest is a minute
        async with open_ws(herald.url, token) as ws, open_sse(browser, token) as sse:
            assert await ws_sync(ws) == [] and await sse.until_synced() == []
            await closed_with(ws, CloseCode.TOKEN_EXPIRED)
            with trio.fail_after(10):
                event = await sse.next_event()
                assert event.event == "error" and event.data["code"] == CloseCode.TOKEN_EXPIRED, event
                assert "token expired" in event.data["detail"]
                with pytest.raises(EOFError):
                    await sse.next_event()
            with pytest.raises(InvalidToken):
                verify_token(herald.gateway.secret, token, wall_ms())  # it was closed after, not before, the expiry
        await until(lambda: herald.registry.session_count() == 0 and herald.gateway.limits.caps.held("alice") == 0)


async def test_the_expiry_deadline_is_the_token_expiry_and_rechecked(autojump_clock):
    now = wall_ms()
    expiry = TokenExpiry(now + 90_000)
    assert not expiry.expired()
    await trio.sleep(89)
    assert not expiry.expired()
    await trio.sleep_until(expiry.deadline)
    assert expiry.expired() and wall_ms() >= now + 90_000
