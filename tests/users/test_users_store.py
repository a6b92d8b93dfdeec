"""The cache-aside UserDirectory over the SQLite UserStore.

The UserStore port itself (documents, atomic updates, devices moved, bounded, removed)
is checked on every backend by its conformance suite, tests/conformance/suites/users.py.
"""

from __future__ import annotations

import trio

from actors.domain.tokens import SigningKeys
from actors.services.user_directory import UserDirectory
from protocol.preferences import MAX_DEVICES, ContactPoints, Platform, Preferences
from reactor.backends.embedded import MemoryState, SqliteUserStore


async def open_store(tmp_path) -> SqliteUserStore:
    store = SqliteUserStore(tmp_path / "users.sqlite3")
    await store.open()
    return store


async def test_the_directory_caches_profiles_and_every_write_invalidates(tmp_path, autojump_clock) -> None:
    store = await open_store(tmp_path)
    users = UserDirectory(store, MemoryState(), SigningKeys.generate(), lambda: "http://herald.test", cache_ttl_s=60)
    assert (await users.profile("alice")).devices == []
    assert (await users.profile("alice")).devices == [] and (users.cache_misses, users.cache_hits) == (1, 1)

    await users.add_device("alice", Platform.FCM, "t1", 1)
    assert (await users.profile("alice")).devices == ["t1"]
    await users.put_preferences("alice", Preferences(contact=ContactPoints(email="a@example.org")), 2)
    assert (await users.profile("alice")).preferences.contact.email == "a@example.org"
    await users.opt_out("alice", "marketing", 3)
    profile = await users.profile("alice")
    assert profile.preferences.opt_out == ["marketing"] and profile.preferences.contact.email == "a@example.org"
    await users.forget_devices("alice", ["t1"])
    assert (await users.profile("alice")).devices == []
    await users.add_device("bob", Platform.FCM, "t2", 4)
    assert (await users.profile("bob")).devices == ["t2"]
    await users.add_device("carol", Platform.FCM, "t2", 5)  # moved: bob's cached profile goes too
    assert (await users.profile("bob")).devices == []
    assert (await users.profile("carol")).devices == ["t2"]

    # A write behind the directory's back shows once the TTL has passed.
    await store.put_preferences("carol", b'{"locale":"fr-CA"}', 6)
    assert (await users.profile("carol")).preferences.locale is None
    await trio.sleep(61)
    assert (await users.profile("carol")).preferences.locale == "fr-CA"
    await store.close()


async def test_devices_per_user_are_bounded(tmp_path) -> None:
    store = await open_store(tmp_path)
    users = UserDirectory(store, MemoryState(), SigningKeys.generate(), lambda: "http://herald.test")
    for i in range(MAX_DEVICES + 2):
        await users.add_device("alice", Platform.APNS, f"t{i:02d}", i)
    assert [d.token for d in await users.devices("alice")] == [f"t{i:02d}" for i in range(2, MAX_DEVICES + 2)]
    await store.close()


async def test_time_zones_load_off_the_loop_and_unsubscribe_links_are_signed(tmp_path) -> None:
    store = await open_store(tmp_path)
    users = UserDirectory(store, MemoryState(), SigningKeys.generate(), lambda: "http://herald.test/")
    assert str(await users.zone("Europe/Paris")) == "Europe/Paris"
    assert str(await users.zone("No/Such_Zone")) == "UTC"
    assert "Europe/Paris" in await users.known_zones()
    url = users.unsubscribe_url("alice", "marketing")
    assert url.startswith("http://herald.test/v1/unsubscribe?token=")
    await store.close()


async def test_profiles_of_equal_cached_bytes_are_decoded_once_and_follow_every_change(tmp_path, monkeypatch) -> None:
    """The directory keeps decoded profiles by their cached bytes: users with the same stored profile (the defaults, most
    of them) share one decode, and a change makes other bytes, so it is never answered from the memo; bounded."""
    import actors.services.user_directory as directory

    monkeypatch.setattr(directory, "PROFILES_DECODED", 3)
    store = await open_store(tmp_path)
    users = UserDirectory(store, MemoryState(), SigningKeys.generate(), lambda: "http://herald.test")
    loaded = [await users.profile(f"u{i}") for i in range(3)]  # from the store (and cached)
    again = [await users.profile(f"u{i}") for i in range(3)]  # from the cache
    assert again == loaded and all(p is again[0] for p in again)  # one decode for the defaults' bytes
    many = await users.profiles(["u0", "u1", "u2"])
    assert all(p is again[0] for p in many.values())
    await users.put_preferences("u1", Preferences(contact=ContactPoints(email="a@example.org")), 1)
    assert (await users.profile("u1")).preferences.contact.email == "a@example.org"
    assert (await users.profile("u0")).preferences.contact.email is None
    for i in range(5):  # more distinct profiles than the memo holds: still each its own
        await users.put_preferences(f"v{i}", Preferences(locale=f"fr-C{chr(65 + i)}"), 2)
        assert (await users.profile(f"v{i}")).preferences.locale == f"fr-C{chr(65 + i)}"
    assert len(users._decoded) <= 3
    await store.close()
