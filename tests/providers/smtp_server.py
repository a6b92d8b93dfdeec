"""A real SMTP server for the tests: aiosmtpd on a free loopback port, its asyncio loop in a thread of its own.

Test code only (Herald's code never touches asyncio). The handler keeps every accepted
message with the connection (client port) it came on, and plays scripted faults: a reply
to RCPT TO for chosen recipients (a 451 the first n times, a 550), and a connection
dropped after the message's data arrived and before the server answers (the message is
then lost, as if the server crashed).
"""

from __future__ import annotations

import asyncio

import ssl
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.servers import free_port

USER, PASSWORD = "herald", "s3cret-Pa55word-xyzzy"


@dataclass
class Received:
    peer: tuple[str, int]
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.raw, policy=policy.default)  # type: ignore[return-value]


@dataclass
class Handler:
    received: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, list[str]] = field(default_factory=dict)  # recipient -> replies to give, in turn (then accept)
    mail_replies: list[str] = field(default_factory=list)  # replies to give to MAIL FROM, in turn (then accept)
    drop_data: int = 0  # the next n DATA: drop the connection before answering
    logins: list[tuple[bytes, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]) -> str:
        with self.lock:
            if self.mail_replies:
                return self.mail_replies.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        with self.lock:
            script = self.rcpt_replies.get(address)
            if script:
                return script.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.drop_data > 0:
                self.drop_data -= 1
                server.transport.close()
                return "250 never seen"
            self.received.append(Received(session.peer, envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 Message accepted"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
        with self.lock:
            self.logins.append((auth_data.login if isinstance(auth_data, LoginPassword) else b"", ok))
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    def connections(self) -> int:
        with self.lock:
            return len({r.peer for r in self.received})


class SmtpServer:
    """Start with `with SmtpServer(...) as server:`; `server.port`, `server.handler`."""

    def __init__(self, *, starttls: ssl.SSLContext | None = None, implicit: ssl.SSLContext | None = None, auth: bool = False, **smtp: Any) -> None:
        self.handler = Handler()
        self.port = free_port()
        kwargs: dict[str, Any] = dict(smtp)  # aiosmtpd's SMTP settings (timeout, ...)
        if starttls is not None:
            kwargs.update(tls_context=starttls, require_starttls=True)
        if implicit is not None:
            kwargs["ssl_context"] = implicit
        if auth:
            kwargs.update(authenticator=self.handler.authenticate, auth_required=True, auth_require_tls=starttls is not None or implicit is not None)
        # A loop of its own (run and closed in the controller's thread), made directly: once trio-asyncio is imported
        # (reactor/asyncio_bridge.py, by the Kafka tests), asyncio.new_event_loop() refuses to run in a Trio thread.
        self.controller = Controller(self.handler, loop=asyncio.SelectorEventLoop(), hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
