"""The UserStore port's conformance checks (reactor/ports.py, UserStore).

What its callers rely on (actors/services/user_directory.py, actors/api/users.py): one
preferences document per user, replaced whole, updated atomically (opt-outs from
unsubscribe links race with the API); a device token belongs to one user at a time
(registering it for another moves it, and the move is reported so that both users'
cached profiles go); a user keeps at most max_per_user devices, the oldest registration
going first, and a known token registered again becomes the newest.
"""

from __future__ import annotations

from typing import Any

import trio

from reactor.ports import DeviceRow
from tests.conformance.backends import Harness


async def check_preferences_are_one_document_per_user(h: Harness[Any]) -> None:
    async with h.open() as store:
        assert await store.get_preferences("alice") is None
        await store.put_preferences("alice", b'{"timezone":"Europe/Paris"}', 1)
        await store.put_preferences("bob", b"{}", 1)
        await store.put_preferences("alice", b'{"locale":"fr"}', 2)  # replaced whole
        assert (await store.get_preferences("alice"), await store.get_preferences("bob")) == (b'{"locale":"fr"}', b"{}")


async def check_update_preferences_sees_the_current_document(h: Harness[Any]) -> None:
    seen: list[bytes | None] = []
    async with h.open() as store:

        def change(current: bytes | None) -> bytes:
            seen.append(current)
            return (current or b"") + b"+"

        assert await store.update_preferences("carol", change, 1) == b"+"
        assert await store.update_preferences("carol", change, 2) == b"++"
        assert seen == [None, b"+"]
        assert await store.get_preferences("carol") == b"++"


async def check_concurrent_updates_lose_nothing(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.put_preferences("dave", b"", 0)

        async def update(i: int) -> None:
            await store.update_preferences("dave", lambda current: (current or b"") + b"%d," % i, i)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(update, i)
        document = await store.get_preferences("dave")
        assert document is not None
        assert sorted(int(part) for part in document.decode().split(",") if part) == list(range(20)), document


async def check_a_token_belongs_to_one_user_and_a_move_is_reported(h: Harness[Any]) -> None:
    async with h.open() as store:
        assert await store.devices("alice") == []
        assert await store.add_device(DeviceRow("alice", "fcm", "shared", 1), 3) == []
        moved = await store.add_device(DeviceRow("bob", "apns", "shared", 2), 3)
        assert moved == [DeviceRow("alice", "fcm", "shared", 1)]
        assert await store.devices("alice") == []
        assert await store.devices("bob") == [DeviceRow("bob", "apns", "shared", 2)]


async def check_devices_are_bounded_oldest_first_and_a_refresh_is_the_newest(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.add_device(DeviceRow("bob", "fcm", "old", 1), 3)
        for i in range(3):
            evicted = await store.add_device(DeviceRow("bob", "apns", f"t{i}", 10 + i), 3)
            assert evicted == ([] if i < 2 else [DeviceRow("bob", "fcm", "old", 1)]), (i, evicted)
        assert [d.token for d in await store.devices("bob")] == ["t0", "t1", "t2"]
        assert await store.add_device(DeviceRow("bob", "apns", "t0", 99), 3) == []  # known: refreshed, nothing evicted
        assert await store.devices("bob") == [
            DeviceRow("bob", "apns", "t1", 11), DeviceRow("bob", "apns", "t2", 12), DeviceRow("bob", "apns", "t0", 99)]
        evicted = await store.add_device(DeviceRow("bob", "fcm", "t3", 100), 2)  # a lower bound: the oldest two go
        assert evicted == [DeviceRow("bob", "apns", "t1", 11), DeviceRow("bob", "apns", "t2", 12)]
        assert [d.token for d in await store.devices("bob")] == ["t0", "t3"]


async def check_remove_is_the_users_own_token_only(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.add_device(DeviceRow("bob", "apns", "t1", 1), 5)
        await store.add_device(DeviceRow("alice", "fcm", "t2", 2), 5)
        assert await store.remove_device("alice", "t1") is False  # not alice's
        assert [d.token for d in await store.devices("bob")] == ["t1"]
        assert await store.remove_device("bob", "t1") is True
        assert await store.remove_device("bob", "t1") is False
        assert await store.devices("bob") == [] and [d.token for d in await store.devices("alice")] == ["t2"]


async def check_users_survive_a_restart(h: Harness[Any]) -> None:
    async with h.open() as store:
        await store.put_preferences("alice", b'{"timezone":"Europe/Paris"}', 1)
        await store.add_device(DeviceRow("alice", "fcm", "t1", 10), 5)
        await store.add_device(DeviceRow("alice", "apns", "t2", 20), 5)
    async with h.open() as store:
        assert await store.get_preferences("alice") == b'{"timezone":"Europe/Paris"}'
        assert [d.token for d in await store.devices("alice")] == ["t1", "t2"]


async def check_users_read_many_as_each_alone(h: Harness[Any]) -> None:
    """users() (a fan-out's batch read) answers for each asked id what get_preferences and devices answer,
    across more ids than one query may bind, an unknown user included (no document, no devices)."""
    async with h.open() as store:
        ids = [f"u{i:04d}" for i in range(1200)]
        for i in range(0, 1200, 7):
            await store.put_preferences(ids[i], b'{"locale":"fr-%d"}' % i, 1)
        for i in range(3, 1200, 11):
            await store.add_device(DeviceRow(ids[i], "fcm", f"b{i}", 20), 5)
            await store.add_device(DeviceRow(ids[i], "apns", f"a{i}", 10 + i % 2 * 20), 5)  # oldest first, not by token
        asked = [*reversed(ids), "nobody", ids[5]]  # any order, an unknown id, an id twice
        rows = await store.users(asked)
        assert set(rows) == set(asked), sorted(set(asked) - set(rows))[:5]
        for user_id in [*ids[:40], *ids[-40:], ids[600], ids[601], ids[1198], "nobody"]:
            row = rows[user_id]
            assert (row.preferences, row.devices) == (await store.get_preferences(user_id), await store.devices(user_id)), user_id
        assert await store.users([]) == {}
