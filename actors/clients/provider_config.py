"""Provider configuration: per channel, the providers that send it, each with its type, settings and credentials.

TOML (`[[herald.providers.email]]`, one table per provider, in order) or the env var
HERALD_PROVIDERS holding the same structure as JSON. A channel without providers keeps
its sandbox client (the zero-config default). Types: `sandbox` (every channel), `smtp` and
`sendgrid` (email), `twilio` (sms), `fcm` and `apns` (push), `webhook` (webhook).

Credentials are never in the config itself: a secret setting is given as `<name>_env`
(the name of an environment variable) or `<name>_file` (a file holding it, one trailing
newline stripped). They are read at start-up, held as a `Secret` (its repr and str are
`***`), and no error message carries a secret's value. A channel with several providers
fails over from one to the next, in order (actors/clients/failover.py).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from protocol.channels import Channel
from reactor.circuit_breaker import BreakerConfig

if TYPE_CHECKING:  # dkim.py imports Secret from here
    from .dkim import DkimSettings

TLS_MODES = ("starttls", "implicit", "none")
_DEFAULT_PORTS = {"starttls": 587, "implicit": 465, "none": 25}
PROVIDER_TYPES: dict[str, tuple[str, ...]] = {  # type -> the channels it sends
    "sandbox": tuple(c.value for c in Channel if c is not Channel.WEB),
    "smtp": ("email",),
    "sendgrid": ("email",),
    "twilio": ("sms",),
    "fcm": ("push",),
    "apns": ("push",),
    "webhook": ("webhook",),
}
# settings given only as <name>_env or <name>_file
SECRETS = {
    "sandbox": ("dkim_key",), "smtp": ("password", "dkim_key"), "sendgrid": ("api_key", "webhook_key"), "twilio": ("auth_token",),
    "fcm": ("credentials",), "apns": ("key",), "webhook": ("secret",),
}
MAX_PROVIDERS = 4  # per channel: the first that can take a delivery sends it (actors/clients/failover.py)
MAX_TTL_S = 28 * 86_400  # the longest a push provider is asked to keep an undelivered notification (FCM's own limit)


class Secret:
    """A credential read at start-up; shown as *** wherever it is printed, logged or formatted."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class SandboxProvider:
    dkim: DkimSettings | None = None  # email: the .eml outbox's messages DKIM-signed (actors/clients/dkim.py)
    type: str = "sandbox"


@dataclass(frozen=True)
class SmtpProvider:
    """An SMTP relay (actors/clients/smtp.py)."""

    host: str
    port: int
    tls: str = "starttls"  # starttls (required, not opportunistic), implicit (SMTPS), none (plain: loopback relays only)
    username: str = ""
    password: Secret | None = field(default=None, repr=False)
    ca_file: Path | None = None  # trusted CAs for the server's certificate (default: the system's)
    helo_name: str = "localhost"
    timeout_s: float = 30.0  # each step: connect, a command's reply, the message's final reply
    pool_size: int = 4  # connections at most, each sending one message at a time
    messages_per_connection: int = 100  # then QUIT and open a new one
    idle_s: float = 30.0  # an idle connection older than this is closed rather than reused
    dkim: DkimSettings | None = None  # DKIM-sign each message (actors/clients/dkim.py)
    type: str = "smtp"


@dataclass(frozen=True)
class SendgridProvider:
    """SendGrid's v3 Mail Send API (actors/clients/sendgrid.py)."""

    api_key: Secret = field(repr=False)
    base_url: str = "https://api.sendgrid.com"  # another only for a regional endpoint or a test's emulator
    # the Event Webhook's verification key (base64, as SendGrid shows it): receipts at POST /v1/webhooks/sendgrid
    webhook_key: Secret | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    max_connections: int = 16
    type: str = "sendgrid"


@dataclass(frozen=True)
class TwilioProvider:
    """Twilio's Programmable Messaging API (actors/clients/twilio.py)."""

    account_sid: str
    auth_token: Secret = field(repr=False)
    from_number: str = ""  # E.164; or messaging_service_sid (one of the two)
    messaging_service_sid: str = ""
    base_url: str = "https://api.twilio.com"
    timeout_s: float = 30.0
    max_connections: int = 16
    ca_file: Path | None = None
    type: str = "twilio"


