"""ApiKeys: the key format, lookups cached in memory, invalidated by a revoke on this node."""

from __future__ import annotations

import trio

from actors.domain.api_keys import bearer, key_digest, new_api_key, parse_api_key
from actors.services.credentials import ApiKeys, create_key
from reactor.backends.embedded import MemoryState, SqliteKeyStore


def test_key_format_and_parsing():
    key_id, full = new_api_key()
    parsed = parse_api_key(full)
    assert parsed is not None and parsed[0] == key_id and len(parsed[1]) == 64
    assert new_api_key() != new_api_key()
    for bad in (full.upper(), full[:-1], full + "0", "hk__" + full[3:], full.replace("hk_", "xk_"), "test-key", ""):
        assert parse_api_key(bad) is None, bad
    assert key_digest(key_id, parsed[1]) != key_digest("000000000000", parsed[1])
    assert bearer("Bearer  abc ") == "abc"
    assert [bearer(h) for h in (None, "", "Bearer ", "bearer abc", "Basic abc")] == [None] * 5


class CountingStore(SqliteKeyStore):
    """The real SQLite store, with a gate that can hold a lookup open (to line up a race)."""

    def __init__(self, path):
        super().__init__(path)
        self.reads = 0
        self.hold: trio.Event | None = None
        self.held = trio.Event()

    async def get_key(self, key_id):
        self.reads += 1
        found = await super().get_key(key_id)
        if self.hold is not None:
            self.held.set()
            await self.hold.wait()
        return found


async def test_lookups_are_cached_and_a_revoke_here_is_immediate(tmp_path, autojump_clock):
    store = CountingStore(tmp_path / "keys.sqlite3")
    await store.open()
    try:
        keys = ApiKeys(store, MemoryState(), "", cache_ttl_s=60)
        _, full = await keys.create(["send"], "cached")
        for _ in range(50):
            assert await keys.authenticate(f"Bearer {full}") is not None
        assert store.reads == 1
        wrong = full[:-1] + ("0" if full[-1] != "0" else "1")
        assert await keys.authenticate(f"Bearer {wrong}") is None and store.reads == 1  # same id: the cached digest refuses it
        unknown = f"hk_ffffffffffff_{'0' * 64}"
        assert await keys.authenticate(f"Bearer {unknown}") is None
        assert await keys.authenticate(f"Bearer {unknown}") is None
        assert store.reads == 2  # a miss is cached too: a flood of made-up keys costs one read per id
        await keys.revoke(full.split("_")[1])
        assert await keys.authenticate(f"Bearer {full}") is None and store.reads == 2
        assert keys.bootstrap_key == "" and await keys.authenticate("Bearer ") is None
    finally:
        await store.close()


async def test_a_lookup_racing_a_revoke_does_not_cache_the_old_key(tmp_path, autojump_clock):
    store = CountingStore(tmp_path / "keys.sqlite3")
    await store.open()
    try:
        keys = ApiKeys(store, MemoryState(), "", cache_ttl_s=3600)
        key, full = await create_key(store, ["read"], "raced", 0)
        store.hold = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keys.authenticate, f"Bearer {full}")  # reads the key, then is held
            await store.held.wait()  # the lookup has read the key, not yet cached it
            await keys.revoke(key.key_id)
            store.hold.set()  # the stale read completes after the revoke
        store.hold = None
        assert await keys.authenticate(f"Bearer {full}") is None
    finally:
        await store.close()


async def test_an_entry_expires_so_a_change_made_elsewhere_is_seen(tmp_path, autojump_clock):
    store = CountingStore(tmp_path / "keys.sqlite3")
    other_process = SqliteKeyStore(tmp_path / "keys.sqlite3")
    await store.open()
    await other_process.open()
    try:
        keys = ApiKeys(store, MemoryState(), "", cache_ttl_s=2)
        key, full = await keys.create(["send"], "elsewhere")
        assert await keys.authenticate(f"Bearer {full}") is not None
        await other_process.revoke_key(key.key_id, 1)
        assert await keys.authenticate(f"Bearer {full}") is not None  # still cached
        await trio.sleep(2)
        assert await keys.authenticate(f"Bearer {full}") is None
    finally:
        await other_process.close()
        await store.close()
