"""A whole node sending email through SMTP (issue 12 items 1-2): configured like an operator would, STARTTLS with
the test's CA, AUTH with a password from an environment variable, a greylisting 451 on the first RCPT: the
notification is retried, arrives once, parseable, and the password shows nowhere (logs, statuses, /metrics, circuits)."""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path

import pytest
import trustme

from tests.providers.email_node import email_node, send_until_sent
from tests.providers.smtp_server import PASSWORD, USER, SmtpServer


async def test_a_node_sends_through_smtp_retries_a_451_and_never_shows_the_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with SmtpServer(starttls=context, auth=True) as server:
        server.handler.rcpt_replies["bob@example.org"] = ["451 4.7.1 Greylisted, try again"]
        providers = {"email": [{"type": "smtp", "host": "127.0.0.1", "port": server.port, "tls": "starttls", "ca_file": str(ca_file),
                                "username": USER, "password_env": "TEST_SMTP_PASSWORD", "timeout_s": 10}]}
        async with email_node(tmp_path, providers, {"TEST_SMTP_PASSWORD": PASSWORD}) as client:
            nid, status = await send_until_sent(client)
            pages = [await client.get("/metrics"), await client.get("/v1/admin/circuits")]
            assert [p.status_code for p in pages] == [200, 200]
            shown = [json.dumps(status), *(p.text for p in pages)]
        [got] = server.handler.received
        assert got.rcpt_tos == ["bob@example.org"] and got.message["Subject"] == "Your code"
        assert got.message["X-Herald-Notification-Id"] == nid
        assert server.handler.logins and all(ok for _, ok in server.handler.logins)
        assert "451" in json.dumps(status["channels"]["email"]), status  # the retry is in the timeline
        for text in [*shown, caplog.text]:
            assert PASSWORD not in text
