"""DKIM signing (actors/clients/dkim.py): a message the SMTP client sends to the aiosmtpd server, and an .eml the
outbox writes, verify with dkimpy against the test's public key (served by a dnsfunc standing in for DNS); a changed
message or another key does not; the configuration's errors name the setting and never show the key."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.clients.dkim import check_dkim
from actors.clients.provider_config import Secret, SmtpProvider, parse_providers
from actors.clients.sandbox import EmailOutbox
from actors.clients.smtp import SmtpClient
from protocol.channels import Channel
from protocol.content import Content, EmailContent
from protocol.messages import Delivery, Sent
from tests.providers.smtp_server import SmtpServer

SENDER = "Herald <herald@example.org>"


def _key() -> tuple[str, bytes]:
    """A private key (PEM) and its DNS TXT record (v=DKIM1; k=rsa; p=...)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


PEM, RECORD = _key()
OTHER_PEM, OTHER_RECORD = _key()


def dns(record: bytes) -> Any:
    def lookup(name: bytes, *args: object, **kwargs: object) -> bytes | None:
        return record if name.rstrip(b".") == b"mail2026._domainkey.example.org" else None

    return lookup


def delivery(text: str = "Hello\n.a line with a leading dot\nbye") -> Delivery:
    content = Content(email=EmailContent(subject="Your code", text=text, html="<p>Hello</p>"))
    return Delivery("n-1", "u1", Channel.EMAIL, 0, content, address="alice@example.org")


async def test_smtp_messages_are_signed_and_verify_against_the_published_key() -> None:
    signing = check_dkim("mail2026", "example.org", Secret(PEM))
    with SmtpServer() as server:
        client = SmtpClient(SmtpProvider(host="127.0.0.1", port=server.port, tls="none", timeout_s=10.0, dkim=signing), SENDER)
        assert isinstance(await client.send(delivery()), Sent)
        [got] = server.handler.received
    raw = got.raw
    assert raw.startswith(b"DKIM-Signature:") and b"d=example.org" in raw and b"s=mail2026" in raw
    assert dkim.verify(raw, dnsfunc=dns(RECORD))
    assert not dkim.verify(raw, dnsfunc=dns(OTHER_RECORD))  # another key
    assert not dkim.verify(raw.replace(b"Your code", b"Your cade"), dnsfunc=dns(RECORD))  # a signed header changed
    assert not dkim.verify(raw.replace(b"bye", b"bey"), dnsfunc=dns(RECORD))  # the body changed
    assert got.message.get_body(("plain",)).get_content().splitlines()[1] == ".a line with a leading dot"


async def test_without_dkim_nothing_changes() -> None:
    with SmtpServer() as server:
        client = SmtpClient(SmtpProvider(host="127.0.0.1", port=server.port, tls="none", timeout_s=10.0), SENDER)
        assert isinstance(await client.send(delivery()), Sent)
        [got] = server.handler.received
    assert b"DKIM-Signature" not in got.raw


async def test_the_outbox_writes_signed_messages(tmp_path: Path) -> None:
    outbox = EmailOutbox(tmp_path / "outbox", SENDER, dkim=check_dkim("mail2026", "example.org", Secret(PEM)))
    assert isinstance(await outbox.send(delivery()), Sent)
    raw = (tmp_path / "outbox" / "n-1.eml").read_bytes()
    assert dkim.verify(raw, dnsfunc=dns(RECORD)) and not dkim.verify(raw, dnsfunc=dns(OTHER_RECORD))


def test_the_configuration() -> None:
    env = {"DKIM_KEY": PEM, "NOT_A_KEY": "-----BEGIN PRIVATE KEY-----\nnot-a-key-secret-content\n-----END PRIVATE KEY-----\n"}
    dkim_table = {"dkim_selector": "mail2026", "dkim_domain": "example.org", "dkim_key_env": "DKIM_KEY"}
    parsed = parse_providers({"email": [{"type": "smtp", "host": "smtp.example.org", **dkim_table}]}, env)
    smtp = parsed["email"][0]
    assert isinstance(smtp, SmtpProvider) and smtp.dkim is not None and smtp.dkim.domain == "example.org"
    assert PEM.splitlines()[1] not in repr(smtp)
    sandbox = parse_providers({"email": [{"type": "sandbox", **dkim_table}]}, env)["email"][0]
    assert sandbox.dkim is not None  # type: ignore[union-attr]
    for table, message in (
        ({"dkim_selector": "mail2026", "dkim_key_env": "DKIM_KEY"}, "all three"),
        ({**dkim_table, "dkim_key_env": "NOT_A_KEY"}, "dkim_key: expected a PEM private key"),
        ({**dkim_table, "dkim_domain": "example org"}, "dkim_domain: expected a domain name"),
        ({**dkim_table, "dkim_selector": "a_b"}, "dkim_selector: expected a DNS label"),
        ({**dkim_table, "dkim_key": PEM}, "a secret is not written in the config"),
    ):
        with pytest.raises(ValueError, match=message) as error:
            parse_providers({"email": [{"type": "smtp", "host": "smtp.example.org", **table}]}, env)
        assert "not-a-key-secret-content" not in str(error.value) and PEM.splitlines()[1] not in str(error.value)
    with pytest.raises(ValueError, match="no settings"):
        parse_providers({"sms": [{"type": "sandbox", **dkim_table}]}, env)
    with pytest.raises(ValueError, match="unknown setting"):  # SendGrid signs itself: no DKIM settings there
        parse_providers({"email": [{"type": "sendgrid", "api_key_env": "DKIM_KEY", **dkim_table}]}, env)


async def test_a_node_whose_outbox_signs(tmp_path: Path) -> None:
    import trio

    from tests.providers.email_node import CODE_EMAIL, email_node

    providers = {"email": [{"type": "sandbox", "dkim_selector": "mail2026", "dkim_domain": "example.org", "dkim_key_env": "TEST_DKIM"}]}
    async with email_node(tmp_path, providers, {"TEST_DKIM": PEM}) as http:
        response = await http.post("/v1/notifications", json=CODE_EMAIL)
        nid = response.json()["notification_id"]
        with trio.fail_after(30):
            while (await http.get(f"/v1/notifications/{nid}")).json()["channels"]["email"]["status"] != "delivered":
                await trio.sleep(0.05)
    raw = (tmp_path / "data" / "outbox" / f"{nid}.eml").read_bytes()
    assert raw.startswith(b"DKIM-Signature:") and dkim.verify(raw, dnsfunc=dns(RECORD))
