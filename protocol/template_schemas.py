"""Template schemas: what POST/PUT /v1/templates/{id} take, what GET and render return. Pure data.

A template holds Mustache sources per locale and channel part (email subject/text/html,
sms text, push and webhook title/body/data, web title/body/url/data). `locales` is the base content;
`variants` (optional) split users by weight for A/B tests, each variant overriding any
part of any locale. Saved templates are immutable versions; one is active.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from .channels import Channel
from .content import Content
from .digests import DigestSpec
from .ids import USER_ID_RE
from .locales import LOCALE_PATTERN, Locale, normalize_locale
from .parsing import NAME_PATTERN, TEXT_PATTERN

TEMPLATE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(?!\n)$")
LOCALE_RE = re.compile(LOCALE_PATTERN)  # one locale rule everywhere: protocol.locales
VARIANT_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}(?!\n)$")

TemplateIdField = Annotated[str, msgspec.Meta(pattern=TEMPLATE_ID_RE.pattern)]
LocaleField = Locale
VariantField = Annotated[str, msgspec.Meta(pattern=VARIANT_RE.pattern)]

_Line = Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
_Source = Annotated[str, msgspec.Meta(max_length=200_000)]


class EmailPart(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A locale's email part may hold only some fields (a subject of its own, say): the others come from the
    locales it falls back to, field by field, down to the default locale (actors/domain/template_choice.py resolve_part)."""

    subject: _Line | None = None
    text: _Source | None = None
    html: _Source | None = None  # the only part whose {{variables}} are HTML-escaped


class SmsPart(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=10_000)]


# A part's `data`: key -> Mustache source, each rendered to a string.
_DataSources = Annotated[dict[Annotated[str, msgspec.Meta(min_length=1, max_length=64)], _Source], msgspec.Meta(max_length=64)]


class PushPart(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    title: _Line
    body: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    data: _DataSources = {}


class WebhookPart(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """What the webhook channel POSTs: rendered like a push part (title, body, data)."""

    title: _Line
    body: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    data: _DataSources = {}


class WebPart(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The in-app item. Its `data` is all of the send's data that reaches the browser: each key declared here,
    rendered like push data; the rest of the send's `data` is the template's input only."""

    title: _Line
    body: Annotated[str, msgspec.Meta(max_length=20_000)] = ""
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)] | None = None
    data: _DataSources = {}


class Parts(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The Mustache sources of one locale, per channel."""

    email: EmailPart | None = None
    sms: SmsPart | None = None
    push: PushPart | None = None
    web: WebPart | None = None
    webhook: WebhookPart | None = None

    def for_channel(self, channel: str) -> ChannelPart | None:
        """The sources for that channel (a Channel's value), None if it has none."""
        if channel == "email":
            return self.email
        if channel == "sms":
            return self.sms
        if channel == "push":
            return self.push
        if channel == "web":
            return self.web
        if channel == "webhook":
            return self.webhook
        raise ValueError(f"no channel {channel!r}")


ChannelPart = EmailPart | SmsPart | PushPart | WebPart | WebhookPart  # one channel's sources in a Parts


Locales = Annotated[dict[LocaleField, Parts], msgspec.Meta(max_length=200)]


class Variant(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One arm of an A/B split: its weight, and the parts it overrides (none: the base content)."""

    weight: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
    locales: Locales = {}


class TemplateSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of POST and PUT /v1/templates/{id}: one immutable version."""

    locales: Annotated[dict[LocaleField, Parts], msgspec.Meta(min_length=1, max_length=200)]
    default_locale: LocaleField = "en"
    name: Annotated[str, msgspec.Meta(max_length=255, pattern=NAME_PATTERN)] = ""  # one line, no control characters
    description: Annotated[str, msgspec.Meta(max_length=2000, pattern=TEXT_PATTERN)] = ""  # tabs and line feeds allowed
    variants: Annotated[dict[VariantField, Variant], msgspec.Meta(max_length=26)] = {}
    digest: Annotated[DigestSpec, msgspec.Meta(description=(
        "Every send of this template (without its own `digest` or `send_at`) is collected into this digest "
        "(POST /v1/notifications, `digest`): its sources get `events`, `count`, `first` and `last`."
    ))] | None = None


class Variables(msgspec.Struct, frozen=True):
    """The data a template reads: `required` outside any section, `optional` only inside one."""

    required: list[str]
    optional: list[str]


class TemplateView(msgspec.Struct, frozen=True):
    id: str
    version: int
    active_version: int
    created_at: str  # when this version was saved
    template: TemplateSpec
    variables: Variables


class VersionInfo(msgspec.Struct, frozen=True):
    version: int
    created_at: str
    active: bool


class VersionList(msgspec.Struct, frozen=True):
    id: str
    active_version: int
    versions: list[VersionInfo]  # newest first


class RenderRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """POST /v1/templates/{id}/render: a preview. `user_id` picks the variant as for a send;
    `variant` forces one; neither renders the base content."""

    data: dict[str, Any] = {}
    locale: LocaleField | None = None
    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=USER_ID_RE.pattern)] | None = None
    variant: VariantField | None = None
    version: Annotated[int, msgspec.Meta(ge=1, le=2**31)] | None = None  # as the routes' {version}
    channels: Annotated[list[Channel], msgspec.Meta(min_length=1, max_length=4)] | None = None

    def __post_init__(self) -> None:
        if self.locale is not None:  # fr_CA is fr-CA (protocol.locales)
            msgspec.structs.force_setattr(self, "locale", normalize_locale(self.locale))


class SmsInfo(msgspec.Struct, frozen=True):
    encoding: str  # "GSM-7" or "UCS-2"
    characters: int
    units: int  # septets (GSM-7, extension characters count 2) or UTF-16 code units (UCS-2)
    segments: int
    per_segment: int  # 160/153 (GSM-7) or 70/67 (UCS-2): single or concatenated
    max_segments: int


class RenderResult(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    version: int
    template: str  # "id@version" or "id@version#variant", as the delivery log records it
    content: Content
    locales: dict[str, str]  # channel -> the locale whose part was used
    variant: str = ""
    sms: SmsInfo | None = None
    push_bytes: int | None = None  # size of the push payload's JSON (limit 4096)
    web_data: dict[str, str] = {}  # the web item's `data`: the web part's declared keys, rendered (nothing else of `data`)