@dataclass(frozen=True)
class FcmProvider:
    """Firebase Cloud Messaging's HTTP v1 API (actors/clients/fcm.py), as a service account."""

    client_email: str  # the service account, from its JSON key file
    private_key: Secret = field(repr=False)  # its RS256 key (PEM), from the same file
    project_id: str
    private_key_id: str = ""
    token_url: str = "https://oauth2.googleapis.com/token"  # the key file's token_uri, unless set
    base_url: str = "https://fcm.googleapis.com"
    timeout_s: float = 30.0
    ttl_s: int = 86_400  # android.ttl and apns-expiration: how long FCM keeps it for an offline device
    max_connections: int = 4  # HTTP/2 connections; each carries many requests at once
    ca_file: Path | None = None
    type: str = "fcm"


@dataclass(frozen=True)
class ApnsProvider:
    """Apple Push Notification service over HTTP/2 with a provider token (actors/clients/apns.py)."""

    key: Secret = field(repr=False)  # the .p8 signing key (PEM, ES256)
    key_id: str
    team_id: str
    topic: str  # the app's bundle id
    base_url: str = "https://api.push.apple.com"  # https://api.sandbox.push.apple.com for development builds
    timeout_s: float = 30.0
    ttl_s: int = 86_400  # apns-expiration: now + this
    token_refresh_s: float = 2400.0  # a new provider token this often: Apple refuses one older than 60 min, or renewed within 20
    max_connections: int = 4
    ca_file: Path | None = None
    type: str = "apns"


@dataclass(frozen=True)
class WebhookProvider:
    """Signed POSTs to the users' own URLs, Standard Webhooks style (actors/clients/webhook.py)."""

    secrets: tuple[bytes, ...] = field(repr=False)  # the signing keys (whsec_<base64>, decoded): each signs, the first is current
    timeout_s: float = 10.0
    max_connections: int = 64
    max_answer_bytes: int = 4096  # of an endpoint's answer, read; the rest dropped with the connection
    allow_cidrs: tuple[str, ...] = ()  # networks a URL may reach although they are not public (loopback, private...)
    slack_prefixes: tuple[str, ...] = ("https://hooks.slack.com/",)  # URLs posted as Slack messages ({"text"}), unsigned
    ca_file: Path | None = None
    endpoint_keys: bool = False  # sign each endpoint's POSTs with its own key, derived from the secret and its URL
    # each endpoint's (origin's) own breaker (actors/clients/endpoint_breakers.py): its failures hold back only its deliveries
    endpoint_breaker: BreakerConfig = BreakerConfig(failure_threshold=5, open_timeout_s=60.0, success_threshold=1)
    max_endpoint_breakers: int = 10_000
    type: str = "webhook"


ProviderSpec = SandboxProvider | SmtpProvider | SendgridProvider | TwilioProvider | FcmProvider | ApnsProvider | WebhookProvider
_SENDGRID_KEYS: dict[str, type] = {"base_url": str, "timeout_s": float, "max_connections": int}
_HTTP_KEYS: dict[str, type] = {"base_url": str, "timeout_s": float, "max_connections": int, "ca_file": Path}
_TWILIO_KEYS: dict[str, type] = {**_HTTP_KEYS, "account_sid": str, "from_number": str, "messaging_service_sid": str}
_FCM_KEYS: dict[str, type] = {**_HTTP_KEYS, "project_id": str, "token_url": str, "ttl_s": int}
_APNS_KEYS: dict[str, type] = {**_HTTP_KEYS, "key_id": str, "team_id": str, "topic": str, "ttl_s": int, "token_refresh_s": float}

_DKIM_KEYS: dict[str, type] = {"dkim_selector": str, "dkim_domain": str}  # with dkim_key_env / dkim_key_file
_SMTP_KEYS: dict[str, type] = {
    "host": str, "port": int, "tls": str, "username": str, "ca_file": Path, "helo_name": str,
    "timeout_s": float, "pool_size": int, "messages_per_connection": int, "idle_s": float, **_DKIM_KEYS,
}


