"""Delivery receipts: a provider's signed report of what became of a message, recorded as the delivery's status.

`POST /v1/webhooks/sendgrid` and `/v1/webhooks/twilio` (actors/api/webhooks.py) hand the
request here. A receipt is refused unless the provider signed it (actors/domain/receipts.py:
SendGrid's ECDSA key, a Twilio auth token over the configured public URL), a SendGrid one
whose timestamp is more than `window_s` from now, and one whose signature was seen before
(the replay memory: `receipts:sig:<provider>:<digest>` in the State, so every node shares
it, each key with a TTL: bounded). Each event then names its notification (the custom arg
or callback parameter Herald sent), is checked against the message id recorded at send time
(the `sent` step's detail), and becomes a StatusEvent sent THROUGH the Recorder, durable
before the answer. The same event twice (SendGrid retries a batch, with a new signature)
is skipped by its event id (`receipts:event:...`), and would add nothing anyway: its
detail is the same, and the timeline keeps one row of a detail. A hard bounce, a spam
report or an unsubscribe marks the address undeliverable in the user's preferences.
Anything that fails before the events are durable forgets the memory it wrote, so the
provider's retry is taken.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from protocol.channels import Priority
from protocol.lifecycle import Status
from protocol.messages import StatusEvent
from reactor.ask import ask
from reactor.clock import wall_ms
from reactor.mailbox import Mailbox
from reactor.ports import LogStore, State, StatusRow

from ..clients.provider_config import Secret
from ..domain.receipts import (
    SENDGRID_SIGNATURE,
    TWILIO_SIGNATURE,
    Receipt,
    ReceiptCounts,
    Refused,
    parse_sendgrid,
    parse_twilio,
    signature_digest,
    verify_sendgrid,
    verify_twilio,
)
from ..messages import RecordEvents, RecorderMessage
from .user_directory import UserDirectory

log = logging.getLogger("herald.receipts")

WINDOW_S = 300.0  # a SendGrid receipt signed further from now than this is stale
EVENT_TTL_S = 3 * 86_400.0  # how long an event id is remembered: SendGrid retries a batch for up to 72 hours
TWILIO_REPLAY_TTL_S = 3 * 86_400.0  # a Twilio signature has no timestamp: remembered this long
WEBHOOK_PATH = "/v1/webhooks/"
SIGNATURE_HEADERS = {"sendgrid": SENDGRID_SIGNATURE, "twilio": TWILIO_SIGNATURE}
_RECORDED = {  # the message id in a `sent` step's detail (the clients' Sent details)
    "sendgrid": re.compile(r"X-Message-Id (\S+)"),
    "twilio": re.compile(r"twilio: 20[01] (\S+)"),
}


class Unconfigured(Exception):
    """No provider of this kind is configured to take receipts (a 404)."""


@dataclass
class ReceiptSettings:
    sendgrid_keys: list[object] = field(default_factory=list)  # the verification keys (EC public keys)
    twilio_tokens: dict[str, list[Secret]] = field(default_factory=dict)  # account SID -> its providers' auth tokens
    public_url: Callable[[], str] = lambda: ""  # the base URL Twilio was given (its signature covers it)
    window_s: float = WINDOW_S


def _recorded_ids(provider: str, detail: str) -> list[str]:
    return _RECORDED[provider].findall(detail)


def _matches(receipt: Receipt, detail: str) -> bool:
    """Whether a `sent` step's detail records the message the receipt is about."""
    if not receipt.message_id:
        return False
    for recorded in _recorded_ids(receipt.provider, detail):
        if receipt.provider == "sendgrid" and receipt.message_id.startswith(recorded) and recorded != "-":
            return True  # sg_message_id is the X-Message-Id then .filter...
        if recorded == receipt.message_id:
            return True
    return False


