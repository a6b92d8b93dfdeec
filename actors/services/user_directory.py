"""The user directory: preferences and devices, cache-aside over the UserStore.

Ingress reads a user's Profile (preferences and push tokens) on every submission, so it
is cached in a State (`users:profile:<id>`, `cache_ttl_s`, 60 s by default): on the
node an in-memory, bounded State of its own (reactor.backends.local_state).
Every write through this directory (a PUT of preferences, an unsubscribe, a device
registered, deleted or found unregistered by a push provider, a webhook URL whose endpoint answered
410 Gone) writes the UserStore
first and then deletes the cached copy, so the next read loads it again. The usual
cache-aside race (a read that loaded the old profile just before a write stores it
just after the write invalidated) leaves a stale copy for at most `cache_ttl_s`.

Time zones are loaded off the Trio loop (zoneinfo reads files) and kept: there are
only a few hundred of them.
"""

from __future__ import annotations

import logging
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import quote

import msgspec
import trio

from protocol.channels import Channel
from protocol.preferences import MAX_DEVICES, MAX_UNDELIVERABLE, Platform, Preferences, Profile, Undeliverable
from reactor.clock import iso
from reactor.ports import DeviceRow, State, UserStore

from ..domain.preferences import issue_unsubscribe_token, with_opt_out, without_webhook
from ..domain.tokens import SigningKeys

log = logging.getLogger("herald.users")

_profile_decoder = msgspec.json.Decoder(Profile)
PROFILES_DECODED = 4096  # decoded profiles kept by their bytes (UserDirectory._decode)
_preferences_decoder = msgspec.json.Decoder(Preferences)
_encoder = msgspec.json.Encoder()
_UTC = zoneinfo.ZoneInfo("UTC")


class WebhookEndpoints:
    """The webhook Provider's `devices`: an endpoint that answered 410 Gone leaves the user's contact points,
    as an unregistered push token leaves their devices."""

    def __init__(self, directory: UserDirectory, clock: Callable[[], int]) -> None:
        self.directory = directory
        self.clock = clock

    async def forget_devices(self, user_id: str, tokens: Iterable[str]) -> int:
        return await self.directory.forget_webhooks(user_id, tokens, self.clock())


def _cache_key(user_id: str) -> str:
    return f"users:profile:{user_id}"


