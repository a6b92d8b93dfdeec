"""API keys: created once and shown once, stored hashed, scoped, listed without secrets, revoked at once."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re

import httpx
import trio

from actors.cli import main as cli
from reactor.backends.embedded import FILES
from tests.helpers import http, running_node, web_notification

KEY_FORMAT = re.compile(r"^hk_([0-9a-f]{12})_([0-9a-f]{64})$")


def as_key(herald, key: str) -> httpx.AsyncClient:
    return http(herald, key=key)


async def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                return cli(list(args))
            except SystemExit as exc:
                print(exc, file=err)
                return 2

    code = await trio.to_thread.run_sync(call)
    return code, out.getvalue(), err.getvalue()


def stored_bytes(herald) -> bytes:
    return b"".join(p.read_bytes() for p in herald.config.data_dir.glob(FILES["keys"] + "*"))


async def test_a_key_is_shown_once_stored_hashed_and_listed_without_its_secret(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as admin:
        created = await admin.post("/v1/admin/keys", json={"scopes": ["send"], "name": "checkout service"})
        assert created.status_code == 201, created.text
        assert created.headers["Cache-Control"] == "no-store"
        body = created.json()
        match = KEY_FORMAT.match(body["key"])
        assert match and match.group(1) == body["key_id"]
        secret = match.group(2)
        assert body["scopes"] == ["send"] and body["name"] == "checkout service"
        assert (body["rate_per_s"], body["burst"]) == (herald.config.key_rate_per_s, herald.config.key_burst)

        # only a SHA-256 digest of the secret is on disk
        on_disk = stored_bytes(herald)
        assert secret.encode() not in on_disk and body["key"].encode() not in on_disk
        stored = await herald.gateway.keys.store.get_key(body["key_id"])
        assert stored.digest == hashlib.sha256(f"{body['key_id']}:{secret}".encode()).digest()

        async with as_key(herald, body["key"]) as service:
            assert (await service.post("/v1/notifications", json=web_notification("k1"))).status_code == 202
            refused = await service.get("/v1/users/k1/notifications")
            assert refused.status_code == 403 and "`read`" in refused.json()["detail"]

        listed = await admin.get("/v1/admin/keys")
        assert listed.status_code == 200
        assert secret not in listed.text and body["key"] not in listed.text
        keys = {k["key_id"]: k for k in listed.json()["keys"]}
        assert keys["bootstrap"]["bootstrap"] is True and keys["bootstrap"]["scopes"] == ["send", "read", "admin"]
        mine = keys[body["key_id"]]
        assert mine["name"] == "checkout service" and mine["scopes"] == ["send"] and mine["revoked_at"] is None
        assert mine["last_used_at"] is not None and "key" not in mine


async def test_a_revoked_key_stops_working_at_once(tmp_path):
    async with running_node(tmp_path, key_cache_ttl_s=3600) as herald, http(herald) as admin:
        key = (await admin.post("/v1/admin/keys", json={"scopes": ["send", "read"]})).json()
        async with as_key(herald, key["key"]) as service:
            assert (await service.get("/v1/users/k2/notifications")).status_code == 200  # now cached for an hour
            revoked = await admin.delete(f"/v1/admin/keys/{key['key_id']}")
            assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
            refused = await service.get("/v1/users/k2/notifications")
            assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
            assert (await service.post("/v1/notifications", json=web_notification("k2"))).status_code == 401

        again = await admin.delete(f"/v1/admin/keys/{key['key_id']}")
        assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
        unknown = await admin.delete("/v1/admin/keys/0123456789ab")
        assert unknown.status_code == 404 and unknown.json()["errors"][0]["field"] == "key_id"
        bootstrap = await admin.delete("/v1/admin/keys/bootstrap")
        assert bootstrap.status_code == 409
        assert (await admin.get("/v1/admin/keys")).status_code == 200  # the bootstrap key still works


async def test_scopes_are_exact_and_admin_implies_nothing_else(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as bootstrap:
        admin_key = (await bootstrap.post("/v1/admin/keys", json={"scopes": ["admin"]})).json()["key"]
        async with as_key(herald, admin_key) as admin:
            assert (await admin.get("/v1/admin/keys")).status_code == 200
            assert (await admin.post("/v1/notifications", json=web_notification("k3"))).status_code == 403
            assert (await admin.get("/v1/users/k3/notifications")).status_code == 403
            # but an admin key makes keys, so it is the one to guard
            reader = (await admin.post("/v1/admin/keys", json={"scopes": ["read"]})).json()["key"]
        async with as_key(herald, reader) as client:
            assert (await client.get("/v1/users/k3/notifications")).status_code == 200
            assert (await client.get("/v1/admin/keys")).status_code == 403


async def test_bad_key_requests_are_problems_naming_the_field(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as admin:
        cases = [
            ({"scopes": []}, "scopes"),
            ({"scopes": ["root"]}, "scopes.0"),
            ({"scopes": ["send", "send"]}, "scopes"),
            ({"name": "x"}, "scopes"),
            ({"scopes": ["send"], "rate_per_s": 0}, "rate_per_s"),
            ({"scopes": ["send"], "burst": -1}, "burst"),
            ({"scopes": ["send"], "name": "x" * 101}, "name"),
            ({"scopes": ["send"], "owner": "me"}, "owner"),
        ]
        for body, field in cases:
            response = await admin.post("/v1/admin/keys", json=body)
            assert response.status_code == 400, (body, response.text)
            assert response.json()["errors"][0]["field"] == field, (body, response.json())
        assert [k["key_id"] for k in (await admin.get("/v1/admin/keys")).json()["keys"]] == ["bootstrap"]


async def test_herald_keys_cli_through_the_server_and_offline(tmp_path):
    async with running_node(tmp_path, key_cache_ttl_s=0.2) as herald:
        online = ["--server", herald.url, "--api-key", "test-key"]
        offline = ["--offline", "--data-dir", str(herald.config.data_dir)]

        code, out, err = await run_cli("keys", "create", "--scope", "read", "--scope", "send", "--name", "cli", *online)
        assert code == 0 and "only this once" in err
        created = json.loads(out)
        assert created["scopes"] == ["send", "read"] and KEY_FORMAT.match(created["key"])

        code, out, _ = await run_cli("keys", "create", "--scope", "read", "--rate", "5", "--burst", "10", *offline)
        assert code == 0
        made_offline = json.loads(out)
        assert (made_offline["rate_per_s"], made_offline["burst"]) == (5, 10)

        for key in (created["key"], made_offline["key"]):  # a key made offline works on the running node at once
            async with as_key(herald, key) as client:
                assert (await client.get("/v1/users/c1/notifications")).status_code == 200

        for where in (online, offline):
            code, out, _ = await run_cli("keys", "list", *where)
            assert code == 0
            assert created["key"].split("_")[2] not in out and made_offline["key"].split("_")[2] not in out
            listed = {k["key_id"] for k in json.loads(out)["keys"]}
            assert {created["key_id"], made_offline["key_id"]} <= listed

        code, out, _ = await run_cli("keys", "revoke", created["key_id"], *online)
        assert code == 0 and json.loads(out)["revoked_at"]
        async with as_key(herald, created["key"]) as client:
            assert (await client.get("/v1/users/c1/notifications")).status_code == 401

        # revoked offline, from another process's point of view: the node notices within key_cache_ttl_s
        code, out, _ = await run_cli("keys", "revoke", made_offline["key_id"], *offline)
        assert code == 0 and json.loads(out)["revoked_at"]
        async with as_key(herald, made_offline["key"]) as client:
            with trio.fail_after(5):
                while (await client.get("/v1/users/c1/notifications")).status_code != 401:
                    await trio.sleep(0.05)

        code, out, _ = await run_cli("keys", "revoke", "0123456789ab", *offline)
        assert code == 1 and json.loads(out)["status"] == 404
        code, _, err = await run_cli("keys", "create", *online)
        assert code == 2 and "--scope" in err
        code, _, err = await run_cli("keys", "create", "--scope", "send", "--rate", "-1", *offline)
        assert code == 2 and "rate_per_s" in err
