"""Email through an SMTP relay: a small RFC 5321 client on Trio streams, with a pool of reused connections.

A connection: the greeting, EHLO, STARTTLS (required when `tls = "starttls"`: never
opportunistic) or TLS from the first byte (`tls = "implicit"`), then AUTH PLAIN (or LOGIN
when only that is offered). A message: MAIL FROM and RCPT TO (sent together when the server
advertises PIPELINING), DATA with the message dot-stuffed, then the next message on the same
connection; RSET after a refused transaction, QUIT after `messages_per_connection`. Every
step has the `timeout_s` deadline.

The message bytes are the sandbox outbox's (actors/clients/sandbox.render_email). Verdicts
(docs/providers.md has the table): a 4xx reply is RetryLater, a 5xx reply to MAIL, RCPT or
DATA a PermanentFailure for this delivery; anything about the server or the connection
(connect error, timeout, TLS, a refused greeting or EHLO, 421, an authentication failure) is
RetryLater, which the gate counts as the provider's failure: a wrong password opens the
breaker instead of failing every delivery for good. A connection lost after the message went
out and before the server's answer is RetryLater too: the server may have taken it, so that
delivery may arrive twice (the send ledger covers only answered sends).
"""

from __future__ import annotations

import base64
import logging
import ssl
from dataclasses import dataclass
from email.utils import parseaddr

import trio

from protocol.header_safe import mailbox_problem
from protocol.messages import Delivery, Outcome, PermanentFailure, RetryLater, Sent
from protocol.lifecycle import Status

from .provider_config import SmtpProvider
from .dkim import dkim_signed
from .sandbox import render_email

log = logging.getLogger("herald.smtp")

MAX_LINE = 8192  # a reply line longer than this is a broken server (RFC 5321 allows 512)
MAX_REPLY_LINES = 100


class ConnectionLost(Exception):
    """The server closed the connection, or it broke."""


class ProtocolError(Exception):
    """The server spoke something that is not SMTP."""


class Refused(Exception):
    """The server refused a connection-level step (greeting, EHLO, STARTTLS, AUTH)."""

    def __init__(self, step: str, reply: Reply) -> None:
        super().__init__(f"{step}: {reply}")
        self.reply = reply


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.code} {' '.join(self.lines)}"[:300]


def dot_stuffed(raw: bytes) -> bytes:
    """The message as DATA sends it: CRLF line ends, a leading dot doubled, then the end-of-data line."""
    lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"


def envelope_address(value: str) -> str | None:
    """The addr-spec of a mailbox (`Name <a@b>` -> a@b) fit for MAIL FROM / RCPT TO, or None."""
    address = parseaddr(value)[1]
    if not address or not address.isascii() or any(ch in address for ch in "<>\r\n \x00"):
        return None
    return address


def _broken(exc: BaseException) -> str:
    """What broke a stream (a TLS error is the cause of trio's BrokenResourceError)."""
    cause = exc.__cause__
    return f"connection broken: {type(exc).__name__}" + (f" ({type(cause).__name__}: {cause})" if cause is not None else "")


class SmtpConnection:
    """One SMTP session: its stream, what the server advertised, and how many messages it carried."""

    def __init__(self, stream: trio.abc.Stream, settings: SmtpProvider) -> None:
        self.stream = stream
        self.settings = settings
        self.buffer = bytearray()
        self.extensions: dict[str, str] = {}
        self.messages = 0
        self.last_used = trio.current_time()

    async def _line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end]).rstrip(b"\r")
                del self.buffer[: end + 1]
                return line
            if len(self.buffer) > MAX_LINE:
                raise ProtocolError(f"a reply line longer than {MAX_LINE} bytes")
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ConnectionLost(_broken(exc)) from None
            if not data:
                raise ConnectionLost("the server closed the connection")
            self.buffer += data

    async def reply(self) -> Reply:
        lines: list[str] = []
        code = 0
        while True:
            raw = await self._line()
            if len(raw) < 3 or not raw[:3].isdigit() or raw[3:4] not in (b"", b" ", b"-"):
                raise ProtocolError(f"not an SMTP reply: {raw[:80]!r}")
            if code and int(raw[:3]) != code:
                raise ProtocolError("a multi-line reply whose lines have different codes")
            code = int(raw[:3])
            lines.append(raw[4:].decode("utf-8", "replace"))
            if raw[3:4] != b"-":
                return Reply(code, tuple(lines))
            if len(lines) > MAX_REPLY_LINES:
                raise ProtocolError(f"a reply of more than {MAX_REPLY_LINES} lines")

    async def write(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionLost(_broken(exc)) from None

    async def command(self, line: str) -> Reply:
        await self.write(line.encode("ascii") + b"\r\n")
        return await self.reply()

    async def ehlo(self) -> None:
        reply = await self.command(f"EHLO {self.settings.helo_name}")
        if reply.code != 250:
            raise Refused("EHLO", reply)
        self.extensions = {}
        for line in reply.lines[1:]:
            keyword, _, params = line.partition(" ")
            self.extensions[keyword.upper()] = params

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self.stream)