class UserDirectory:
    """Preferences and devices of users, as Ingress, the API and the push provider need them."""

    def __init__(
        self, store: UserStore, cache: State, signing: SigningKeys, public_url: Callable[[], str], cache_ttl_s: float = 60.0
    ) -> None:
        self.store = store
        self.cache = cache
        self.signing = signing  # the node's token-signing key ring (unsubscribe links)
        self.public_url = public_url
        self.cache_ttl_s = cache_ttl_s
        self._zones: dict[str, zoneinfo.ZoneInfo] = {"UTC": _UTC}
        self._known_zones: frozenset[str] | None = None
        self.cache_hits = 0
        self.cache_misses = 0
        # profiles decoded, by their cached bytes (equal bytes, equal profile: never stale): most users share the
        # defaults' bytes, and a batch names the same users again and again. Emptied when full.
        self._decoded: dict[bytes, Profile] = {}

    # -- reads

    async def profile(self, user_id: str) -> Profile:
        """The user's preferences and push tokens, from the cache if it has them."""
        key = _cache_key(user_id)
        cached = await self.cache.get(key)
        if cached is not None:
            try:
                profile: Profile = self._decode(cached)
            except (msgspec.DecodeError, msgspec.ValidationError):
                await self.cache.delete(key)  # written by another version: load it again
            else:
                self.cache_hits += 1
                return profile
        self.cache_misses += 1
        profile = Profile(await self.preferences(user_id), [d.token for d in await self.store.devices(user_id)])
        await self.cache.set(key, _encoder.encode(profile), self.cache_ttl_s)
        return profile

    async def profiles(self, user_ids: Sequence[str]) -> dict[str, Profile]:
        """Many users' profiles (a topic fan-out's batch): the cached ones, the others in ONE store read (UserStore.users).

        The same profiles `profile` would answer one by one; each loaded one is cached as `profile` caches it.
        """
        out: dict[str, Profile] = {}
        missing: list[str] = []
        for user_id in dict.fromkeys(user_ids):
            cached = await self.cache.get(_cache_key(user_id))
            if cached is not None:
                try:
                    out[user_id] = self._decode(cached)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    pass  # written by another version: loaded again below, and the set replaces it
                else:
                    self.cache_hits += 1
                    continue
            missing.append(user_id)
        if missing:
            self.cache_misses += len(missing)
            rows = await self.store.users(missing)
            for user_id in missing:
                row = rows[user_id]
                prefs = Preferences() if row.preferences is None else _preferences_decoder.decode(row.preferences)
                profile = out[user_id] = Profile(prefs, [d.token for d in row.devices])
                await self.cache.set(_cache_key(user_id), _encoder.encode(profile), self.cache_ttl_s)
        return out

    def _decode(self, cached: bytes) -> Profile:
        """A cached profile's bytes decoded, once for equal bytes (a Profile is frozen and no reader changes what it holds)."""
        profile = self._decoded.get(cached)
        if profile is None:
            profile = _profile_decoder.decode(cached)
            if len(self._decoded) >= PROFILES_DECODED:
                self._decoded.clear()
            self._decoded[cached] = profile
        return profile

    async def preferences(self, user_id: str) -> Preferences:
        """The user's stored preferences (the defaults if never set), from the store."""
        document = await self.store.get_preferences(user_id)
        return Preferences() if document is None else _preferences_decoder.decode(document)

    async def devices(self, user_id: str) -> list[DeviceRow]:
        """The user's push devices, oldest first, from the store."""
        return await self.store.devices(user_id)

    # -- writes (each invalidates the cached profiles it changes)

    async def invalidate(self, user_ids: Iterable[str]) -> None:
        """Drop the cached profile of these users."""
        for user_id in set(user_ids):
            await self.cache.delete(_cache_key(user_id))

    async def put_preferences(self, user_id: str, prefs: Preferences, at_ms: int) -> None:
        """Replace the user's preferences."""
        await self.store.put_preferences(user_id, _encoder.encode(prefs), at_ms)
        await self.invalidate([user_id])

    async def opt_out(self, user_id: str, category: str, at_ms: int) -> Preferences:
        """Opt the user out of a category (idempotent); ValueError if they have too many opt-outs already."""

        def change(document: bytes | None) -> bytes:
            current = Preferences() if document is None else _preferences_decoder.decode(document)
            return _encoder.encode(with_opt_out(current, category))

        document = await self.store.update_preferences(user_id, change, at_ms)
        await self.invalidate([user_id])
        result: Preferences = _preferences_decoder.decode(document)
        return result

    async def mark_undeliverable(self, user_id: str, channel: Channel, address: str, reason: str, at_ms: int) -> bool:
        """Mark a contact point undeliverable (a provider's receipt said so); False if it already was (nothing written).
        At most MAX_UNDELIVERABLE marks are kept: the oldest goes."""
        if (await self.preferences(user_id)).undeliverable_mark(channel, address) is not None:
            return False

        def change(document: bytes | None) -> bytes:
            current = Preferences() if document is None else _preferences_decoder.decode(document)
            if current.undeliverable_mark(channel, address) is not None:
                return document or _encoder.encode(current)
            mark = Undeliverable(channel.value, address[:254], reason[:300], iso(at_ms))
            marks = [*current.undeliverable, mark][-MAX_UNDELIVERABLE:]
            return _encoder.encode(msgspec.structs.replace(current, undeliverable=marks))

        await self.store.update_preferences(user_id, change, at_ms)
        await self.invalidate([user_id])
        return True

    async def add_device(self, user_id: str, platform: Platform, token: str, at_ms: int) -> DeviceRow:
        """Register a push token for the user (moving it from another user if needed)."""
        device = DeviceRow(user_id, platform.value, token, at_ms)
        displaced = await self.store.add_device(device, MAX_DEVICES)
        for old in displaced:
            log.info("device %s… of %s displaced by a registration for %s", old.token[:12], old.user_id, user_id)
        await self.invalidate([user_id, *(d.user_id for d in displaced)])
        return device

    async def remove_device(self, user_id: str, token: str) -> bool:
        """Forget one of the user's tokens; False if they had no such token."""
        removed = await self.store.remove_device(user_id, token)
        await self.invalidate([user_id])
        return removed

    async def forget_devices(self, user_id: str, tokens: Iterable[str]) -> int:
        """Remove tokens a push provider called unregistered; returns how many were registered."""
        removed = 0
        for token in tokens:
            removed += await self.store.remove_device(user_id, token)
        if removed:
            log.info("removed %d unregistered device(s) of %s", removed, user_id)
        await self.invalidate([user_id])
        return removed

    async def forget_webhooks(self, user_id: str, urls: Iterable[str], at_ms: int) -> int:
        """Remove the user's contact webhook URL if it is one of `urls` (it answered 410 Gone); 1 if it was removed.

        A URL the send gave in `to` is in no preferences: nothing changes then."""
        gone = set(urls)
        if (await self.preferences(user_id)).contact.webhook not in gone:
            return 0
        removed = 0

        def change(document: bytes | None) -> bytes:
            nonlocal removed
            current = Preferences() if document is None else _preferences_decoder.decode(document)
            changed = without_webhook(current, gone)
            removed = int(changed is not current)
            return _encoder.encode(changed)

        await self.store.update_preferences(user_id, change, at_ms)
        await self.invalidate([user_id])
        if removed:
            log.info("removed the webhook URL of %s: the endpoint answered 410 Gone", user_id)
        return removed

    # -- time zones and links

    async def zone(self, key: str) -> zoneinfo.ZoneInfo:
        """The loaded time zone `key` (UTC if it cannot be loaded any more)."""
        zone = self._zones.get(key)
        if zone is None:
            try:
                zone = await trio.to_thread.run_sync(zoneinfo.ZoneInfo, key)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
                log.warning("time zone %r cannot be loaded; using UTC", key)
                return _UTC
            self._zones[key] = zone
        return zone

    async def known_zones(self) -> frozenset[str]:
        """Every IANA time zone key this machine knows."""
        if self._known_zones is None:
            self._known_zones = frozenset(await trio.to_thread.run_sync(zoneinfo.available_timezones))
        return self._known_zones

    def unsubscribe_url(self, user_id: str, category: str) -> str:
        """The signed one-click unsubscribe link for the user and category."""
        token = issue_unsubscribe_token(self.signing, user_id, category)
        return f"{self.public_url().rstrip('/')}/v1/unsubscribe?token={quote(token, safe='')}"
