"""Subscriber tokens on the WebSocket: one user's token never yields another's notifications;
expired, tampered and non-canonical tokens are refused with close code 4100, all with the same reason."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from actors.domain.tokens import TOKEN_REFUSED, InvalidToken, SigningKeys, SubscriberToken, issue_token, read_token, sign_claims, verify_token
from protocol.frames import CloseCode
from reactor.clock import wall_ms
from tests.auth.token_cases import refused_tokens
from tests.helpers import http, receive_json, running_node, token_for, web_notification, ws_url


async def sync(ws, last_id: str | None = None) -> list[dict]:
    """Send a sync, return the notification frames replayed before `synced` (bounded)."""
    await ws.send_message(json.dumps({"type": "sync"} if last_id is None else {"type": "sync", "last_id": last_id}))
    frames = []
    with trio.fail_after(5):
        while True:
            frame = await receive_json(ws)
            if frame["type"] == "synced":
                assert frame["count"] == len(frames)
                return frames
            assert frame["type"] == "notification", frame
            frames.append(frame)


async def next_frame_is_pong(ws) -> None:
    """Ping and require the very next frame to be the pong: nothing else was queued for this session."""
    await ws.send_message('{"type": "ping"}')
    with trio.fail_after(5):
        assert await receive_json(ws) == {"type": "pong"}


async def wait_in_inbox(client, nid: str) -> None:
    """Until the web delivery is recorded as sent (nobody connected): then it is in the inbox (bounded)."""
    with trio.fail_after(10):
        while True:
            response = await client.get(f"/v1/notifications/{nid}")
            if response.status_code == 200 and response.json()["channels"]["web"]["status"] == "sent":
                return
            await trio.sleep(0.02)


async def test_a_token_never_yields_another_users_notifications(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        token_a, token_b = await token_for(client, "alice"), await token_for(client, "bob")
        async with open_websocket_url(ws_url(herald.url, token_a)) as alice, open_websocket_url(ws_url(herald.url, token_b)) as bob:
            assert await sync(alice) == [] and await sync(bob) == []
            to_bob = (await client.post("/v1/notifications", json=web_notification("bob", "for bob"))).json()["notification_id"]
            with trio.fail_after(5):
                frame = await receive_json(bob)
            assert frame["id"] == to_bob  # delivered live to bob: the fan-out has happened ...
            await next_frame_is_pong(alice)  # ... and alice got nothing
            to_alice = (await client.post("/v1/notifications", json=web_notification("alice", "for alice"))).json()["notification_id"]
            with trio.fail_after(5):
                assert (await receive_json(alice))["id"] == to_alice
            await next_frame_is_pong(bob)

        # bob gets more while nobody is connected; alice's sync replays only hers, whatever she asks for
        queued_for_bob = (await client.post("/v1/notifications", json=web_notification("bob", "later"))).json()["notification_id"]
        await wait_in_inbox(client, queued_for_bob)
        async with open_websocket_url(ws_url(herald.url, token_b)) as bob:
            assert [f["id"] for f in await sync(bob, to_bob)] == [queued_for_bob]
        async with open_websocket_url(ws_url(herald.url, token_a)) as alice:
            assert [f["id"] for f in await sync(alice)] == [to_alice]
            assert await sync(alice, to_alice) == []
        for last_id in (to_bob, queued_for_bob):  # bob's ids: alice's session is closed, terminal (4101)
            async with open_websocket_url(ws_url(herald.url, token_a)) as alice:
                await alice.send_message(json.dumps({"type": "sync", "last_id": last_id}))
                with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                    await receive_json(alice)
                assert closed.value.reason.code == CloseCode.PROTOCOL_ERROR


async def test_expired_and_tampered_tokens_are_refused_with_4100_and_one_reason(tmp_path):
    async with running_node(tmp_path) as herald:
        cases: dict[str, str | None] = {**refused_tokens(herald.gateway.secret, wall_ms()), "empty": "", "the API key": "test-key"}
        cases["absent"] = None
        reasons = {}
        for name, token in cases.items():
            base = herald.url.replace("http://", "ws://") + "/v1/ws"
            url = base if token is None else f"{base}?token={quote(token, safe='')}"
            async with open_websocket_url(url) as ws:
                with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
            assert closed.value.reason.code == CloseCode.UNAUTHORIZED, (name, closed.value.reason)
            reasons[name] = closed.value.reason.reason
        assert herald.gateway.sessions_opened == 0
        # an expired token and a forged one are told apart by nothing: one close reason for every refusal
        assert set(reasons.values()) == {TOKEN_REFUSED}, reasons


def test_a_token_expires_and_its_signature_covers_kid_user_and_expiry():
    keys = SigningKeys.generate()
    token = issue_token(keys, "alice", 1_000_000)
    assert token.split(".")[0] == keys.current.kid
    assert verify_token(keys, token, 999_999) == "alice"
    with pytest.raises(InvalidToken) as expired:
        verify_token(keys, token, 1_000_000)
    assert expired.value.reason == "token expired" and str(expired.value) == TOKEN_REFUSED
    for name, forged in refused_tokens(keys, 500_000).items():
        with pytest.raises(InvalidToken) as refused:
            verify_token(keys, forged, 500_000)
            pytest.fail(f"{name} verified")
        assert str(refused.value) == TOKEN_REFUSED, name  # the same words whatever the reason


def test_the_claims_are_checked_for_type_and_the_write_right_is_signed():
    keys = SigningKeys.generate()
    assert read_token(keys, issue_token(keys, "alice", 10), 0) == SubscriberToken("alice", 10, False)
    assert read_token(keys, issue_token(keys, "alice", 10, can_write=True), 0) == SubscriberToken("alice", 10, True)
    not_ours = ({"u": "alice", "exp": 10.5}, {"u": "alice", "exp": True}, {"u": 1, "exp": 10}, {"u": "alice", "exp": 10, "w": 1}, ["alice"])
    for claims in not_ours:
        forged = sign_claims(keys, claims)  # signed, but not claims Herald issues
        with pytest.raises(InvalidToken):
            read_token(keys, forged, 0)
    # the write right cannot be added to a read token: it is under the signature
    kid, body, signature = issue_token(keys, "alice", 10).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    writable = base64.urlsafe_b64encode(json.dumps({**claims, "w": True}).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        read_token(keys, f"{kid}.{writable}.{signature}", 0)


async def test_token_ttl_is_capped_at_a_day(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        too_long = await client.post("/v1/users/alice/tokens", json={"ttl_s": 86_401})
        assert too_long.status_code == 400 and too_long.json()["errors"][0]["field"] == "ttl_s"
        day = await client.post("/v1/users/alice/tokens", json={"ttl_s": 86_400})
        assert day.status_code == 201
        _, sender = await herald.gateway.keys.create(["send"], "sender")
        async with http(herald, key=sender) as send_only:
            refused = await send_only.post("/v1/users/alice/tokens", json={})
            assert refused.status_code == 403 and "`read`" in refused.json()["detail"]