def _tls_context(settings: SmtpProvider) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)


async def open_session(settings: SmtpProvider, context: ssl.SSLContext) -> SmtpConnection:
    """A connection ready for MAIL FROM: greeted, EHLO'd, under TLS as configured, authenticated."""
    stream: trio.abc.Stream
    with trio.fail_after(settings.timeout_s):
        if settings.tls == "implicit":
            stream = await trio.open_ssl_over_tcp_stream(settings.host, settings.port, ssl_context=context)
        else:
            stream = await trio.open_tcp_stream(settings.host, settings.port)
    connection = SmtpConnection(stream, settings)
    try:
        with trio.fail_after(settings.timeout_s):
            greeting = await connection.reply()
            if greeting.code != 220:
                raise Refused("greeting", greeting)
            await connection.ehlo()
            if settings.tls == "starttls":
                if "STARTTLS" not in connection.extensions:
                    raise ProtocolError("the server does not offer STARTTLS (tls = \"starttls\" requires it)")
                reply = await connection.command("STARTTLS")
                if reply.code != 220:
                    raise Refused("STARTTLS", reply)
                if connection.buffer:  # bytes sent before the handshake would be taken as if under TLS (CVE-2011-0411)
                    raise ProtocolError("the server sent data after its STARTTLS reply, before TLS")
                tls = trio.SSLStream(stream, context, server_hostname=settings.host)
                try:
                    await tls.do_handshake()
                except trio.BrokenResourceError as exc:
                    raise ConnectionLost(f"STARTTLS handshake: {_broken(exc)}") from None
                connection.stream = tls
                await connection.ehlo()
            if settings.username:
                await _authenticate(connection, settings)
    except BaseException:
        await connection.aclose()
        raise
    return connection


async def _authenticate(connection: SmtpConnection, settings: SmtpProvider) -> None:
    assert settings.password is not None
    user, password = settings.username.encode(), settings.password.reveal().encode()
    mechanisms = connection.extensions.get("AUTH", "").upper().split()
    if "PLAIN" in mechanisms:
        reply = await connection.command("AUTH PLAIN " + base64.b64encode(b"\0" + user + b"\0" + password).decode())
    elif "LOGIN" in mechanisms:
        reply = await connection.command("AUTH LOGIN")
        for answer in (user, password):
            if reply.code != 334:
                break
            reply = await connection.command(base64.b64encode(answer).decode())
    else:
        raise ProtocolError(f"the server offers no AUTH mechanism Herald speaks (PLAIN, LOGIN): {mechanisms}")
    if reply.code != 235:
        raise Refused("AUTH", reply)


class _DroppedBeforeData(Exception):
    """The connection was lost before any byte of the message went out: safe to try on a new connection."""


