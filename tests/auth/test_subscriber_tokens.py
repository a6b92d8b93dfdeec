"""Subscriber tokens on the WebSocket: one user's token never yields another's notifications;
expired and tampered tokens are refused with close code 4100."""

from __future__ import annotations

import base64
import json

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from actors.auth import InvalidToken, issue_token, verify_token
from protocol.frames import CloseCode
from reactor.clock import wall_ms
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


def forged_tokens(secret: bytes, now_ms: int) -> dict[str, str]:
    """Tokens for alice that must not verify at `now_ms`."""
    good = issue_token(secret, "alice", now_ms + 3_600_000)
    body, signature = good.split(".")
    other_user_body = base64.urlsafe_b64encode(json.dumps({"u": "bob", "exp": now_ms + 3_600_000}).encode()).rstrip(b"=").decode()
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    return {
        "expired": issue_token(secret, "alice", now_ms - 1),
        "signature flipped": f"{body}.{flipped}",
        "body swapped to another user": f"{other_user_body}.{signature}",
        "signed with another secret": issue_token(b"not the node's secret", "alice", now_ms + 3_600_000),
        "no signature": body,
        "garbage": "not-a-token",
        "empty": "",
        "api key instead of a token": "test-key",
    }


async def test_expired_and_tampered_tokens_are_refused_with_4100(tmp_path):
    async with running_node(tmp_path) as herald:
        cases = forged_tokens(herald.gateway.secret, wall_ms())
        cases["absent"] = None
        for name, token in cases.items():
            url = ws_url(herald.url, token) if token is not None else herald.url.replace("http://", "ws://") + "/v1/ws"
            async with open_websocket_url(url) as ws:
                with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
            assert closed.value.reason.code == CloseCode.UNAUTHORIZED, (name, closed.value.reason)
        assert herald.gateway.sessions_opened == 0


def test_a_token_expires_and_its_signature_covers_user_and_expiry():
    secret = b"s" * 32
    token = issue_token(secret, "alice", 1_000_000)
    assert verify_token(secret, token, 999_999) == "alice"
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(secret, token, 1_000_000)
    for name, forged in forged_tokens(secret, 500_000).items():
        with pytest.raises(InvalidToken):
            verify_token(secret, forged, 500_000)
            pytest.fail(f"{name} verified")


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
