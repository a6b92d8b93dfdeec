"""`herald providers check`: each configured provider's credentials and connectivity, checked where its API allows it.

Nothing is sent to anyone. Per type:

* smtp: a session as a delivery opens one (connect, greeting, EHLO, STARTTLS or implicit
  TLS with the certificate checked, AUTH), then QUIT.
* sendgrid: `GET /v3/scopes` with the key: 200 and the `mail.send` scope.
* twilio: `GET /2010-04-01/Accounts/{sid}.json` with the SID and token: 200 and an active account.
* fcm: an access token from the token endpoint (the key and the account), then a
  `validate_only` message to a made-up token: 200 or 400 INVALID_ARGUMENT means the project
  took the access token (401, 403, 404 that it did not).
* apns: a notification to a token of zeros: 400 BadDeviceToken means Apple took the
  provider token and the topic (403 that it did not). Apple keeps nothing of it.
* webhook: nothing to call (the endpoints are the users'); the secret's keys were checked at
  start-up (whsec_<base64>): the line says how many sign and what the SSRF guard allows.
* sandbox: nothing to check.

A line per provider; the texts are the providers' statuses and error codes, never a credential.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from protocol.channels import Channel

from .apns import ApnsClient
from .apns import reason_of as apns_reason
from .fcm import FcmClient, TokenError
from .fcm import error_of as fcm_error
from .http_api import call, http_client, text_of
from .http_errors import Timeout, TransportError
from .provider_config import (
    ApnsProvider,
    FcmProvider,
    SendgridProvider,
    SmtpProvider,
    TwilioProvider,
    WebhookProvider,
    provider_names,
)
from .smtp import ConnectionLost, ProtocolError, Refused, _tls_context, open_session

CHECK_TOKEN_FCM = "herald-providers-check"
CHECK_TOKEN_APNS = "0" * 64


@dataclass(frozen=True)
class Checked:
    channel: str
    name: str
    ok: bool
    text: str

    def line(self) -> str:
        return f"{self.channel} {self.name}: {'ok' if self.ok else 'FAILED'}: {self.text}"


async def check_smtp(spec: SmtpProvider) -> tuple[bool, str]:
    try:
        connection = await open_session(spec, _tls_context(spec))
    except Refused as exc:
        return False, str(exc)[:300]
    except (ConnectionLost, ProtocolError, trio.TooSlowError, ssl.SSLError, OSError) as exc:
        return False, ("timed out" if isinstance(exc, trio.TooSlowError) else f"{type(exc).__name__}: {exc}")[:300]
    try:
        with trio.move_on_after(spec.timeout_s):
            await connection.command("QUIT")
    except (ConnectionLost, ProtocolError):
        pass
    finally:
        await connection.aclose()
    steps = ["EHLO"] + (["TLS"] if spec.tls != "none" else []) + (["AUTH"] if spec.username else [])
    return True, f"{spec.host}:{spec.port}: {', '.join(steps)} accepted"


async def check_sendgrid(spec: SendgridProvider) -> tuple[bool, str]:
    async with http_client(spec.timeout_s, 1, None, http2=False) as http:
        answer = await call(http, "GET", spec.base_url.rstrip("/") + "/v3/scopes",
                            headers={"Authorization": f"Bearer {spec.api_key.reveal()}"})
    if answer.status != 200:
        return False, f"{answer.status}: {text_of(answer.body)}"
    scopes = _json(answer.body).get("scopes", [])
    if "mail.send" not in scopes:
        return False, "the key lacks the mail.send scope"
    return True, "the key has the mail.send scope"


async def check_twilio(spec: TwilioProvider) -> tuple[bool, str]:
    async with http_client(spec.timeout_s, 1, spec.ca_file, http2=False) as http:
        answer = await call(http, "GET", f"{spec.base_url.rstrip('/')}/2010-04-01/Accounts/{spec.account_sid}.json",
                            auth=(spec.account_sid, spec.auth_token.reveal()))
    account = _json(answer.body)
    if answer.status != 200:
        return False, f"{answer.status} {account.get('code', '-')}: {str(account.get('message', ''))[:200]}"
    if account.get("status") != "active":
        return False, f"the account is {account.get('status')!r}, not active"
    return True, f"account {spec.account_sid} is active"


async def check_fcm(spec: FcmProvider) -> tuple[bool, str]:
    client = FcmClient(spec)
    try:
        try:
            access = await client.tokens.get()
        except TokenError as exc:
            return False, str(exc)
        body = {"validate_only": True, "message": {"token": CHECK_TOKEN_FCM, "notification": {"title": "herald providers check"}}}
        answer = await call(client.http, "POST", client.url, json=body, headers={"Authorization": f"Bearer {access}"})
    finally:
        await client.aclose()
    code, message = fcm_error(answer.body)
    if answer.status == 200 or (answer.status == 400 and code == "INVALID_ARGUMENT"):
        return True, f"access token issued; project {spec.project_id} accepts it (HTTP/{answer.http_version.split('/')[-1]})"
    return False, f"access token issued, but messages:send answered {answer.status} {code}: {message}"


async def check_apns(spec: ApnsProvider) -> tuple[bool, str]:
    client = ApnsClient(spec)
    try:
        headers = {"apns-topic": spec.topic, "apns-push-type": "alert", "apns-priority": "5", "apns-expiration": "0",
                   "authorization": f"bearer {client.token.get()}"}
        answer = await call(client.http, "POST", client.base + CHECK_TOKEN_APNS, json={"aps": {"alert": "check"}}, headers=headers)
    finally:
        await client.aclose()
    why, _ = apns_reason(answer.body)
    if answer.status == 200 or (answer.status == 400 and why == "BadDeviceToken"):
        return True, f"the provider token and topic {spec.topic} are accepted"
    return False, f"{answer.status} {why}"


async def check_webhook(spec: WebhookProvider) -> tuple[bool, str]:
    allowed = ", ".join(spec.allow_cidrs) or "public addresses only"
    return True, f"{len(spec.secrets)} signing key(s); destinations: {allowed}"


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


async def check_one(spec: Any) -> tuple[bool, str]:
    """One provider's check; a transport error is a failed check naming it."""
    checks: dict[type, Any] = {SmtpProvider: check_smtp, SendgridProvider: check_sendgrid, TwilioProvider: check_twilio,
                               FcmProvider: check_fcm, ApnsProvider: check_apns, WebhookProvider: check_webhook}
    check = checks.get(type(spec))
    if check is None:
        return True, "the sandbox: nothing to check"
    try:
        ok, text = await check(spec)
        return bool(ok), str(text)
    except Timeout as exc:
        return False, f"timed out ({type(exc).__name__})"
    except TransportError as exc:
        return False, f"{type(exc).__name__}: {str(exc)[:200]}"


async def check_all(providers: dict[Channel, tuple[Any, ...]]) -> list[Checked]:
    """Every configured provider, checked at once; in channel and configured order."""
    jobs = [(c.value, name, spec) for c, specs in providers.items() for name, spec in zip(provider_names(specs), specs)]
    results: list[Checked | None] = [None] * len(jobs)

    async def one(n: int, channel: str, name: str, spec: Any) -> None:
        ok, text = await check_one(spec)
        results[n] = Checked(channel, name, ok, text)

    async with trio.open_nursery() as nursery:
        for n, (channel, name, spec) in enumerate(jobs):
            nursery.start_soon(one, n, channel, name, spec)
    return [r for r in results if r is not None]
