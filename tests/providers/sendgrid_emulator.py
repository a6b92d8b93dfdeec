"""A local SendGrid v3 Mail Send emulator for the tests: an ASGI app served by Hypercorn on a free loopback port.

It speaks the documented API: `POST /v3/mail/send` with `Authorization: Bearer <key>`
answers 202 with an X-Message-Id and no body; a wrong key 401, a body missing what the
API requires 400, each error as `{"errors": [{"message", "field", "help"}]}`. `script`
holds answers to give first, in turn (a 429 with its X-RateLimit-Reset, a 500, a 413).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypercorn.config import Config
from hypercorn.trio import serve

API_KEY = "SG.test-key-Very-Secret-123"


class EventWebhook:
    """SendGrid's signed Event Webhook: a P-256 key pair made for the test; it signs timestamp + body as SendGrid does."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_key = base64.b64encode(der).decode()  # what SendGrid's settings page shows (the verification key)

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.private_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": stamp, "Content-Type": "application/json",
                "User-Agent": "SendGrid Event API"}

    async def post(self, url: str, events: list[dict[str, Any]], timestamp: int | None = None) -> httpx.Response:
        """POST a signed batch to `url` (the node's /v1/webhooks/sendgrid)."""
        body = json.dumps(events).encode()
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(url, content=body, headers=self.headers(body, timestamp))


@dataclass
class Answer:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def error(message: str, field_name: str | None = None, status: int = 400) -> Answer:
    return Answer(status, {"errors": [{"message": message, "field": field_name, "help": None}]})


def _problem(body: Any) -> Answer | None:
    """What SendGrid's validation says of a request body, or None."""
    if not isinstance(body, dict):
        return error("Bad Request", None)
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return error("The personalizations field is required and must have at least one personalization.", "personalizations")
    for n, p in enumerate(personalizations):
        if not isinstance(p.get("to"), list) or not p["to"] or not all(isinstance(t, dict) and "@" in str(t.get("email", "")) for t in p["to"]):
            return error("Does not contain a valid address.", f"personalizations.{n}.to")
    if not isinstance(body.get("from"), dict) or "@" not in str(body["from"].get("email", "")):
        return error("The from email does not contain a valid address.", "from.email")
    if not body.get("subject"):
        return error("The subject is required.", "subject")
    content = body.get("content")
    if not isinstance(content, list) or not content or not all(c.get("type") and isinstance(c.get("value"), str) and c["value"] for c in content):
        return error("Unless a valid template_id is provided, the content parameter is required.", "content")
    return None


@dataclass
class Emulator:
    url: str = ""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    script: list[Answer] = field(default_factory=list)
    scopes: tuple[str, ...] = ("mail.send", "user.profile.read")
    message_ids: list[str] = field(default_factory=list)  # the X-Message-Id of each accepted message, in order
    webhook: EventWebhook = field(default_factory=lambda: EventWebhook())

    def event(self, n: int, event: str, **fields: Any) -> dict[str, Any]:
        """An Event Webhook event about the n-th accepted message, as SendGrid writes one (its custom args included)."""
        body = self.accepted[n]
        return {
            "email": body["personalizations"][0]["to"][0]["email"], "timestamp": int(time.time()), "event": event,
            "sg_event_id": base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="),
            "sg_message_id": f"{self.message_ids[n]}.filterdrecv-5645d9c87f-6r2ch-1-5F5FC76C-3.0",
            "smtp-id": f"<{self.message_ids[n]}@ismtpd0001p1lon1.sendgrid.net>", **body.get("custom_args", {}), **fields,
        }

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = self._answer(scope, raw)
        headers = [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()]
        payload = json.dumps(answer.body).encode() if answer.body is not None else b""
        if payload:
            headers.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def _answer(self, scope: dict[str, Any], raw: bytes) -> Answer:
        if scope["path"] == "/v3/scopes" and scope["method"] == "GET":  # the key's scopes (herald providers check)
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            if headers.get("authorization") != f"Bearer {API_KEY}":
                return error("The provided authorization grant is invalid, expired, or revoked", None, 401)
            return Answer(200, {"scopes": list(self.scopes)})
        if scope["path"] != "/v3/mail/send" or scope["method"] != "POST":
            return error("Not Found", None, 404)
        self.requests += 1
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if headers.get("authorization") != f"Bearer {API_KEY}":
            return error("The provided authorization grant is invalid, expired, or revoked", None, 401)
        if self.script:
            return self.script.pop(0)
        try:
            body = json.loads(raw)
        except ValueError:
            return error("Bad Request", None)
        problem = _problem(body)
        if problem is not None:
            return problem
        self.accepted.append(body)
        message_id = uuid.uuid4().hex[:22]
        self.message_ids.append(message_id)
        return Answer(202, None, {"X-Message-Id": message_id})


@asynccontextmanager
async def running_emulator() -> AsyncIterator[Emulator]:
    emulator = Emulator()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(emulator, config, shutdown_trigger=stop.wait, task_status=task_status))  # type: ignore[arg-type]
        emulator.url = binds[0]
        try:
            yield emulator
        finally:
            stop.set()
