"""`herald providers check` (actors/clients/checks.py): every configured provider checked against its local emulator
or server, a line each; wrong credentials fail with the provider's code, and no secret is printed."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from actors.cli import main
from tests.providers import sendgrid_emulator
from tests.providers.apns_emulator import KEY_ID, KEY_PEM, TEAM_ID, TOPIC, ApnsEmulator
from tests.providers.asgi_server import make_tls, serving
from tests.providers.fcm_emulator import FcmEmulator, service_account
from tests.providers.smtp_server import PASSWORD, USER, SmtpServer
from tests.providers.twilio_emulator import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioEmulator


async def run_check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], providers: dict[str, Any],
                    secrets: dict[str, str]) -> tuple[int, list[str]]:
    monkeypatch.setenv("HERALD_PROVIDERS", json.dumps(providers))
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    code = await trio.to_thread.run_sync(main, ["providers", "check"])  # its own trio.run, in a thread
    return code, capsys.readouterr().out.splitlines()


async def test_every_provider_is_checked_and_wrong_credentials_fail_without_being_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    tls = make_tls(tmp_path)
    ca = trustme.CA()
    smtp_ca = tmp_path / "smtp-ca.pem"
    ca.cert_pem.write_to_path(str(smtp_ca))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    twilio, fcm, apns = TwilioEmulator(), FcmEmulator(), ApnsEmulator()
    with SmtpServer(starttls=context, auth=True) as smtp:
        async with sendgrid_emulator.running_emulator() as sendgrid, serving(twilio) as twilio.url, \
                serving(fcm, tls) as fcm.url, serving(apns, tls) as apns.url:
            providers = {
                "email": [{"type": "smtp", "host": "127.0.0.1", "port": smtp.port, "ca_file": str(smtp_ca), "username": USER,
                           "password_env": "T_SMTP", "timeout_s": 10},
                          {"type": "sendgrid", "api_key_env": "T_SENDGRID", "base_url": sendgrid.url, "timeout_s": 10}],
                "sms": [{"type": "twilio", "account_sid": ACCOUNT_SID, "auth_token_env": "T_TWILIO", "from_number": FROM_NUMBER,
                         "base_url": twilio.url}],
                "push": [{"type": "fcm", "credentials_env": "T_FCM", "base_url": fcm.url, "ca_file": str(tls.ca_file)},
                         {"type": "apns", "key_env": "T_APNS", "key_id": KEY_ID, "team_id": TEAM_ID, "topic": TOPIC,
                          "base_url": apns.url, "ca_file": str(tls.ca_file)}],
            }
            good = {"T_SMTP": PASSWORD, "T_SENDGRID": sendgrid_emulator.API_KEY, "T_TWILIO": AUTH_TOKEN,
                    "T_FCM": service_account(fcm.token_url), "T_APNS": KEY_PEM}
            code, lines = await run_check(monkeypatch, capsys, providers, good)
            assert code == 0 and [line.split(": ")[0:2] for line in lines] == [
                ["email smtp", "ok"], ["email sendgrid", "ok"], ["sms twilio", "ok"], ["push fcm", "ok"], ["push apns", "ok"]], lines
            assert "STARTTLS" not in lines[0] and "EHLO, TLS, AUTH accepted" in lines[0] and "HTTP/2" in lines[3], lines
            assert fcm.accepted == [] and apns.accepted == [] and twilio.accepted == [] and sendgrid.accepted == []  # nothing sent

            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import ec, rsa

            other_ec = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
            other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
            bad = {"T_SMTP": "wrong-Smtp-Pass-1", "T_SENDGRID": "SG.wrong-Key-2", "T_TWILIO": "wrong-Twilio-Token-3",
                   "T_FCM": service_account(fcm.token_url, other_rsa), "T_APNS": other_ec}
            code, lines = await run_check(monkeypatch, capsys, providers, bad)
            assert code == 1 and all(": FAILED: " in line for line in lines), lines
            for fragment in ("AUTH: 535", "401", "401 20003", "access token: 400 invalid_grant", "403 InvalidProviderToken"):
                assert any(fragment in line for line in lines), (fragment, lines)
            printed = "\n".join(lines)
            for secret in [*bad.values(), *good.values()]:
                for piece in secret.splitlines()[:2]:
                    assert len(piece) < 12 or piece.startswith("-----") or piece not in printed, piece

            twilio.account_status = "suspended"
            code, lines = await run_check(monkeypatch, capsys, {"sms": providers["sms"]}, good)
            assert code == 1 and lines == ["sms twilio: FAILED: the account is 'suspended', not active"], lines


def test_without_providers_there_is_nothing_to_check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("HERALD_PROVIDERS", raising=False)
    assert main(["providers", "check"]) == 0
    assert capsys.readouterr().out.strip() == "no providers configured: every channel sends to its sandbox"


async def test_a_webhook_provider_is_checked_without_a_request(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.providers.test_webhook import OLD_SECRET, SECRET

    providers = {"webhook": [{"type": "webhook", "secret_env": "T_HOOK", "allow_cidrs": ["10.20.0.0/16"]}]}
    code, lines = await run_check(monkeypatch, capsys, providers, {"T_HOOK": f"{SECRET} {OLD_SECRET}"})
    assert code == 0 and lines == ["webhook webhook: ok: 2 signing key(s); destinations: 10.20.0.0/16"], lines


def test_webhook_secret_prints_an_endpoints_own_secrets(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`herald providers webhook-secret URL`: with endpoint_keys, the secrets that URL's owner verifies with (one per
    deployment key while rotating); without, none (every endpoint has the deployment's); a bad URL or no provider: an
    error that says so."""
    import base64

    from actors.clients.webhook import endpoint_secrets

    keys = (bytes(range(32)), bytes(range(100, 132)))
    monkeypatch.setenv("T_HOOK", " ".join("whsec_" + base64.b64encode(k).decode() for k in keys))
    hook = {"type": "webhook", "secret_env": "T_HOOK", "endpoint_keys": True}
    monkeypatch.setenv("HERALD_PROVIDERS", json.dumps({"webhook": [hook]}))
    url = "https://hooks.example.org/alice"
    assert main(["providers", "webhook-secret", url]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == endpoint_secrets(keys, url) and len(set(printed)) == 2
    assert main(["providers", "webhook-secret", "https://hooks.example.org/bob"]) == 0
    assert capsys.readouterr().out.split()[0] != printed[0]
    assert main(["providers", "webhook-secret", "ftp://x/y"]) != 0
    assert "url: the URL" in capsys.readouterr().err
    monkeypatch.setenv("HERALD_PROVIDERS", json.dumps({"webhook": [{**hook, "endpoint_keys": False}]}))
    assert main(["providers", "webhook-secret", url]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "endpoint_keys is off" in err and "whsec_" not in err
    monkeypatch.delenv("HERALD_PROVIDERS")
    assert main(["providers", "webhook-secret", url]) != 0
    assert "no webhook provider is configured" in capsys.readouterr().err
