"""The KeyStore port's conformance suite: every backend passes the same tests."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest

from reactor.backends.embedded import SqliteKeyStore
from reactor.ports import StoredKey


@asynccontextmanager
async def sqlite(tmp_path):
    store = SqliteKeyStore(tmp_path / "keys.sqlite3")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=[sqlite], ids=["sqlite"])
def backend(request):
    return request.param


def key(key_id: str, created_ms: int = 1000, **extra) -> StoredKey:
    return StoredKey(key_id, bytes(32) + key_id.encode(), ("send", "read"), f"key {key_id}", created_ms, **extra)


async def test_add_get_and_a_taken_id(tmp_path, backend):
    async with backend(tmp_path) as store:
        assert await store.get_key("aaaaaaaaaaaa") is None
        assert await store.add_key(key("aaaaaaaaaaaa")) is True
        assert await store.get_key("aaaaaaaaaaaa") == key("aaaaaaaaaaaa")
        assert await store.add_key(StoredKey("aaaaaaaaaaaa", b"other", ("admin",), "x", 5)) is False
        assert await store.get_key("aaaaaaaaaaaa") == key("aaaaaaaaaaaa")
        limited = key("bbbbbbbbbbbb", rate_per_s=2.5, burst=10.0)
        await store.add_key(limited)
        assert await store.get_key("bbbbbbbbbbbb") == limited


async def test_list_is_oldest_first_and_keeps_revoked_keys(tmp_path, backend):
    async with backend(tmp_path) as store:
        for key_id, at in (("cccccccccccc", 3000), ("aaaaaaaaaaaa", 1000), ("bbbbbbbbbbbb", 2000)):
            await store.add_key(key(key_id, at))
        await store.revoke_key("bbbbbbbbbbbb", 4000)
        listed = await store.list_keys()
        assert [k.key_id for k in listed] == ["aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"]
        assert [k.revoked_ms for k in listed] == [None, 4000, None]


async def test_revoke_keeps_the_first_time_and_unknown_is_none(tmp_path, backend):
    async with backend(tmp_path) as store:
        await store.add_key(key("aaaaaaaaaaaa"))
        assert (await store.revoke_key("aaaaaaaaaaaa", 5000)).revoked_ms == 5000
        assert (await store.revoke_key("aaaaaaaaaaaa", 9000)).revoked_ms == 5000
        assert await store.revoke_key("ffffffffffff", 5000) is None
        assert await store.get_key("ffffffffffff") is None


async def test_touch_only_moves_last_used_forward(tmp_path, backend):
    async with backend(tmp_path) as store:
        await store.add_key(key("aaaaaaaaaaaa"))
        await store.touch_key("aaaaaaaaaaaa", 7000)
        await store.touch_key("aaaaaaaaaaaa", 6000)
        assert (await store.get_key("aaaaaaaaaaaa")).last_used_ms == 7000
        await store.touch_key("ffffffffffff", 7000)  # unknown: nothing happens
        assert await store.get_key("ffffffffffff") is None


async def test_keys_survive_a_reopen(tmp_path, backend):
    async with backend(tmp_path) as store:
        await store.add_key(key("aaaaaaaaaaaa"))
        await store.revoke_key("aaaaaaaaaaaa", 5000)
    async with backend(tmp_path) as store:
        again = await store.get_key("aaaaaaaaaaaa")
        assert again is not None and again.revoked_ms == 5000 and again.scopes == ("send", "read")
