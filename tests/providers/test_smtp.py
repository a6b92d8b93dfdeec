"""The SMTP client (actors/clients/smtp.py) against a real SMTP server the test runs (aiosmtpd, tests/providers/smtp_server.py).

Plain, STARTTLS and implicit TLS with a certificate from a throwaway CA (trustme) that the
client trusts through its configured CA file; AUTH accepted and refused; a 451 on RCPT
retried then delivered; a 550 failed for good; a connection dropped mid-DATA retried and
delivered once; several messages over one connection (the server counts the connections).
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
import trio
import trustme

from actors.clients.provider_config import Secret, SmtpProvider
from actors.clients.smtp import SmtpClient, dot_stuffed
from protocol.channels import Channel
from protocol.content import Content, EmailContent
from protocol.lifecycle import Status
from protocol.messages import Delivery, PermanentFailure, RetryLater, Sent
from tests.providers.smtp_server import PASSWORD, USER, SmtpServer

SENDER = "Herald <herald@example.org>"


def delivery(n: int = 1, to: str = "alice@example.org", text: str = "Hello\n.a line with a leading dot\nbye") -> Delivery:
    content = Content(email=EmailContent(subject=f"Subject {n}", text=text, html="<p>Hello</p>"))
    return Delivery(f"n-{n}", "u1", Channel.EMAIL, 0, content, address=to)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def settings(port: int, **extra: object) -> SmtpProvider:
    return SmtpProvider(**{"host": "127.0.0.1", "port": port, "tls": "none", "timeout_s": 10.0, **extra})  # type: ignore[arg-type]


async def test_a_message_arrives_parseable_with_its_headers() -> None:
    with SmtpServer() as server:
        client = SmtpClient(settings(server.port), SENDER)
        outcome = await client.send(delivery())
        assert isinstance(outcome, Sent) and outcome.status is Status.SENT, outcome
        [got] = server.handler.received
        assert got.mail_from == "herald@example.org" and got.rcpt_tos == ["alice@example.org"]
        message = got.message
        assert message["From"] == SENDER and message["To"] == "alice@example.org" and message["Subject"] == "Subject 1"
        assert message["X-Herald-Notification-Id"] == "n-1" and message["Message-ID"]
        text = message.get_body(("plain",)).get_content()
        assert ".a line with a leading dot" in text.splitlines()  # dot-stuffed on the wire, unstuffed by the server


def test_dot_stuffing() -> None:
    assert dot_stuffed(b"a\n.b\n..c\n.\n") == b"a\r\n..b\r\n...c\r\n..\r\n.\r\n"
    assert dot_stuffed(b"a\r\nb") == b"a\r\nb\r\n.\r\n"


async def test_starttls_and_auth_with_the_configured_ca(ca: trustme.CA, ca_file: Path) -> None:
    with SmtpServer(starttls=server_context(ca), auth=True) as server:
        client = SmtpClient(settings(server.port, tls="starttls", ca_file=ca_file, username=USER, password=Secret(PASSWORD)), SENDER)
        outcome = await client.send(delivery())
        assert isinstance(outcome, Sent), outcome
        assert len(server.handler.received) == 1 and server.handler.logins == [(USER.encode(), True)]


async def test_starttls_refuses_a_certificate_it_does_not_trust(ca: trustme.CA) -> None:
    with SmtpServer(starttls=server_context(ca)) as server:
        client = SmtpClient(settings(server.port, tls="starttls"), SENDER)  # the system's CAs: not the test's
        outcome = await client.send(delivery())
        assert isinstance(outcome, RetryLater) and "SSL" in outcome.error, outcome
        assert server.handler.received == []


async def test_implicit_tls(ca: trustme.CA, ca_file: Path) -> None:
    with SmtpServer(implicit=server_context(ca)) as server:
        client = SmtpClient(settings(server.port, tls="implicit", ca_file=ca_file), SENDER)
        outcomes = [await client.send(delivery(n)) for n in range(3)]
        assert all(isinstance(o, Sent) for o in outcomes), outcomes
        assert len(server.handler.received) == 3 and server.handler.connections() == 1


async def test_an_auth_failure_is_the_providers_failure_and_never_shows_the_password(
    ca: trustme.CA, ca_file: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wr0ng-Pa55word-plugh"
    with SmtpServer(starttls=server_context(ca), auth=True) as server:
        provider = settings(server.port, tls="starttls", ca_file=ca_file, username=USER, password=Secret(wrong))
        client = SmtpClient(provider, SENDER)
        outcome = await client.send(delivery())
        assert isinstance(outcome, RetryLater) and "AUTH: 535" in outcome.error, outcome  # RetryLater: counted by the breaker
        assert server.handler.received == [] and server.handler.logins == [(USER.encode(), False)]
        assert wrong not in outcome.error and wrong not in caplog.text and wrong not in repr(provider) and wrong not in str(provider)


async def test_a_451_on_rcpt_is_retried_later_then_delivered() -> None:
    with SmtpServer() as server:
        server.handler.rcpt_replies["alice@example.org"] = ["451 4.7.1 Greylisted, try again"]
        client = SmtpClient(settings(server.port), SENDER)
        first = await client.send(delivery())
        assert isinstance(first, RetryLater) and "451" in first.error, first
        second = await client.send(delivery())
        assert isinstance(second, Sent), second
        assert len(server.handler.received) == 1 and server.handler.connections() == 1  # RSET kept the connection usable


async def test_a_550_fails_that_recipient_for_good_and_the_next_one_goes_through() -> None:
    with SmtpServer() as server:
        server.handler.rcpt_replies["nobody@example.org"] = ["550 5.1.1 No such user"]
        client = SmtpClient(settings(server.port), SENDER)
        refused = await client.send(delivery(1, to="nobody@example.org"))
        assert isinstance(refused, PermanentFailure) and "550" in refused.error and not refused.dead_letter, refused
        assert isinstance(await client.send(delivery(2)), Sent)
        assert [r.rcpt_tos for r in server.handler.received] == [["alice@example.org"]]


async def test_a_connection_dropped_mid_data_is_retried_and_delivered_once() -> None:
    with SmtpServer() as server:
        server.handler.drop_data = 1
        client = SmtpClient(settings(server.port), SENDER)
        first = await client.send(delivery())
        assert isinstance(first, RetryLater) and "may arrive twice" in first.error, first
        assert server.handler.received == []
        second = await client.send(delivery())
        assert isinstance(second, Sent), second
        assert [r.message["X-Herald-Notification-Id"] for r in server.handler.received] == ["n-1"]


async def test_several_messages_share_a_bounded_pool_of_connections() -> None:
    with SmtpServer() as server:
        client = SmtpClient(settings(server.port, pool_size=2, messages_per_connection=100), SENDER)
        outcomes: list[object] = []

        async def send(n: int) -> None:
            outcomes.append(await client.send(delivery(n)))

        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(send, n)
        assert len(outcomes) == 20 and all(isinstance(o, Sent) for o in outcomes), outcomes
        assert len(server.handler.received) == 20
        assert server.handler.connections() <= 2 and client.connections_opened <= 2


async def test_a_spent_connection_is_replaced() -> None:
    with SmtpServer() as server:
        client = SmtpClient(settings(server.port, pool_size=1, messages_per_connection=2), SENDER)
        for n in range(5):
            assert isinstance(await client.send(delivery(n)), Sent)
        assert server.handler.connections() == 3 and client.connections_opened == 3


async def test_an_unreachable_server_is_retried_later() -> None:
    from tests.servers import free_port

    client = SmtpClient(settings(free_port()), SENDER)
    outcome = await client.send(delivery())
    assert isinstance(outcome, RetryLater), outcome


async def test_a_421_to_the_first_command_on_a_reused_connection_is_sent_on_a_new_one() -> None:
    with SmtpServer() as server:
        client = SmtpClient(settings(server.port), SENDER)
        assert isinstance(await client.send(delivery(1)), Sent)
        server.handler.mail_replies.append("421 4.4.2 Idle too long, closing")
        outcome = await client.send(delivery(2))
        assert isinstance(outcome, Sent), outcome
        assert client.connections_opened == 2 and len(server.handler.received) == 2


async def test_a_connection_the_relay_closed_while_idle_is_replaced_without_a_failure() -> None:
    with SmtpServer(timeout=0.3) as server:  # aiosmtpd closes a session idle for 0.3 s
        client = SmtpClient(settings(server.port), SENDER)
        assert isinstance(await client.send(delivery(1)), Sent)
        await trio.sleep(1)  # real time: the server's own idle timer (no assertion on time)
        outcome = await client.send(delivery(2))
        assert isinstance(outcome, Sent), outcome
        assert client.connections_opened == 2 and server.handler.connections() == 2