class Receipts:
    def __init__(self, settings: ReceiptSettings, state: State, logstore: LogStore, recorder: Mailbox[RecorderMessage],
                 users: UserDirectory | None) -> None:
        self.settings = settings
        self.state = state
        self.logstore = logstore
        self.recorder = recorder
        self.users = users

    def check_configured(self, provider: str) -> None:
        """Unconfigured (a 404) unless a provider of this kind is configured to take receipts: checked first."""
        if provider == "sendgrid" and not self.settings.sendgrid_keys:
            raise Unconfigured("no sendgrid provider has a webhook_key (SendGrid's Event Webhook verification key)")
        if provider == "twilio" and not self.settings.twilio_tokens:
            raise Unconfigured("no twilio provider is configured")

    async def sendgrid(self, signature: str | None, timestamp: str | None, body: bytes) -> ReceiptCounts:
        """A SendGrid Event Webhook POST; Refused, Malformed (domain.receipts) or Unconfigured if it is not taken."""
        self.check_configured("sendgrid")
        verify_sendgrid(self.settings.sendgrid_keys, signature, timestamp, body, wall_ms() / 1000, self.settings.window_s)
        receipts = parse_sendgrid(body)
        assert signature is not None
        return await self._take("sendgrid", signature, 2 * self.settings.window_s, receipts)

    async def twilio(self, signature: str | None, query_string: str, params: list[tuple[str, str]],
                     notification_id: str | None) -> ReceiptCounts:
        """A Twilio status callback; Refused, Malformed or Unconfigured if it is not taken."""
        self.check_configured("twilio")
        base = self.settings.public_url().rstrip("/")
        url = f"{base}{WEBHOOK_PATH}twilio" + (f"?{query_string}" if query_string else "")
        account = dict(params).get("AccountSid", "")
        tokens = self.settings.twilio_tokens.get(account)
        if tokens is None:
            raise Refused(403, "badly signed: AccountSid is not a configured Twilio account", TWILIO_SIGNATURE)
        verify_twilio([t.reveal() for t in tokens], signature, url, params)
        receipt = parse_twilio(params, notification_id, wall_ms())
        assert signature is not None
        return await self._take("twilio", signature, TWILIO_REPLAY_TTL_S, [receipt])

    async def _take(self, provider: str, signature: str, ttl_s: float, receipts: Sequence[Receipt]) -> ReceiptCounts:
        """Remember the signature (refused if seen), then record the events; the memory written is forgotten on failure."""
        claims: list[str] = []
        key = f"receipts:sig:{provider}:{signature_digest(signature)}"
        if await self.state.put_if_absent(key, b"1", ttl_s) is not None:
            raise Refused(403, "replayed: this signature was seen before", SIGNATURE_HEADERS[provider])
        claims.append(key)
        try:
            return await self._record(provider, receipts, claims)
        except BaseException:
            for claim in claims:  # the provider's retry must be taken: nothing of this one is durable
                try:
                    await self.state.delete(claim)
                except Exception:
                    log.warning("receipts: could not forget %s after a failed receipt", claim)
            raise

    async def _record(self, provider: str, receipts: Sequence[Receipt], claims: list[str]) -> ReceiptCounts:
        duplicates = unmatched = ignored = 0
        fresh: list[Receipt] = []
        for receipt in receipts:
            if receipt.status is None and receipt.undeliverable is None:
                ignored += 1
                continue
            key = f"receipts:event:{provider}:{receipt.event_id[:120]}"
            if await self.state.put_if_absent(key, b"1", EVENT_TTL_S) is not None:
                duplicates += 1
                continue
            claims.append(key)
            fresh.append(receipt)
        events: list[StatusEvent] = []
        marks: list[tuple[str, Receipt]] = []
        found: dict[str, tuple[dict[str, StatusRow], list[str]]] = {}  # nid -> (channel -> status row, sent details)
        for receipt in fresh:
            nid = receipt.notification_id
            if nid is None:
                unmatched += 1
                continue
            if nid not in found:
                rows = {row.channel: row for row in await self.logstore.statuses(nid)}
                details = [e.detail for e in await self.logstore.events(nid) if e.status == Status.SENT.value]
                found[nid] = (rows, details)
            rows, details = found[nid]
            row = rows.get(receipt.channel.value)
            if row is None or not any(_matches(receipt, d) for d in details):
                unmatched += 1
                log.info("receipts: %s %s names %s/%s, which Herald did not send as %s", provider, receipt.event, nid,
                         receipt.channel.value, receipt.message_id or "-")
                continue
            if receipt.status is not None:
                events.append(StatusEvent(nid, row.user_id, receipt.channel, receipt.status, receipt.at_ms, receipt.detail,
                                          created_ms=row.created_ms, priority=Priority(row.priority)))
            if receipt.undeliverable is not None and receipt.address:
                marks.append((row.user_id, receipt))
        if events:  # through the Recorder, durable before the answer
            await ask(self.recorder.send, lambda reply: RecordEvents(tuple(events), (), reply))
        marked = 0
        if self.users is not None:
            for user_id, receipt in marks:
                assert receipt.address is not None and receipt.undeliverable is not None
                if await self.users.mark_undeliverable(user_id, receipt.channel, receipt.address,
                                                       f"{provider}: {receipt.undeliverable}", receipt.at_ms):
                    marked += 1
        return ReceiptCounts(len(events), duplicates, unmatched, ignored, marked)
