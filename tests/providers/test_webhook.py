"""The webhook client (actors/clients/webhook.py) against a local endpoint: the Standard Webhooks signature checked by
an independent implementation (the `standardwebhooks` package), one test per row of docs/providers.md's Webhook table,
Slack's form, and the SSRF guard (actors/clients/ssrf.py): loopback, link-local, private, IPv6 loopback and a name that
resolves to loopback refused before any connection; the checked address is the one connected to, the name kept for the
Host header and TLS; no redirect followed; a slow endpoint timed out; a huge answer cut."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from standardwebhooks import Webhook, WebhookVerificationError

from actors.clients.provider_config import WebhookProvider, parse_providers
from actors.clients.ssrf import Resolver, address_problem
from actors.clients.webhook import WebhookClient, endpoint_secrets
from protocol.channels import Channel
from protocol.content import Content, WebhookContent
from protocol.lifecycle import Status
from protocol.messages import Delivery, PermanentFailure, RetryLater, Sent
from reactor.circuit_breaker import BreakerConfig
from tests.providers.asgi_server import Answer, Tls, serving
from tests.providers.webhook_receiver import Receiver, flooding

KEY = bytes(range(32))
OLD_KEY = bytes(range(100, 132))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OLD_SECRET = "whsec_" + base64.b64encode(OLD_KEY).decode()
LOOPBACK = ("127.0.0.1/32",)


def delivery(url: str, nid: str = "01JNOTIFICATION0000000000A", attempt: int = 1) -> Delivery:
    content = WebhookContent(title="Deploy <done> & dusted", body="build 42 is live", data={"build": "42"})
    return Delivery(nid, "u1", Channel.WEBHOOK, 1_767_225_600_000, Content(webhook=content), address=url, attempt=attempt,
                    category="deploys")


def client(
    allow: tuple[str, ...] = LOOPBACK, keys: tuple[bytes, ...] = (KEY,), resolver: Resolver | None = None, **settings: Any,
) -> WebhookClient:
    return WebhookClient(WebhookProvider(secrets=keys, allow_cidrs=allow, **{"timeout_s": 5.0, **settings}), resolver=resolver)


def verified(secret: str, received: Any) -> Any:
    """The body as the standardwebhooks package verifies it (raises WebhookVerificationError if the signature is wrong)."""
    return Webhook(secret).verify(received.body, received.headers)


@pytest.fixture
async def endpoint() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    async with serving(receiver) as url:
        receiver.url = url + "/hooks/herald"
        yield receiver


async def test_a_post_is_signed_as_standard_webhooks_and_verifies(endpoint: Receiver) -> None:
    outcome = await client().send(delivery(endpoint.url))
    assert isinstance(outcome, Sent) and outcome.status is Status.SENT and "204" in outcome.detail, outcome
    [got] = endpoint.received
    assert got.method == "POST" and got.path == "/hooks/herald" and got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == "01JNOTIFICATION0000000000A"
    assert verified(SECRET, got) == {
        "type": "notification", "timestamp": "2026-01-01T00:00:00.000Z",
        "data": {"notification_id": "01JNOTIFICATION0000000000A", "user_id": "u1", "priority": "normal", "category": "deploys",
                 "title": "Deploy <done> & dusted", "body": "build 42 is live", "data": {"build": "42"}},
    }
    with pytest.raises(WebhookVerificationError):  # the verifier does refuse: another key, a changed body
        verified(OLD_SECRET, got)
    got.body = got.body.replace(b"42", b"43")
    with pytest.raises(WebhookVerificationError):
        verified(SECRET, got)


async def test_while_rotating_each_key_signs_and_either_verifies(endpoint: Receiver) -> None:
    await client(keys=(KEY, OLD_KEY)).send(delivery(endpoint.url))
    [got] = endpoint.received
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert verified(SECRET, got) == verified(OLD_SECRET, got)


async def test_with_endpoint_keys_each_endpoint_verifies_with_its_own_and_no_other(endpoint: Receiver) -> None:
    """`endpoint_keys`: a POST to one URL is signed with that URL's key (HMAC-SHA256 of the deployment's key over the
    label and the URL, as docs/providers.md gives it), so its owner cannot sign for another endpoint; while the
    deployment's key rotates, each of its keys' derivations verifies."""
    hooks = client(keys=(KEY, OLD_KEY), endpoint_keys=True)
    first, second = endpoint.url + "/alice", endpoint.url + "/bob"
    for url in (first, second):
        assert isinstance(await hooks.send(delivery(url)), Sent)
    to_first, to_second = endpoint.received
    derived = "whsec_" + base64.b64encode(hmac.new(KEY, b"herald webhook endpoint key\x00" + first.encode(),
                                                    hashlib.sha256).digest()).decode()
    assert endpoint_secrets((KEY, OLD_KEY), first)[0] == derived  # the documented derivation, computed apart
    for secret in endpoint_secrets((KEY, OLD_KEY), first):
        assert verified(secret, to_first)["data"]["notification_id"] == "01JNOTIFICATION0000000000A"
        with pytest.raises(WebhookVerificationError):  # the first endpoint's key does not verify the second's POSTs
            verified(secret, to_second)
    verified(endpoint_secrets((KEY,), second)[0], to_second)
    for got in (to_first, to_second):
        with pytest.raises(WebhookVerificationError):  # nor does the deployment's key itself
            verified(SECRET, got)


async def test_a_retry_keeps_the_webhook_id(endpoint: Receiver) -> None:
    endpoint.script.append(Answer(503, {"error": "down"}, {"Retry-After": "7"}))
    hooks = client()
    first = await hooks.send(delivery(endpoint.url))
    assert isinstance(first, RetryLater) and not first.throttled and first.after_s == 7 and "503" in first.error, first
    second = await hooks.send(delivery(endpoint.url, attempt=2))
    assert isinstance(second, Sent), second
    ids = [r.headers["webhook-id"] for r in endpoint.received]
    assert ids == ["01JNOTIFICATION0000000000A"] * 2
    for got in endpoint.received:
        verified(SECRET, got)


@pytest.mark.parametrize(("answer", "verdict", "text"), [
    (Answer(200, {"ok": True}), Sent, "200"),
    (Answer(202), Sent, "202"),
    (Answer(410, {"error": "gone"}), PermanentFailure, "410"),
    (Answer(429, {"error": "slow down"}, {"Retry-After": "3"}), RetryLater, "429"),
    (Answer(400, {"error": "bad"}), PermanentFailure, "400"),
    (Answer(404), PermanentFailure, "404"),
    (Answer(500, {"error": "boom"}), RetryLater, "500"),
    (Answer(502), RetryLater, "502"),
])
async def test_each_answer_gets_its_verdict(endpoint: Receiver, answer: Answer, verdict: type, text: str) -> None:
    endpoint.script.append(answer)
    outcome = await client().send(delivery(endpoint.url))
    assert type(outcome) is verdict, outcome
    assert text in (outcome.detail if isinstance(outcome, Sent) else outcome.error), outcome
    gone = answer.status == 410
    assert outcome.unregistered_tokens == ([endpoint.url] if gone else [])  # 410: the URL leaves the user's contact points
    if isinstance(outcome, RetryLater):
        throttled = answer.status == 429  # the endpoint's own rate: no breaker failure, no one else's webhooks held
        assert outcome.throttled is throttled and outcome.after_s == (3 if throttled else None)
        assert outcome.recipient  # a 5xx too: the endpoint's own breaker counts it, not the channel's


async def test_a_failing_endpoint_opens_its_own_breaker_and_no_one_elses(endpoint: Receiver) -> None:
    hooks = client(endpoint_breaker=BreakerConfig(failure_threshold=3, open_timeout_s=0.5, success_threshold=1))
    other = Receiver()
    async with serving(other) as other_url:
        endpoint.script.extend([Answer(503)] * 3)
        for n in range(3):
            failed = await hooks.send(delivery(endpoint.url + f"/user{n}"))  # another path: the same server
            assert isinstance(failed, RetryLater) and failed.recipient and "503" in failed.error, failed
        held = await hooks.send(delivery(endpoint.url))
        assert isinstance(held, RetryLater) and held.recipient and "circuit is open" in held.error, held
        assert len(endpoint.received) == 3  # not called while its breaker is open
        assert isinstance(await hooks.send(delivery(other_url + "/hooks/x")), Sent)  # another server: called
        assert len(other.received) == 1
        await trio.sleep(0.6)  # the open timeout: one delivery probes, and its success closes the breaker
        assert isinstance(await hooks.send(delivery(endpoint.url)), Sent)
        assert isinstance(await hooks.send(delivery(endpoint.url)), Sent)
        assert len(endpoint.received) == 5 and (hooks.breakers.rejected, hooks.breakers.opened) == (1, 1)


async def test_a_slack_url_gets_text_and_no_signature(endpoint: Receiver) -> None:
    slack = client(slack_prefixes=(endpoint.url,))
    outcome = await slack.send(delivery(endpoint.url + "/T000/B000/XXXX"))
    assert isinstance(outcome, Sent), outcome
    [got] = endpoint.received
    assert json.loads(got.body) == {"text": "*Deploy &lt;done&gt; &amp; dusted*\nbuild 42 is live"}
    assert not {"webhook-id", "webhook-timestamp", "webhook-signature"} & set(got.headers)


# -- the SSRF guard


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/hooks/herald",
    "http://[::1]:{port}/hooks/herald",
    "http://localhost:{port}/hooks/herald",  # a name that resolves to loopback
    "http://169.254.169.254/latest/meta-data/",  # the cloud's metadata service
    "http://10.1.2.3/hook",
    "http://192.168.0.1/hook",
    "http://100.64.0.1/hook",
    "http://[fd00::1]/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://0.0.0.0:{port}/hook",
])
async def test_an_address_that_is_not_public_is_refused_before_connecting(endpoint: Receiver, url: str) -> None:
    port = endpoint.url.split(":")[2].split("/")[0]
    hooks = client(allow=())
    outcome = await hooks.send(delivery(url.format(port=port)))
    assert isinstance(outcome, PermanentFailure) and "refused" in outcome.error, outcome
    assert not outcome.dead_letter and outcome.unregistered_tokens == []
    assert endpoint.received == [] and hooks.guard.refused == 1


async def test_the_allow_list_lets_its_networks_through(endpoint: Receiver) -> None:
    assert isinstance(await client(allow=("127.0.0.0/8",)).send(delivery(endpoint.url)), Sent)
    outcome = await client(allow=("10.0.0.0/8",)).send(delivery(endpoint.url))  # another network: still refused
    assert isinstance(outcome, PermanentFailure) and "127.0.0.1 is loopback" in outcome.error, outcome
    assert len(endpoint.received) == 1


def test_the_address_rules() -> None:
    allowed = (__import__("ipaddress").ip_network("127.0.0.1/32"),)
    for address in ("127.0.0.1", "::1", "169.254.169.254", "fe80::1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "fc00::1",
                    "100.64.0.1", "224.0.0.1", "ff02::1", "0.0.0.0", "::", "240.0.0.1", "255.255.255.255", "::ffff:10.0.0.1",
                    "64:ff9b::7f00:1", "2002:7f00:1::1"):
        assert address_problem(address) is not None, address
    for address in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4007:80c::200e"):
        assert address_problem(address) is None, address
    assert address_problem("127.0.0.1", allowed) is None and address_problem("127.0.0.2", allowed) is not None


async def test_every_resolved_address_is_checked_and_the_checked_one_is_connected_to(endpoint: Receiver) -> None:
    port = int(endpoint.url.split(":")[2].split("/")[0])
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return {"hooks.example.test": ["127.0.0.1"], "mixed.example.test": ["8.8.8.8", "127.0.0.1"]}[host]

    hooks = client(resolver=resolver)
    # the name is known only to this resolver: the connection went to the address it gave; the Host header keeps the name
    outcome = await hooks.send(delivery(f"http://hooks.example.test:{port}/hooks/herald"))
    assert isinstance(outcome, Sent), outcome
    assert endpoint.received[0].headers["host"] == f"hooks.example.test:{port}" and asked == ["hooks.example.test"]
    # one public and one loopback address: refused, though the first would pass (a later connection could get the other)
    refused = await client(allow=(), resolver=resolver).send(delivery(f"http://mixed.example.test:{port}/hooks/herald"))
    assert isinstance(refused, PermanentFailure) and "mixed.example.test resolves to 127.0.0.1 is loopback" in refused.error
    assert len(endpoint.received) == 1


async def test_tls_checks_the_certificate_against_the_name_not_the_address(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("hooks.example.test")  # not 127.0.0.1: a check against the address would fail
    tls = Tls(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    ca.cert_pem.write_to_path(str(tls.ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(tls.cert_file))
    cert.private_key_pem.write_to_path(str(tls.key_file))

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    receiver = Receiver()
    async with serving(receiver, tls) as url:
        port = url.rsplit(":", 1)[1]
        named = await client(resolver=resolver, ca_file=tls.ca_file).send(delivery(f"https://hooks.example.test:{port}/h"))
        assert isinstance(named, Sent), named
        by_address = await client(ca_file=tls.ca_file).send(delivery(f"https://127.0.0.1:{port}/h"))
        assert isinstance(by_address, RetryLater) and "certificate" in by_address.error.lower(), by_address
    assert len(receiver.received) == 1 and verified(SECRET, receiver.received[0])["data"]["title"].startswith("Deploy")


async def test_a_redirect_is_not_followed(endpoint: Receiver) -> None:
    endpoint.script.append(Answer(307, None, {"Location": endpoint.url + "/elsewhere"}))
    outcome = await client().send(delivery(endpoint.url))
    assert isinstance(outcome, PermanentFailure) and "307 redirect not followed" in outcome.error, outcome
    assert [r.path for r in endpoint.received] == ["/hooks/herald"]


async def test_a_slow_endpoint_times_out(endpoint: Receiver) -> None:
    endpoint.script.append(Answer(200, {"ok": True}, delay_s=30))
    outcome = await client(timeout_s=0.3).send(delivery(endpoint.url))
    assert isinstance(outcome, RetryLater) and "timed out" in outcome.error, outcome


async def test_an_answer_trickled_a_byte_at_a_time_is_cut_off(endpoint: Receiver) -> None:
    endpoint.script.append(Answer(200, raw=b"x" * 10_000, drip_s=0.05))
    outcome = await client(timeout_s=0.3).send(delivery(endpoint.url))
    assert isinstance(outcome, RetryLater) and "timed out" in outcome.error, outcome


async def test_a_huge_answer_is_read_up_to_the_limit_and_the_connection_dropped() -> None:
    async with flooding() as flood:
        outcome = await client(max_answer_bytes=1024).send(delivery(flood.url))
        with trio.fail_after(10):
            await flood.closed.wait()  # the client hung up: the server's writes broke
    assert isinstance(outcome, RetryLater) and "500" in outcome.error and len(outcome.error) < 300, outcome
    assert flood.requests == 1 and flood.written < flood.total // 4, (flood.written, flood.total)


async def test_a_compressed_answer_is_not_inflated(endpoint: Receiver) -> None:
    import gzip
    import tracemalloc

    bomb = gzip.compress(b"\0" * (128 * 1024 * 1024), compresslevel=9)  # 128 MiB of zeros in ~130 KB
    endpoint.script.append(Answer(500, raw=bomb, headers={"content-encoding": "gzip", "content-type": "text/plain"}))
    hooks = client(max_answer_bytes=1024)
    tracemalloc.start()
    try:
        outcome = await hooks.send(delivery(endpoint.url))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(outcome, RetryLater) and "500" in outcome.error, outcome
    assert endpoint.received[0].headers["accept-encoding"] == "identity"
    assert peak < 16 * 1024 * 1024, peak  # inflating even one network chunk of it would take tens of MiB


async def test_a_url_that_breaks_the_rules_is_refused_without_a_request(endpoint: Receiver) -> None:
    for url in ("ftp://127.0.0.1/x", "http://user:pw@127.0.0.1/x", "http://127.0.0.1:99999/x"):
        outcome = await client().send(delivery(url))
        assert isinstance(outcome, PermanentFailure), (url, outcome)
    assert endpoint.received == []


# -- configuration


def test_the_provider_configuration_and_its_errors(tmp_path: Path) -> None:
    env = {"HOOK_SECRET": f"{SECRET} {OLD_SECRET}"}
    [spec] = parse_providers({"webhook": [{"type": "webhook", "secret_env": "HOOK_SECRET", "allow_cidrs": ["127.0.0.1/32"]}]},
                             env)["webhook"]
    assert isinstance(spec, WebhookProvider) and spec.secrets == (KEY, OLD_KEY) and spec.allow_cidrs == ("127.0.0.1/32",)
    assert SECRET not in repr(spec) and "secrets" not in repr(spec)
    assert spec.endpoint_breaker == BreakerConfig(failure_threshold=5, open_timeout_s=60.0, success_threshold=1)
    [tuned] = parse_providers({"webhook": [{"type": "webhook", "secret_env": "HOOK_SECRET", "endpoint_failure_threshold": 2,
                                            "endpoint_open_timeout_s": 300}]}, env)["webhook"]
    assert isinstance(tuned, WebhookProvider) and tuned.endpoint_breaker == BreakerConfig(2, 300.0, 1)
    cases = [
        ({"type": "webhook", "secret_env": "HOOK_SECRET", "endpoint_failure_threshold": 0}, "endpoint_failure_threshold"),
        ({"type": "webhook", "secret_env": "HOOK_SECRET", "endpoint_keys": "yes"}, "endpoint_keys: expected true or false"),
        ({"type": "webhook", "secret_env": "HOOK_SECRET", "endpoint_open_timeout_s": -1}, "endpoint_open_timeout_s"),
        ({"type": "webhook"}, "providers.webhook[0].secret_env: required"),
        ({"type": "webhook", "secret": SECRET}, "a secret is not written in the config"),
        ({"type": "webhook", "secret_env": "BAD"}, "key 1 is not of the form whsec_<base64>"),
        ({"type": "webhook", "secret_env": "SHORT"}, "key 1 is 3 bytes"),
        ({"type": "webhook", "secret_env": "HOOK_SECRET", "allow_cidrs": ["localhost"]}, "allow_cidrs: expected a CIDR"),
        ({"type": "webhook", "secret_env": "HOOK_SECRET", "slack_prefixes": ["hooks.slack.com"]}, "slack_prefixes[0]"),
        ({"type": "webhook", "secret_env": "HOOK_SECRET", "follow_redirects": True}, "follow_redirects: unknown setting"),
        ({"type": "twilio", "secret_env": "HOOK_SECRET"}, "a twilio provider sends sms, not webhook"),
    ]
    env = {**env, "BAD": "not-a-secret-value", "SHORT": "whsec_YWJj"}
    for table, message in cases:
        with pytest.raises(ValueError) as caught:
            parse_providers({"webhook": [table]}, env)
        assert message in str(caught.value), (table, str(caught.value))
        assert "not-a-secret-value" not in str(caught.value) and SECRET not in str(caught.value)