class SmtpClient:
    """Email through an SMTP relay (a ChannelClient): a bounded pool of sessions, each carrying message after message."""

    def __init__(self, settings: SmtpProvider, sender: str) -> None:
        problem = mailbox_problem(sender)
        if problem is not None:
            raise ValueError(f"email sender {sender!r}: {problem}")
        envelope = envelope_address(sender)
        if envelope is None:
            raise ValueError(f"email sender {sender!r}: no address for MAIL FROM")
        self.settings = settings
        self.sender = sender
        self.envelope_from = envelope
        self.context = _tls_context(settings)
        self._idle: list[SmtpConnection] = []
        self._slots = trio.Semaphore(settings.pool_size)
        self.connections_opened = 0
        self.where = f"smtp {settings.host}:{settings.port}"

    async def send(self, delivery: Delivery) -> Outcome:
        raw = render_email(delivery, self.sender)
        if isinstance(raw, PermanentFailure):
            return raw
        raw = dkim_signed(self.settings.dkim, raw)  # unchanged without DKIM settings
        recipient = envelope_address(delivery.address or "")
        if recipient is None:
            return PermanentFailure(f"no address for RCPT TO in {delivery.address!r}"[:300], dead_letter=True)
        async with self._slots:
            return await self._send(recipient, dot_stuffed(raw))

    async def _send(self, recipient: str, data: bytes) -> Outcome:
        for _ in range(2):  # a reused connection the server closed while idle: once more on a new one
            connection, reused = await self._take()
            try:
                if connection is None:
                    connection = await open_session(self.settings, self.context)
                    self.connections_opened += 1
                outcome, keep = await self._transaction(connection, recipient, data, reused)
            except _DroppedBeforeData as exc:
                assert connection is not None
                await connection.aclose()
                if reused:
                    continue
                return RetryLater(f"{self.where}: {exc}")
            except Refused as exc:  # greeting, EHLO, STARTTLS, AUTH: the provider's failure, for the breaker
                return RetryLater(f"{self.where}: {exc}")
            except (ConnectionLost, ProtocolError, trio.TooSlowError, ssl.SSLError, OSError) as exc:
                if connection is not None:
                    await connection.aclose()
                what = "timed out" if isinstance(exc, trio.TooSlowError) else f"{type(exc).__name__}: {exc}"
                return RetryLater(f"{self.where}: {what}"[:500])
            except BaseException:  # cancelled mid-transaction: the session's state is unknown
                if connection is not None:
                    await connection.aclose()
                raise
            await self._give_back(connection, keep)
            return outcome
        return RetryLater(f"{self.where}: connections lost before the message was sent")

    async def _take(self) -> tuple[SmtpConnection | None, bool]:
        now = trio.current_time()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.last_used <= self.settings.idle_s:
                return connection, True
            await connection.aclose()  # too old to trust: the server may have closed it
        return None, False

    async def _give_back(self, connection: SmtpConnection, keep: bool) -> None:
        connection.last_used = trio.current_time()
        if keep and connection.messages < self.settings.messages_per_connection:
            self._idle.append(connection)
            return
        if keep:  # spent: say goodbye (a server that does not answer in time is simply closed)
            with trio.move_on_after(self.settings.timeout_s):
                try:
                    await connection.command("QUIT")
                except (ConnectionLost, ProtocolError):
                    pass
        await connection.aclose()

    async def _transaction(self, connection: SmtpConnection, recipient: str, data: bytes, reused: bool) -> tuple[Outcome, bool]:
        """MAIL, RCPT, DATA: the outcome for this delivery, and whether the connection can carry another."""
        settings = self.settings
        body = " BODY=8BITMIME" if "8BITMIME" in connection.extensions and not data.isascii() else ""
        size = f" SIZE={len(data)}" if "SIZE" in connection.extensions else ""
        mail, rcpt = f"MAIL FROM:<{self.envelope_from}>{body}{size}", f"RCPT TO:<{recipient}>"
        try:
            with trio.fail_after(settings.timeout_s):
                pipelined = "PIPELINING" in connection.extensions
                if pipelined:
                    await connection.write(f"{mail}\r\n{rcpt}\r\n".encode("ascii"))
                    replies = [await connection.reply()]
                else:
                    replies = [await connection.command(mail)]
                if reused and replies[0].code == 421:  # the relay closed the idle session (timeout): not this message's fault
                    raise ConnectionLost(f"{replies[0]} on a reused connection")
                if pipelined:
                    replies.append(await connection.reply())
                elif replies[0].code == 250:
                    replies.append(await connection.command(rcpt))
                for step, reply in zip(("MAIL FROM", "RCPT TO"), replies):
                    if reply.code != 250:
                        return await self._refused(connection, step, reply)
                reply = await connection.command("DATA")
                if reply.code != 354:
                    return await self._refused(connection, "DATA", reply)
        except ConnectionLost as exc:
            raise _DroppedBeforeData(str(exc)) from None
        connection.messages += 1
        try:
            with trio.fail_after(settings.timeout_s):
                await connection.write(data)
                reply = await connection.reply()
        except (ConnectionLost, trio.TooSlowError) as exc:
            await connection.aclose()
            what = "timed out" if isinstance(exc, trio.TooSlowError) else str(exc)
            return RetryLater(f"{self.where}: {what} after the message was sent, before the server's answer "
                              "(it may arrive twice)"), False
        if reply.code == 250:
            return Sent(Status.SENT, detail=f"{self.where}: {reply}"), True
        return self._verdict("end of DATA", reply), reply.code != 421

    async def _refused(self, connection: SmtpConnection, step: str, reply: Reply) -> tuple[Outcome, bool]:
        keep = reply.code != 421  # 421: the server closes the connection
        if keep:  # end the refused transaction so the connection can carry the next one
            try:
                keep = (await connection.command("RSET")).code == 250
            except (ConnectionLost, ProtocolError):  # the verdict stands; the connection goes
                keep = False
        return self._verdict(step, reply), keep

    def _verdict(self, step: str, reply: Reply) -> Outcome:
        error = f"{self.where}: {step}: {reply}"
        if 500 <= reply.code < 600:
            return PermanentFailure(error)
        return RetryLater(error)