def _value(where: str, kind: type, raw: Any) -> Any:
    if kind is bool:
        if not isinstance(raw, bool):
            raise ValueError(f"{where}: expected true or false, got {raw!r}")
        return raw
    if kind is int:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise ValueError(f"{where}: expected an integer of at least 1, got {raw!r}")
        return raw
    if kind is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 < raw < 86_400:
            raise ValueError(f"{where}: expected a number of seconds above 0, got {raw!r}")
        return float(raw)
    if not isinstance(raw, str) or not raw or any(ch in raw for ch in "\x00\r\n"):
        raise ValueError(f"{where}: expected a non-empty string on one line, got {raw!r}")
    return Path(raw) if kind is Path else raw


def _secret(where: str, name: str, table: dict[str, Any], env: Mapping[str, str]) -> Secret | None:
    """The secret `name` from `<name>_env` or `<name>_file`; never from the table itself."""
    if name in table:
        raise ValueError(f"{where}.{name}: a secret is not written in the config: name an environment variable "
                         f"({name}_env) or a file ({name}_file) that holds it")
    by_env, by_file = table.get(f"{name}_env"), table.get(f"{name}_file")
    if by_env is not None and by_file is not None:
        raise ValueError(f"{where}: give {name}_env or {name}_file, not both")
    if by_env is not None:
        variable = _value(f"{where}.{name}_env", str, by_env)
        if variable not in env:
            raise ValueError(f"{where}.{name}_env: the environment variable {variable} is not set")
        return Secret(env[variable])
    if by_file is not None:
        path = _value(f"{where}.{name}_file", Path, by_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:  # the path is not the secret; the file's content is never shown
            raise ValueError(f"{where}.{name}_file: cannot read {path}: {type(exc).__name__}") from None
        return Secret(text[:-1] if text.endswith("\n") else text)
    return None


def _check_keys(where: str, kind: str, table: dict[str, Any], keys: dict[str, type]) -> None:
    secrets = set(SECRETS[kind])
    known = set(keys) | {"type"} | {f"{s}_{how}" for s in secrets for how in ("env", "file")} | secrets
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown setting; the {kind} settings are {', '.join(sorted(known - secrets))}")


def _sendgrid(where: str, table: dict[str, Any], env: Mapping[str, str]) -> SendgridProvider:
    _check_keys(where, "sendgrid", table, _SENDGRID_KEYS)
    values = {key: _value(f"{where}.{key}", _SENDGRID_KEYS[key], raw) for key, raw in table.items() if key in _SENDGRID_KEYS}
    if not str(values.get("base_url", "https://")).startswith(("https://", "http://")):
        raise ValueError(f"{where}.base_url: expected an http(s) URL, got {values['base_url']!r}")
    api_key = _secret(where, "api_key", table, env)
    if api_key is None:
        raise ValueError(f"{where}.api_key_env: required (or api_key_file) for a sendgrid provider")
    webhook_key = _secret(where, "webhook_key", table, env)
    if webhook_key is not None:
        from ..domain.receipts import load_sendgrid_key

        try:
            load_sendgrid_key(webhook_key.reveal())
        except ValueError as exc:
            raise ValueError(f"{where}.webhook_key: {exc}") from None
    return SendgridProvider(api_key=api_key, webhook_key=webhook_key, **values)


def _http_values(where: str, kind: str, table: dict[str, Any], keys: dict[str, type]) -> dict[str, Any]:
    _check_keys(where, kind, table, keys)
    values = {key: _value(f"{where}.{key}", keys[key], raw) for key, raw in table.items() if key in keys}
    for key in ("base_url", "token_url"):
        if key in values and not values[key].startswith(("https://", "http://")):
            raise ValueError(f"{where}.{key}: expected an http(s) URL, got {values[key]!r}")
    if values.get("ttl_s", 1) > MAX_TTL_S:
        raise ValueError(f"{where}.ttl_s: expected at most {MAX_TTL_S} seconds (28 days), got {values['ttl_s']!r}")
    return values


def _required_secret(where: str, kind: str, name: str, table: dict[str, Any], env: Mapping[str, str]) -> Secret:
    secret = _secret(where, name, table, env)
    if secret is None:
        raise ValueError(f"{where}.{name}_env: required (or {name}_file) for a {kind} provider")
    return secret


def _twilio(where: str, table: dict[str, Any], env: Mapping[str, str]) -> TwilioProvider:
    values = _http_values(where, "twilio", table, _TWILIO_KEYS)
    if "account_sid" not in values:
        raise ValueError(f"{where}.account_sid: required for a twilio provider (AC...)")
    if ("from_number" in values) == ("messaging_service_sid" in values):
        raise ValueError(f"{where}: give from_number (E.164) or messaging_service_sid, one of the two")
    number = values.get("from_number")
    if number is not None and not (number.startswith("+") and number[1:].isdigit() and 2 <= len(number) <= 16):
        raise ValueError(f"{where}.from_number: expected an E.164 number (+ and up to 15 digits), got {number!r}")
    return TwilioProvider(auth_token=_required_secret(where, "twilio", "auth_token", table, env), **values)


def _private_key(where: str, pem: str, curve: bool) -> None:
    """Refuse a key that is not a PEM private key of the kind the provider signs with (the key is never shown)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        key = None
    wanted = ec.EllipticCurvePrivateKey if curve else rsa.RSAPrivateKey
    if not isinstance(key, wanted):
        raise ValueError(f"{where}: expected a PEM private key ({'EC P-256, the .p8 file' if curve else 'RSA'}); "
                         "what was given is not one (its content is not shown)")


def _fcm(where: str, table: dict[str, Any], env: Mapping[str, str]) -> FcmProvider:
    """The service account's JSON key file (credentials_file / credentials_env) gives the email, key and project."""
    values = _http_values(where, "fcm", table, _FCM_KEYS)
    raw = _required_secret(where, "fcm", "credentials", table, env)
    try:
        account = json.loads(raw.reveal())
    except ValueError:
        account = None
    if not isinstance(account, dict) or account.get("type") != "service_account" or not all(
        isinstance(account.get(k), str) and account[k] for k in ("client_email", "private_key")
    ):
        raise ValueError(f"{where}.credentials: expected a service account's JSON key file (type service_account, client_email, "
                         "private_key); what was given is not one (its content is not shown)")
    _private_key(f"{where}.credentials.private_key", account["private_key"], curve=False)
    values.setdefault("project_id", account.get("project_id"))
    if not isinstance(values["project_id"], str) or not values["project_id"]:
        raise ValueError(f"{where}.project_id: required (the key file has no project_id)")
    if "token_url" not in values and isinstance(account.get("token_uri"), str):
        values["token_url"] = _value(f"{where}.credentials.token_uri", str, account["token_uri"])
    return FcmProvider(client_email=account["client_email"], private_key=Secret(account["private_key"]),
                       private_key_id=str(account.get("private_key_id") or ""), **values)


def _apns(where: str, table: dict[str, Any], env: Mapping[str, str]) -> ApnsProvider:
    values = _http_values(where, "apns", table, _APNS_KEYS)
    for key in ("key_id", "team_id", "topic"):
        if key not in values:
            raise ValueError(f"{where}.{key}: required for an apns provider")
    refresh = values.get("token_refresh_s", 2400.0)
    if not 1200 <= refresh < 3600:
        raise ValueError(f"{where}.token_refresh_s: expected 1200 to 3599 seconds (Apple refuses a token renewed within 20 "
                         f"minutes or older than 60), got {refresh!r}")
    signing_key = _required_secret(where, "apns", "key", table, env)
    _private_key(f"{where}.key", signing_key.reveal(), curve=True)
    return ApnsProvider(key=signing_key, **values)


def _dkim(where: str, table: dict[str, Any], env: Mapping[str, str]) -> DkimSettings | None:
    """DKIM signing's settings (dkim_selector, dkim_domain, dkim_key_env/_file): all three, or none."""
    from .dkim import check_dkim

    key = _secret(where, "dkim_key", table, env)
    given = {name: table[name] for name in _DKIM_KEYS if name in table}
    if key is None and not given:
        return None
    if key is None or len(given) < len(_DKIM_KEYS):
        raise ValueError(f"{where}: DKIM takes dkim_selector, dkim_domain and dkim_key_env (or dkim_key_file), all three")
    selector, domain = (_value(f"{where}.{name}", str, given[name]) for name in _DKIM_KEYS)
    try:
        return check_dkim(selector, domain, key)
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None


def _smtp(where: str, table: dict[str, Any], env: Mapping[str, str]) -> SmtpProvider:
    _check_keys(where, "smtp", table, _SMTP_KEYS)
    if "host" not in table:
        raise ValueError(f"{where}.host: required for an smtp provider")
    values = {key: _value(f"{where}.{key}", _SMTP_KEYS[key], raw) for key, raw in table.items()
              if key in _SMTP_KEYS and key not in _DKIM_KEYS}
    tls = values.get("tls", "starttls")
    if tls not in TLS_MODES:
        raise ValueError(f"{where}.tls: expected one of {', '.join(TLS_MODES)}, got {tls!r}")
    for key in ("host", "helo_name"):  # they go on the wire in EHLO and the TLS name check: ASCII, no spaces
        if key in values and (not values[key].isascii() or " " in values[key]):
            raise ValueError(f"{where}.{key}: expected an ASCII name without spaces (an IDN in its xn-- form), got {values[key]!r}")
    values.setdefault("port", _DEFAULT_PORTS[tls])
    if values["port"] > 65535:
        raise ValueError(f"{where}.port: expected an integer from 1 to 65535, got {values['port']!r}")
    password = _secret(where, "password", table, env)
    if (password is None) != ("username" not in values):
        raise ValueError(f"{where}: give both username and password (password_env or password_file), or neither")
    return SmtpProvider(**values, password=password, dkim=_dkim(where, table, env))


_WEBHOOK_KEYS: dict[str, type] = {"timeout_s": float, "max_connections": int, "max_answer_bytes": int, "ca_file": Path,
                                   "allow_cidrs": list, "slack_prefixes": list, "endpoint_failure_threshold": int,
                                   "endpoint_open_timeout_s": float, "endpoint_keys": bool}
WEBHOOK_SECRET_PREFIX = "whsec_"
MAX_ANSWER_BYTES = 1024 * 1024


def webhook_secrets(where: str, secret: Secret) -> tuple[bytes, ...]:
    """The signing keys of a `whsec_<base64>` secret; several separated by spaces (rotation: each one signs)."""
    keys: list[bytes] = []
    for n, word in enumerate(secret.reveal().split()):
        if not word.startswith(WEBHOOK_SECRET_PREFIX):
            raise ValueError(f"{where}.secret: key {n + 1} is not of the form whsec_<base64> (its value is not shown)")
        try:
            key = base64.b64decode(word[len(WEBHOOK_SECRET_PREFIX):], validate=True)
        except ValueError:
            raise ValueError(f"{where}.secret: key {n + 1} is not base64 after whsec_ (its value is not shown)") from None
        if not 24 <= len(key) <= 64:
            raise ValueError(f"{where}.secret: key {n + 1} is {len(key)} bytes; expected 24 to 64 (32 random bytes are usual)")
        keys.append(key)
    if not keys:
        raise ValueError(f"{where}.secret: empty; expected whsec_<base64> (several, space-separated, while rotating)")
    return tuple(keys)


def _strings(where: str, raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):  # from an env var's JSON a list; a lone string is taken as a list of one
        raw = [raw]
    if not isinstance(raw, list):
        raise ValueError(f"{where}: expected a list of strings, got {raw!r}")
    return tuple(_value(f"{where}[{n}]", str, item) for n, item in enumerate(raw))


def _webhook(where: str, table: dict[str, Any], env: Mapping[str, str]) -> WebhookProvider:
    from .ssrf import parse_cidrs

    _check_keys(where, "webhook", table, _WEBHOOK_KEYS)
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key in ("allow_cidrs", "slack_prefixes"):
            values[key] = _strings(f"{where}.{key}", raw)
        elif key in _WEBHOOK_KEYS:
            values[key] = _value(f"{where}.{key}", _WEBHOOK_KEYS[key], raw)
    try:
        parse_cidrs(values.get("allow_cidrs", ()))
    except ValueError as exc:
        raise ValueError(f"{where}.allow_cidrs: {exc}") from None
    for n, prefix in enumerate(values.get("slack_prefixes", ())):
        if not prefix.startswith(("https://", "http://")):
            raise ValueError(f"{where}.slack_prefixes[{n}]: expected the start of an http(s) URL, got {prefix!r}")
    if values.get("max_answer_bytes", 1) > MAX_ANSWER_BYTES:
        raise ValueError(f"{where}.max_answer_bytes: expected at most {MAX_ANSWER_BYTES}, got {values['max_answer_bytes']!r}")
    threshold = values.pop("endpoint_failure_threshold", WebhookProvider.endpoint_breaker.failure_threshold)
    open_s = values.pop("endpoint_open_timeout_s", WebhookProvider.endpoint_breaker.open_timeout_s)
    values["endpoint_breaker"] = BreakerConfig(failure_threshold=threshold, open_timeout_s=open_s, success_threshold=1)
    return WebhookProvider(secrets=webhook_secrets(where, _required_secret(where, "webhook", "secret", table, env)), **values)


_PARSERS: dict[str, Callable[[str, dict[str, Any], Mapping[str, str]], ProviderSpec]] = {
    "smtp": _smtp, "sendgrid": _sendgrid, "twilio": _twilio, "fcm": _fcm, "apns": _apns, "webhook": _webhook,
}


def provider_names(specs: tuple[ProviderSpec, ...]) -> list[str]:
    """Each provider's name in its channel: its type, numbered when the type comes more than once (smtp-1, smtp-2)."""
    types = [spec.type for spec in specs]
    return [t if types.count(t) == 1 else f"{t}-{types[:n].count(t) + 1}" for n, t in enumerate(types)]


def parse_providers(value: Any, env: Mapping[str, str]) -> dict[str, tuple[ProviderSpec, ...]]:
    """Channel -> its providers, in order; a ValueError names the first bad setting (providers.email[0].port)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("expected JSON: {\"email\": [{\"type\": \"smtp\", \"host\": ...}]}") from None
    if not isinstance(value, dict):
        raise ValueError("expected a table of channels, each a list of providers ([[herald.providers.email]])")
    parsed: dict[str, tuple[ProviderSpec, ...]] = {}
    for channel, listed in value.items():
        if channel not in {c.value for c in Channel} or channel == Channel.WEB.value:
            raise ValueError(f"providers.{channel}: providers are configured for email, sms, push and webhook")
        if not isinstance(listed, list) or not listed or not all(isinstance(t, dict) for t in listed):
            raise ValueError(f"providers.{channel}: expected a list of provider tables ([[herald.providers.{channel}]])")
        if len(listed) > MAX_PROVIDERS:
            raise ValueError(f"providers.{channel}: at most {MAX_PROVIDERS} providers per channel (failover tries them in order)")
        specs: list[ProviderSpec] = []
        for n, table in enumerate(listed):
            where = f"providers.{channel}[{n}]"
            kind = table.get("type", "sandbox")
            if kind not in PROVIDER_TYPES:
                raise ValueError(f"{where}.type: expected one of {', '.join(PROVIDER_TYPES)}, got {kind!r}")
            if channel not in PROVIDER_TYPES[kind]:
                raise ValueError(f"{where}.type: a {kind} provider sends {', '.join(PROVIDER_TYPES[kind])}, not {channel}")
            if kind == "sandbox":
                dkim_keys = {*_DKIM_KEYS, "dkim_key_env", "dkim_key_file"} if channel == Channel.EMAIL.value else set()
                if set(table) - {"type"} - dkim_keys:
                    extra = " but DKIM's (dkim_selector, dkim_domain, dkim_key_env)" if dkim_keys else ""
                    raise ValueError(f"{where}: a sandbox provider has no settings{extra} (the data dir holds its files)")
                specs.append(SandboxProvider(dkim=_dkim(where, table, env)))
            else:
                specs.append(_PARSERS[kind](where, table, env))
        parsed[channel] = tuple(specs)
    return parsed
