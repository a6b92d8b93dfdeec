"""The KeyStore port's conformance checks (reactor/ports.py, KeyStore), folded in from tests/auth/test_keystore_conformance.py.

What its callers rely on (actors/services/credentials.py): add_key refuses a taken id
(create_key draws another), every field comes back as stored (scopes in their order, the
rate limit, the bootstrap flag), a revoke keeps its first time and a listing keeps revoked
keys, oldest first; touch_key never moves last_used back.
"""

from __future__ import annotations

from typing import Any

import trio

from reactor.ports import StoredKey
from tests.conformance.backends import Harness


def key(key_id: str, created_ms: int = 1000, **extra: Any) -> StoredKey:
    return StoredKey(key_id, bytes(32) + key_id.encode(), ("send", "read"), f"key {key_id}", created_ms, **extra)


async def check_add_get_and_a_taken_id(h: Harness[Any]) -> None:
    async with h.open() as store:
        assert await store.get_key("aaaaaaaaaaaa") is None
        assert await store.add_key(key("aaaaaaaaaaaa")) is True
        assert await store.get_key("aaaaaaaaaaaa") == key("aaaaaaaaaaaa")
        assert await store.add_key(StoredKey("aaaaaaaaaaaa", b"other", ("admin",), "x", 5)) is False
        assert await store.get_key("aaaaaaaaaaaa") == key("aaaaaaaaaaaa")


async def check_every_field_comes_back_as_stored(h: Harness[Any]) -> None:
    full = StoredKey("bbbbbbbbbbbb", bytes(range(32)), ("admin", "send", "read"), "ünïcode name", 1234, None, None, 2.5, 10.0, True)
    plain = StoredKey("cccccccccccc", b"\x00" * 32, ("read",), "", 99)
    async with h.open() as store:
        assert await store.add_key(full) and await store.add_key(plain)
        assert (await store.get_key(full.key_id), await store.get_key(plain.key_id)) == (full, plain)


async def check_concurrent_adds_of_one_id_have_one_winner(h: Harness[Any]) -> None:
    won: list[int] = []
    async with h.open() as store:

        async def add(i: int) -> None:
            if await store.add_key(StoredKey("dddddddddddd", b"%d" % i, ("send",), f"n{i}", 1000)):
                won.append(i)

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(add, i)
        assert len(won) == 1, f"{len(won)} adds of one key id succeeded"
        stored = await store.get_key("dddddddddddd")
        assert stored is not None and stored.name == f"n{won[0]}"


async def check_list_is_oldest_first_and_keeps_revoked_keys(h: Harness[Any]) -> None:
    async with h.open() as store:
        for key_id, at in (("aaaaaaaaaaaa", 3000), ("bbbbbbbbbbbb", 1000), ("cccccccccccc", 2000)):
            await store.add_key(key(key_id, at))
        await store.revoke_key("cccccccccccc", 4000)
        listed = await store.list_keys()
        assert [k.key_id for k in listed] == ["bbbbbbbbbbbb", "cccccccccccc", "aaaaaaaaaaaa"]  # by creation, not by id
        assert [k.revoked_ms for k in listed] == [None, 4000, None]


async def check_revoke_keeps_the_first_time_and_unknown_is_none(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.add_key(key("aaaaaaaaaaaa"))
        first = await store.revoke_key("aaaaaaaaaaaa", 5000)
        assert first is not None and first.revoked_ms == 5000 and first.digest == key("aaaaaaaaaaaa").digest
        again = await store.revoke_key("aaaaaaaaaaaa", 9000)
        assert again is not None and again.revoked_ms == 5000
        assert await store.revoke_key("ffffffffffff", 5000) is None
        assert await store.get_key("ffffffffffff") is None


async def check_touch_only_moves_last_used_forward(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.add_key(key("aaaaaaaaaaaa"))
        await store.touch_key("aaaaaaaaaaaa", 7000)
        await store.touch_key("aaaaaaaaaaaa", 6000)
        touched = await store.get_key("aaaaaaaaaaaa")
        assert touched is not None and touched.last_used_ms == 7000
        await store.touch_key("ffffffffffff", 7000)  # unknown: nothing happens
        assert await store.get_key("ffffffffffff") is None


async def check_keys_survive_a_restart(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.add_key(key("aaaaaaaaaaaa"))
        await store.revoke_key("aaaaaaaaaaaa", 5000)
    async with h.open() as store:
        again = await store.get_key("aaaaaaaaaaaa")
        assert again is not None and again.revoked_ms == 5000 and again.scopes == ("send", "read")
