"""What a node keeps on disk is private, and no secret sits in clear in a shared database.

The data dir is 0700 and every file in it 0600 after traffic on every channel (databases
and their WAL/SHM, bus segments, the outbox, the SMS and push sandboxes, the key files),
whatever the umask of the shell that started it. The token-signing keys live in their
own file; the generated bootstrap key is a real `hk_` key of which the store keeps a
digest; a data dir from before (both in clear in store.sqlite3) is migrated without
breaking the links and tokens it signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import sqlite3
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import httpx
import pytest
import trio

from actors.services.credentials import API_KEY_FILE
from reactor.backends.embedded import FILES, LOCK_FILE
from reactor.backends.embedded.signing_keys import read_signing_keys
from reactor.clock import wall_ms
from tests.helpers import all_channels, http, open_websocket_url, receive_json, running_node, token_for, wait_final, ws_url
from tests.process import herald_process

KEY_FORMAT = re.compile(r"^hk_([0-9a-f]{12})_([0-9a-f]{64})$")


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run with the umask of an ordinary shell (022), restored after."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def loose_entries(data_dir: Path) -> dict[str, str]:
    """Every entry under data_dir (itself included) that its group or others may use: path -> mode."""
    loose = {}
    for entry in [data_dir, *data_dir.rglob("*")]:
        mode = entry.lstat().st_mode
        if stat.S_IMODE(mode) & 0o077:
            loose[str(entry.relative_to(data_dir.parent))] = oct(stat.S_IMODE(mode))
    return loose


def offline_channels(user: str) -> dict:
    """Email, SMS and push: final with nobody connected (web waits for a session)."""
    body = all_channels(user)
    body["channels"].remove("web")
    del body["content"]["web"]
    return body


def every_byte(data_dir: Path, *, but: tuple[str, ...] = ()) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file() and p.name not in but)


async def traffic_on_every_channel(herald, client: httpx.AsyncClient) -> None:
    """Notifications on email, SMS, push and web (a live WebSocket acks), an idempotent send, a template,
    preferences, a device, an API key, an unsubscribe: every kind of file the node writes."""
    token = await token_for(client, "alice")
    async with open_websocket_url(ws_url(herald.url, token)) as ws:
        await ws.send_message(json.dumps({"type": "sync"}))
        assert (await receive_json(ws))["type"] == "synced"
        sent = await client.post("/v1/notifications", json=all_channels("alice"), headers={"Idempotency-Key": "perm-1"})
        assert sent.status_code == 202, sent.text
        nid = sent.json()["notification_id"]
        with trio.fail_after(10):
            assert (await receive_json(ws))["id"] == nid
        await ws.send_message(json.dumps({"type": "ack", "id": nid}))
        await wait_final(client, nid)
    template = {"name": "t", "locales": {"en": {"web": {"title": "Hi {{name}}"}}}}
    assert (await client.post("/v1/templates/welcome", json=template)).status_code == 201
    marketing = {"user_id": "bob", "channels": ["email"], "category": "marketing", "to": {"email": "bob@example.org"},
                 "content": {"email": {"subject": "Sale", "text": "50% off"}}}
    sent = await client.post("/v1/notifications", json=marketing)
    assert sent.status_code == 202, sent.text
    bob = sent.json()["notification_id"]
    await wait_final(client, bob)
    assert (await client.put("/v1/users/alice/preferences", json={"contact": {"phone": "+15555550100"}})).status_code == 200
    assert (await client.post("/v1/users/alice/devices", json={"platform": "fcm", "token": "tok-a"})).status_code == 201
    assert (await client.post("/v1/admin/keys", json={"scopes": ["send"]})).status_code == 201
    eml = (herald.config.outbox_dir / f"{bob}.eml").read_text()
    link = re.search(r"^List-Unsubscribe: <[^>]*\?token=([^>]+)>", eml, re.MULTILINE)
    assert link is not None
    async with httpx.AsyncClient(base_url=herald.url) as browser:
        assert (await browser.post(f"/v1/unsubscribe?token={link.group(1)}")).status_code == 200


async def test_every_file_of_the_data_dir_is_private_after_traffic_on_every_channel(tmp_path):
    data_dir = tmp_path / "data"  # as an older version left it: open to all
    data_dir.mkdir()
    os.chmod(data_dir, 0o755)
    (data_dir / "left-by-an-older-version.txt").write_text("readable by all")
    os.chmod(data_dir / "left-by-an-older-version.txt", 0o644)
    with umask(0o022):
        async with running_node(tmp_path, api_key="") as herald, http(herald, herald.api_key) as client:
            await traffic_on_every_channel(herald, client)
            names = {p.name for p in data_dir.rglob("*")}
            # the node wrote every kind of file this test means to check
            for expected in ("store.sqlite3-wal", "logs.sqlite3", "keys.sqlite3", "state.sqlite3", "users.sqlite3",
                             "templates.sqlite3", "sms.jsonl", "push.jsonl", "api-key", FILES['signing_keys'], "outbox", "bus", LOCK_FILE):
                assert expected in names, (expected, sorted(names))
            assert any(p.suffix == ".eml" for p in (data_dir / "outbox").iterdir())
            assert any(p.is_file() for p in (data_dir / "bus").rglob("*"))
            assert loose_entries(data_dir) == {}  # while running: WAL and SHM files included
    assert loose_entries(data_dir) == {}


async def test_herald_serve_makes_the_api_key_file_0600_and_the_data_dir_0700(tmp_path):
    with umask(0o022):  # the child inherits an ordinary shell's umask
        async with herald_process(tmp_path / "data") as server:
            assert KEY_FORMAT.match(server.api_key), server.api_key
            key_file = tmp_path / "data" / API_KEY_FILE
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
            async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"}) as client:
                nid = (await client.post("/v1/notifications", json=offline_channels("alice"))).json()["notification_id"]
                await wait_final(client, nid)
            assert loose_entries(tmp_path / "data") == {}


async def test_the_generated_bootstrap_key_is_an_hk_key_stored_hashed_and_listed_as_such(tmp_path):
    data_dir = tmp_path / "data"
    async with running_node(tmp_path, api_key="") as herald:
        key = herald.api_key
        match = KEY_FORMAT.match(key)
        assert match, key
        assert (data_dir / API_KEY_FILE).read_text() == key + "\n"
        key_id, secret = match.groups()
        stored = await herald.gateway.keys.store.get_key(key_id)
        assert stored.bootstrap and stored.digest == hashlib.sha256(f"{key_id}:{secret}".encode()).digest()
        assert secret.encode() not in every_byte(data_dir, but=(API_KEY_FILE,))  # in the api-key file only
        async with http(herald, key) as client:
            listed = (await client.get("/v1/admin/keys")).json()["keys"]
            assert [k["key_id"] for k in listed if k["bootstrap"]] == [key_id]  # listed once, by its real id
            mine = next(k for k in listed if k["key_id"] == key_id)
            assert "generated" in mine["name"] and mine["scopes"] == ["send", "read", "admin"]
            assert mine["rate_per_s"] is None and mine["created_at"] and mine["last_used_at"]
            assert secret not in json.dumps(listed)
            assert (await client.post("/v1/notifications", json=all_channels("u1"))).status_code == 202

    # a restart keeps it
    async with running_node(tmp_path, api_key="") as herald, http(herald, key) as client:
        assert herald.api_key == key
        assert (await client.get("/v1/admin/keys")).status_code == 200

    # without the file, a restart makes a new one and revokes the old
    (data_dir / API_KEY_FILE).unlink()
    async with running_node(tmp_path, api_key="") as herald:
        assert herald.api_key != key and KEY_FORMAT.match(herald.api_key)
        async with http(herald, key) as old, http(herald, herald.api_key) as new:
            assert (await old.get("/v1/admin/keys")).status_code == 401
            keys = (await new.get("/v1/admin/keys")).json()["keys"]
            bootstraps = {k["key_id"]: k["revoked_at"] for k in keys if k["bootstrap"]}
            assert bootstraps[key_id] is not None and bootstraps[KEY_FORMAT.match(herald.api_key).group(1)] is None
        generated = herald.api_key

    # a configured key replaces the generated one
    async with running_node(tmp_path, api_key="configured-key") as herald:
        assert herald.api_key == "configured-key"
        assert (data_dir / API_KEY_FILE).read_text() == "configured-key\n"
        async with http(herald, generated) as old, http(herald, "configured-key") as configured:
            assert (await old.get("/v1/admin/keys")).status_code == 401
            listed = (await configured.get("/v1/admin/keys")).json()["keys"]
            assert listed[0]["key_id"] == "bootstrap" and "configured" in listed[0]["name"]
            assert all(k["revoked_at"] for k in listed[1:])


async def test_no_signing_secret_in_clear_outside_its_own_file(tmp_path):
    data_dir = tmp_path / "data"
    async with running_node(tmp_path) as herald, http(herald) as client:
        await token_for(client, "alice")
        nid = (await client.post("/v1/notifications", json=offline_channels("alice"))).json()["notification_id"]
        await wait_final(client, nid)
        ring = read_signing_keys(data_dir / FILES['signing_keys'])
        assert ring is not None
        keys, current = ring.keys, ring.current
        assert current == herald.gateway.secret.current.kid
        assert stat.S_IMODE((data_dir / FILES['signing_keys']).stat().st_mode) == 0o600
        elsewhere = every_byte(data_dir, but=(FILES['signing_keys'],))
        for key in keys:
            assert key.secret not in elsewhere and key.secret.hex().encode() not in elsewhere
    store = sqlite3.connect(data_dir / "store.sqlite3")
    assert store.execute("SELECT key FROM meta").fetchall() == []
    store.close()


def legacy_token(secret_hex: str, claims: dict, purpose: bytes = b"") -> str:
    """A token as a node from before key ids signed it: base64url(claims) "." base64url(hmac), no kid."""
    key = secret_hex.encode()
    if purpose:
        key = hmac.new(key, purpose, hashlib.sha256).digest()
    body = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
    signature = base64.urlsafe_b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    return f"{body}.{signature}"


async def test_a_data_dir_from_before_is_migrated_and_keeps_its_links_working(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    old_secret, old_key = "ab" * 32, "0123456789abcdef0123456789abcdef01234567"
    db = sqlite3.connect(data_dir / "store.sqlite3")  # what the node of before kept, in clear
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("token_secret", old_secret), ("api_key", old_key)])
    db.commit()
    db.close()
    (data_dir / API_KEY_FILE).write_text(old_key + "\n")
    unsubscribe = legacy_token(old_secret, {"u": "carol", "c": "marketing"}, b"herald/unsubscribe/v1")
    subscriber = legacy_token(old_secret, {"u": "carol", "exp": wall_ms() + 3_600_000})

    async with running_node(tmp_path, api_key="") as herald:
        assert KEY_FORMAT.match(herald.api_key) and herald.api_key != old_key
        everything = every_byte(data_dir, but=(FILES['signing_keys'],))
        assert old_secret.encode() not in everything and old_key.encode() not in everything
        async with httpx.AsyncClient(base_url=herald.url, timeout=10) as browser, http(herald, herald.api_key) as client:
            assert (await browser.get("/v1/admin/keys", headers={"Authorization": f"Bearer {old_key}"})).status_code == 401
            # the links in emails sent before, and the tokens browsers hold, keep working
            assert (await browser.post(f"/v1/unsubscribe?token={quote(unsubscribe, safe='')}")).status_code == 200
            assert (await client.get("/v1/users/carol/preferences")).json()["opt_out"] == ["marketing"]
            polled = await browser.get("/v1/poll", params={"token": subscriber, "timeout": 0})
            assert polled.status_code == 200, polled.text
            # new ones are signed with a new key, with its kid
            new = await token_for(client, "carol")
            assert new.split(".")[0] == herald.gateway.secret.current.kid != "legacy"


async def poll_status(herald, token: str) -> int:
    async with httpx.AsyncClient(base_url=herald.url, timeout=10) as browser:
        return (await browser.get("/v1/poll", params={"token": token, "timeout": 0})).status_code


@pytest.mark.parametrize("mode", ["route", "cli", "offline"])
async def test_rotation_keeps_old_tokens_until_they_expire_and_signs_new_ones_with_the_new_kid(tmp_path, mode):
    from tests.auth.test_api_keys import run_cli

    data_dir = tmp_path / "data"

    async def rotate(herald, retire: bool = False) -> dict:
        """Through the admin route or the CLI with a running node; --offline between two runs (herald is None)."""
        if mode == "route":
            async with http(herald) as client:
                response = await client.post("/v1/admin/signing-keys")
                assert response.status_code == 201, response.text
                ring = response.json()
                current = next(k["kid"] for k in ring["keys"] if k["current"])
                refused = await client.delete(f"/v1/admin/signing-keys/{current}")
                assert refused.status_code == 409 and refused.json()["errors"][0]["field"] == "kid"
                assert (await client.delete("/v1/admin/signing-keys/ffffffff")).status_code == 404
                for old in ring["keys"] if retire else ():
                    if not old["current"]:
                        response = await client.delete(f"/v1/admin/signing-keys/{old['kid']}")
                        assert response.status_code == 200, response.text
                        ring = response.json()
                assert (await client.get("/v1/admin/signing-keys")).json() == ring
            return ring
        args = ["keys", "rotate-secret", *(["--retire-previous"] if retire else [])]
        if mode == "cli":
            args += ["--server", herald.url, "--api-key", "test-key"]
        else:
            args += ["--offline", "--data-dir", str(data_dir)]
        code, out, err = await run_cli(*args)
        assert code == 0, err
        return json.loads(out)

    live = mode != "offline"
    async with running_node(tmp_path) as herald, http(herald) as client:
        first_kid = herald.gateway.secret.current.kid
        old = await token_for(client, "alice")
        assert old.split(".")[0] == first_kid
        ring = await rotate(herald) if live else None
        if live:  # at once, no restart
            assert herald.gateway.secret.current.kid == ring["keys"][-1]["kid"]
            assert (await token_for(client, "alice")).split(".")[0] == ring["keys"][-1]["kid"]
    ring = ring or await rotate(None)
    new_kid = ring["keys"][-1]["kid"]
    assert [(k["kid"], k["current"]) for k in ring["keys"]] == [(first_kid, False), (new_kid, True)]
    assert new_kid != first_kid and not any("secret" in k for k in ring["keys"])

    async with running_node(tmp_path) as herald, http(herald) as client:
        assert herald.gateway.secret.current.kid == new_kid  # kept across a restart
        new = await token_for(client, "alice")
        assert new.split(".")[0] == new_kid
        assert await poll_status(herald, old) == await poll_status(herald, new) == 200  # the old one too, until it expires
        if live:  # retiring the previous keys ends every token they signed, at once
            ring = await rotate(herald, retire=True)
            assert await poll_status(herald, old) == await poll_status(herald, new) == 401
    ring = await rotate(None, retire=True) if not live else ring
    assert [k["current"] for k in ring["keys"]] == [True] and ring["keys"][0]["kid"] not in (first_kid, new_kid)

    async with running_node(tmp_path) as herald, http(herald) as client:
        assert [k.kid for k in herald.gateway.secret.keys()] == [ring["keys"][0]["kid"]]
        assert await poll_status(herald, old) == await poll_status(herald, new) == 401
        assert await poll_status(herald, await token_for(client, "alice")) == 200
    assert stat.S_IMODE((data_dir / FILES['signing_keys']).stat().st_mode) == 0o600
