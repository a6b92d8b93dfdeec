"""User preferences and push devices: the API schemas and the cached profile. Pure data.

What the schema checks (types, patterns, lengths) is a 400 naming the field; what it
cannot (an IANA time zone that exists, a quiet-hours window of zero length, a contact
email that can go in an email header: protocol.header_safe) is checked by
actors.domain.preferences.check_preferences and is a 422 naming the field. (Not in the schema:
preferences stored before a rule existed must still load.)
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from .channels import Channel
from .locales import Locale, normalize_locale
from .parsing import DeviceToken
from .webhook_url import MAX_URL_LENGTH, WEBHOOK_URL_PATTERN

EMAIL_PATTERN = r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+(?!\n)$"  # protocol.content.Recipient uses these two as well
E164_PATTERN = r"^\+[1-9][0-9]{6,14}(?!\n)$"
CATEGORY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}(?!\n)$"
HHMM_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9](?!\n)$"
MARKED_CHANNEL_PATTERN = r"^(email|sms)(?!\n)$"  # the channels whose contact points a receipt can mark undeliverable
MAX_OPT_OUTS = 100
MAX_DEVICES = 20  # per user; registering one more evicts the oldest
MAX_UNDELIVERABLE = 20  # marked contact points per user; a receipt marking one more drops the oldest

from . import digests as _digests  # noqa: E402  (after the patterns: its schemas use them)

EmailAddress = Annotated[str, msgspec.Meta(max_length=254, pattern=EMAIL_PATTERN)]
E164 = Annotated[str, msgspec.Meta(pattern=E164_PATTERN)]
Category = Annotated[str, msgspec.Meta(pattern=CATEGORY_PATTERN)]
WebhookUrl = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL_LENGTH, pattern=WEBHOOK_URL_PATTERN)]
TimeZoneKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ClockTime = Annotated[str, msgspec.Meta(pattern=HHMM_PATTERN)]


class ContactPoints(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Where to reach the user when a notification's `to` does not say."""

    email: EmailAddress | None = None
    phone: E164 | None = None
    webhook: WebhookUrl | None = None  # http(s) URL the webhook channel POSTs to (protocol.webhook_url, docs/providers.md)


class Undeliverable(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A contact point a provider said will not take messages (a hard bounce, a spam report, an unsubscribe):
    sends to it on this channel are skipped until the mark is removed (PUT the preferences without it)."""

    channel: Annotated[str, msgspec.Meta(pattern=MARKED_CHANNEL_PATTERN)]
    address: Annotated[str, msgspec.Meta(min_length=1, max_length=254)]
    reason: Annotated[str, msgspec.Meta(max_length=300)] = ""
    at: Annotated[str, msgspec.Meta(max_length=40)] = ""  # when it was marked (ISO 8601)

    def matches(self, channel: Channel, address: str) -> bool:
        """Whether this mark covers `address` on `channel` (an email address in any case)."""
        if channel.value != self.channel:
            return False
        return address.lower() == self.address.lower() if channel is Channel.EMAIL else address == self.address


class QuietHours(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A daily window on the user's local clock, `start` inclusive, `end` exclusive; it may cross midnight."""

    start: ClockTime
    end: ClockTime


class ChannelSwitches(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-channel on/off: a channel turned off is not delivered (recorded as failed, with the reason)."""

    email: bool = True
    sms: bool = True
    push: bool = True
    web: bool = True
    webhook: bool = True

    def allows(self, channel: Channel) -> bool:
        """Whether the user lets this channel through."""
        return bool(getattr(self, channel.value))


class Preferences(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A user's preferences; PUT replaces them whole (absent fields take these defaults)."""

    contact: ContactPoints = ContactPoints()
    locale: Locale | None = None
    timezone: TimeZoneKey = "UTC"
    channels: ChannelSwitches = ChannelSwitches()
    opt_out: Annotated[list[Category], msgspec.Meta(max_length=MAX_OPT_OUTS)] = []
    quiet_hours: QuietHours | None = None
    digests: _digests.DigestOverrides = {}  # per digest key or category: the window this user wants (protocol/digests.py)
    # contact points a provider's receipt marked (docs/providers.md "Receipts"); a PUT without one clears it
    undeliverable: Annotated[list[Undeliverable], msgspec.Meta(max_length=MAX_UNDELIVERABLE)] = []

    def undeliverable_mark(self, channel: Channel, address: str | None) -> Undeliverable | None:
        """The mark covering `address` on `channel`, if there is one."""
        if address is None:
            return None
        return next((m for m in self.undeliverable if m.matches(channel, address)), None)

    def __post_init__(self) -> None:
        if self.locale is not None:  # fr_CA is stored as fr-CA (protocol.locales)
            msgspec.structs.force_setattr(self, "locale", normalize_locale(self.locale))


class Platform(str, enum.Enum):
    FCM = "fcm"
    APNS = "apns"


class DeviceRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    platform: Platform
    token: DeviceToken


class Device(msgspec.Struct, frozen=True):
    platform: Platform
    token: str
    registered_at: str


class DeviceList(msgspec.Struct, frozen=True):
    items: list[Device]


class Unsubscribed(msgspec.Struct, frozen=True):
    user_id: str
    category: str
    unsubscribed: bool = True


class Profile(msgspec.Struct, frozen=True):
    """What Ingress needs to know about a user: preferences and push device tokens (cached)."""

    preferences: Preferences = Preferences()
    devices: list[str] = []  # push tokens, oldest registration first
