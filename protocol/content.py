"""Per-channel content of a notification, as the API takes it and the bus carries it."""

from __future__ import annotations

from typing import Annotated

import msgspec

from .header_safe import address_problem, header_text_problem
from .parsing import DeviceToken
from .preferences import E164, EmailAddress, WebhookUrl
from .problems import FieldError
from .webhook_url import url_problem

Short = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Text = Annotated[str, msgspec.Meta(max_length=100_000)]


class EmailContent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=998)]
    text: Text | None = None
    html: Text | None = None


class SmsContent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=1600)]


class PushContent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    title: Short
    body: Annotated[str, msgspec.Meta(max_length=4000)] = ""
    data: dict[str, str] = {}


class WebContent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    title: Short
    body: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    url: Annotated[str, msgspec.Meta(max_length=2048)] | None = None


class WebhookContent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """What the webhook channel POSTs (in its JSON body, actors/clients/webhook.py), or a Slack message's text."""

    title: Short
    body: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    data: dict[str, str] = {}


class Content(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    email: EmailContent | None = None
    sms: SmsContent | None = None
    push: PushContent | None = None
    web: WebContent | None = None
    webhook: WebhookContent | None = None

    def for_channel(self, channel: str) -> ChannelContent | None:
        """The part for that channel (a Channel's value), None if it has none."""
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

    def only(self, channel: str) -> Content:
        """This content with that channel's part alone: what a delivery on that channel carries."""
        return Content(
            email=self.email if channel == "email" else None,
            sms=self.sms if channel == "sms" else None,
            push=self.push if channel == "push" else None,
            web=self.web if channel == "web" else None,
            webhook=self.webhook if channel == "webhook" else None,
        )


ChannelContent = EmailContent | SmsContent | PushContent | WebContent | WebhookContent  # one channel's part of a Content


class Recipient(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """Where to reach the user on each channel (the web channel needs nothing)."""

    email: EmailAddress | None = None
    phone: E164 | None = None
    device_token: DeviceToken | None = None  # as registered devices' tokens: no `/`, space or control characters
    webhook: WebhookUrl | None = None  # checked by protocol.webhook_url.url_problem (a 422 naming to.webhook)


def header_errors(content: Content | None, to: Recipient | None) -> list[FieldError]:
    """The header-bound fields (email subject, recipient address) that cannot go in an email header, each named.

    Checked as a rule, not in the schema: a record already on the bus decodes as before,
    and the email client refuses it there (dead-lettered) instead of losing it.
    """
    errors: list[FieldError] = []
    if content is not None and content.email is not None:
        problem = header_text_problem(content.email.subject)
        if problem is not None:
            errors.append(FieldError("content.email.subject", problem))
    if to is not None and to.email is not None:
        problem = address_problem(to.email)
        if problem is not None:
            errors.append(FieldError("to.email", problem))
    if to is not None and to.webhook is not None:
        problem = url_problem(to.webhook)
        if problem is not None:
            errors.append(FieldError("to.webhook", problem))
    return errors
