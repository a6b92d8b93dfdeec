"""Configuration: zero-config defaults, overridden by an optional TOML file, then by env vars.

Env vars are HERALD_<FIELD> in upper case (HERALD_PORT=9000, HERALD_DATA_DIR=/var/lib/herald).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from protocol.channels import LANES, Channel, Lane
from protocol.parsing import parse_decimal, parse_integer
from reactor.backends import SETTINGS as BACKEND_SETTINGS, BackendSettings, check_url

if TYPE_CHECKING:  # imported where used, as the app needs them: services.gate imports this module's neighbours
    from protocol.faults import FaultSpec

    from .services.gate import GateSettings, Limits


def _default_partitions() -> dict[str, int]:
    return {"email": 4, "sms": 2, "push": 4, "web": 2, "webhook": 2}


def _default_max_in_flight() -> dict[str, int]:
    """Attempts a worker's Provider runs at once, per channel: 2,000/s from a provider answering in 100-250 ms (README)."""
    return {"email": 512, "sms": 512, "push": 512, "web": 64, "webhook": 512}


LIMIT_KEYS = ("capacity", "refill_per_s", "failure_threshold", "open_timeout_s", "success_threshold")


FAULT_KEYS = ("error_rate", "kind", "latency_ms", "fail_for_s", "seed")


def _default_limits() -> dict[str, dict[str, float]]:
    """Per channel: token bucket (burst, refill per second) and breaker, from the seed."""
    from reactor.circuit_breaker import CHANNEL_DEFAULTS

    return {
        channel: {
            "capacity": d.bucket_capacity,
            "refill_per_s": d.refill_per_s,
            "failure_threshold": d.breaker.failure_threshold,
            "open_timeout_s": d.breaker.open_timeout_s,
            "success_threshold": d.breaker.success_threshold,
        }
        for channel, d in CHANNEL_DEFAULTS.items()
    }


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    # GET /metrics without a key, on a port of its own (actors/api/metrics_port.py): -1 off, 0 any free port
    metrics_port: int = -1
    metrics_host: str = "127.0.0.1"  # where the metrics port listens: loopback unless a scraper elsewhere must reach it
    data_dir: Path = Path("herald-data")
    api_key: str = ""  # the bootstrap key (all scopes); empty: generate one at first start and keep it in the store
    key_rate_per_s: float = 1000.0  # per-key rate limit of keys created without their own (the bootstrap key has none)
    key_burst: float = 2000.0
    key_cache_ttl_s: float = 2.0  # how long a node trusts its cached copy of a key (a revoke on this node is immediate)
    partitions: dict[str, int] = field(default_factory=_default_partitions)
    limits: dict[str, dict[str, float]] = field(default_factory=_default_limits)
    # Sandbox faults per channel (protocol/faults.py): [herald.faults.sms] error_rate = 0.5, kind = "retryable"
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Real providers per channel (actors/clients/provider_config.py, docs/providers.md): [[herald.providers.email]] type = "smtp"
    providers: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    max_body_bytes: int = 64 * 1024
    max_batch_body_bytes: int = 4 * 1024 * 1024  # POST /v1/notifications/batch (each item still at most max_body_bytes)
    body_timeout_s: float = 60.0  # a request body not all there within it is answered 408 and its connection closed
    ingress_workers: int = 8  # appends in flight at once; each takes what waits in the mailbox (actors/ingress.py, _coalesce)
    ingress_mailbox: int = 2048
    # How long a POST waits for a distributed bus to acknowledge its append (Kafka down): then 503 with Retry-After; and
    # for the Recorder on a distributed log store, after which it is accepted and recorded late (actors/ingress.py)
    append_deadline_s: float = 5.0
    provider_mailbox: int = 512
    recorder_mailbox: int = 4096
    recorder_batch: int = 2000
    # Group commit: how long a durable write (send ledger, Recorder, sandbox sinks) waits for others to share its fsync
    commit_linger_ms: float = 2.0
    consumer_batch: int = 256
    consumer_window: int = 1024  # offsets a partition's consumer may have out past its last commit (fetched, not committed)
    consumer_window_bytes: int = 16 * 1024 * 1024  # bytes of records a partition's consumer may have out (plus one fetch)
    provider_max_in_flight: dict[str, int] = field(default_factory=_default_max_in_flight)
    # A provider's throttled verdict (its 429) is sent again in place after the wait it asked, while an attempt's waits
    # add up to at most this; beyond it the attempt is a scheduled retry (docs/providers.md "Verdicts")
    provider_throttle_wait_s: float = 60.0
    fanout_batch: int = 500  # subscribers a topic send's fan-out expands per bus append and checkpoint (actors/fanout.py)
    fanout_lease_s: float = 30.0  # how long a worker holds a fan-out job between checkpoints before another may take it over
    # Priority lanes (docs/reliability.md): the share of each Provider's slots and of each channel's token bucket the
    # bulk lane (normal, low) leaves for the critical lane (critical, high); each a fraction from 0 to below 1.
    lane_reserve_in_flight: float = 0.25
    lane_reserve_tokens: float = 0.1
    max_attempts: int = 5
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    heartbeat_s: float = 30.0
    session_queue: int = 256
    shutdown_grace_s: float = 10.0
    email_from: str = "Herald <herald@localhost>"
    log_level: str = "INFO"
    sms_max_segments: int = 10  # a templated SMS that renders longer is refused (422)
    template_cache_size: int = 256  # compiled template versions kept in memory
    public_url: str = ""  # base of links in notifications (unsubscribe); empty: the URL this node serves on
    preferences_cache_ttl_s: float = 60.0  # how long Ingress trusts a cached user profile (a write here invalidates it)
    profile_cache_size: int = 100_000  # users whose profile is kept in memory
    # What browsers may hold and ask (subscriber tokens). Caps count a node's WebSocket, SSE and
    # long-poll sessions together; one over a cap is refused (429, or WebSocket close 4004).
    subscriber_sessions_per_user: int = 16
    subscriber_sessions_per_token: int = 8
    subscriber_rate_per_s: float = 20.0  # requests per user with a token: poll, inbox, unread count, read/archive, opens, syncs
    subscriber_burst: float = 100.0
    token_issue_rate_per_s: float = 50.0  # POST /v1/users/{id}/tokens per API key (not the bootstrap key: it has no limit)
    token_issue_burst: float = 500.0
    # How a provider's workers share its bucket and breaker through the State (actors/services/gate.py).
    gate_slice_s: float = 0.05  # one State round trip leases this many seconds of the rate (at least one token)
    gate_lease_s: float = 1.0  # a leased slice is a worker's for this long; what it leaves goes back or expires
    gate_breaker_refresh_s: float = 0.05  # the oldest view of the shared breaker a worker admits on (0: ask every time)
    gate_probe_lease_s: float = 30.0  # a half-open probe's hold on the breaker (a worker that dies mid-probe frees it)
    # What this node runs: all (everything, the default), or, with distributed backends for every port, api, worker or edge.
    role: str = "all"
    # Each port's backend, by URL (reactor/backends/): embedded:// keeps its files in data_dir, for one process.
    bus: str = "embedded://"
    state: str = "embedded://"
    store: str = "embedded://"  # the Store and the stores beside it: API keys, templates, users, the signing key ring
    logstore: str = "embedded://"
    broker: str = "embedded://"  # routes web deliveries to the node holding the user's sessions (memory: one process)

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    def partitions_of(self, channel: Channel) -> int:
        return int(self.partitions[channel.value])

    def max_in_flight_of(self, channel: Channel) -> int:
        return int(self.provider_max_in_flight[channel.value])

    def critical_slots_of(self, channel: Channel) -> int:
        """Provider slots the bulk lane leaves free (at most max_in_flight - 1: bulk always has one)."""
        slots = self.max_in_flight_of(channel)
        return min(slots - 1, math.floor(slots * self.lane_reserve_in_flight))

    def critical_tokens_of(self, channel: Channel) -> int:
        """Tokens of the channel's bucket the bulk lane leaves for the critical lane: at most capacity - 1, so bulk can
        always get a whole token above it."""
        capacity = float(self.limits[channel.value]["capacity"])
        return max(0, min(math.floor(capacity) - 1, math.floor(capacity * self.lane_reserve_tokens)))

    def limits_of(self, channel: Channel) -> Limits:
        from reactor.circuit_breaker import BreakerConfig

        from .services.gate import Limits

        raw = self.limits[channel.value]
        breaker = BreakerConfig(int(raw["failure_threshold"]), float(raw["open_timeout_s"]), int(raw["success_threshold"]))
        return Limits(float(raw["capacity"]), float(raw["refill_per_s"]), breaker)

    def gate_settings(self) -> GateSettings:
        from .services.gate import GateSettings

        return GateSettings(self.gate_slice_s, self.gate_lease_s, self.gate_breaker_refresh_s, self.gate_probe_lease_s)

    def backend_settings(self) -> BackendSettings:
        """What reactor.backends.open_backends opens: a URL per port setting, the data dir, the bus's topics."""
        urls = {setting: str(getattr(self, setting)) for setting in BACKEND_SETTINGS}
        return BackendSettings(
            urls, self.data_dir, {c.topic(lane): self.partitions_of(c) for c in Channel for lane in LANES}, self.commit_linger_ms / 1000,
            frozenset(c.topic(Lane.CRITICAL) for c in Channel),  # a critical append never waits behind bulk (issue 10 item 6)
        )

    def providers_of(self, channel: Channel) -> tuple[Any, ...]:
        """The channel's configured providers, in order (empty: its sandbox client)."""
        return tuple(self.providers.get(channel.value, ()))

    def faults_of(self, channel: Channel) -> FaultSpec:
        """The channel's sandbox fault setting at start (a FaultSpec; no fault when not set)."""
        from protocol.faults import FaultSpec

        return FaultSpec(**self.faults.get(channel.value, {}))


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting and where it came from (file, env var)."""


ROLES = ("all", "api", "worker", "edge")


def role_refusal(config: Config) -> str | None:
    """Why this node cannot take its role, or None. Nodes of the roles other than `all` meet only through
    shared backends: every port setting must name a distributed one (embedded:// serves one process)."""
    if config.role == "all":
        return None
    local = [setting for setting in BACKEND_SETTINGS if str(getattr(config, setting)).startswith("embedded://")]
    if not local:
        return None
    return (
        f"the role {config.role!r} needs distributed backends, shared by the nodes of every role, but "
        f"{', '.join(local)} {'is' if len(local) == 1 else 'are'} embedded:// (files of one process): with those only the role "
        "'all' runs; name a distributed backend for each (kafka://, redis://, postgresql://, cassandra://: docs/deploy.md)"
    )


# Numbers that must be at least 1 (all others at least 0); the port is 0 (any free port) to 65535.
_AT_LEAST_ONE = {
    "max_body_bytes", "max_batch_body_bytes", "ingress_workers", "ingress_mailbox", "provider_mailbox", "recorder_mailbox", "recorder_batch",
    "consumer_batch", "max_attempts", "session_queue", "sms_max_segments", "consumer_window", "consumer_window_bytes",
    "fanout_batch",
}
_MAXIMUM = {"port": 65535, "metrics_port": 65535, "commit_linger_ms": 100, "fanout_batch": 10_000}
_MINIMUM = {"metrics_port": -1}  # -1: off
_ABOVE_ZERO = {"gate_lease_s", "gate_probe_lease_s", "fanout_lease_s", "body_timeout_s"}  # durations that must not be 0
_BELOW_ONE = {"lane_reserve_in_flight", "lane_reserve_tokens"}  # shares: from 0 to below 1
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _number(name: str, value: Any, integer: bool) -> Any:
    """A number from a TOML value (int, or float where one is allowed) or a string (env var: protocol.parsing's grammar)."""
    number: int | float | None
    if isinstance(value, str) and name in _MINIMUM and value == str(_MINIMUM[name]):
        number = _MINIMUM[name]  # a negative setting (metrics_port = -1, off) from an env var
    elif isinstance(value, str):
        number = parse_integer(value) if integer else parse_decimal(value)
    elif isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and not integer and math.isfinite(value):
        number = value
    else:
        number = None
    low, high = _MINIMUM.get(name, 1 if name in _AT_LEAST_ONE else 0), _MAXIMUM.get(name)
    if (number is None or number < low or (high is not None and number > high) or (name in _ABOVE_ZERO and number == 0)
            or (name in _BELOW_ONE and number >= 1)):
        kind = "an integer" if integer else "a number"
        bounds = (f"from {low} to {high}" if high is not None else "above 0" if name in _ABOVE_ZERO
                  else "from 0 to below 1" if name in _BELOW_ONE else f"of at least {low}")
        spelling = "ASCII digits" if integer else "ASCII digits, optionally with a decimal point"
        prefix = f"{name}: " if "." in name else ""  # a nested key (limits.sms.capacity)
        raise ValueError(f"{prefix}expected {kind} {bounds} ({spelling}), got {value!r}")
    return int(number) if integer else float(number)


def _coerce(name: str, kind: Any, value: Any) -> Any:
    if kind in (bool, "bool"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise ValueError(f"expected true or false, got {value!r}")
    if kind in (int, "int"):
        return _number(name, value, integer=True)
    if kind in (float, "float"):
        return _number(name, value, integer=False)
    if kind in (Path, "Path") or kind in (str, "str"):
        if not isinstance(value, (str, Path)) or "\x00" in str(value) or (kind in (Path, "Path") and not str(value)):
            raise ValueError(f"expected {'a path' if kind in (Path, 'Path') else 'a string'}, got {value!r}")
        if name == "log_level":
            if str(value).upper() not in LOG_LEVELS:
                raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
            return str(value).upper()
        if name == "role":
            if str(value) not in ROLES:
                raise ValueError(f"expected one of {', '.join(ROLES)}, got {value!r}")
            return str(value)
        if name in BACKEND_SETTINGS:
            return check_url(str(value))
        return Path(value) if kind in (Path, "Path") else str(value)
    if name in ("partitions", "provider_max_in_flight"):  # a count per channel: "sms=4,email=8" from an env var
        if isinstance(value, str):
            value = dict(part.split("=") for part in value.split(","))
        parts = {str(k).strip(): _number(f"{name}.{k}", v, integer=True) for k, v in dict(value).items()}
        unknown = set(parts) - {c.value for c in Channel}
        if unknown or any(v < 1 for v in parts.values()):
            raise ValueError(f"channels {sorted(unknown)} unknown or a count below 1")
        return {**(_default_partitions() if name == "partitions" else _default_max_in_flight()), **parts}
    if name == "limits":
        # TOML: [herald.limits.sms] capacity = 10; env: HERALD_LIMITS="sms.capacity=10,sms.open_timeout_s=5"
        if isinstance(value, str):
            nested: dict[str, dict[str, Any]] = {}
            for part in value.split(","):
                path, number = part.split("=")
                channel, key = path.strip().split(".")
                nested.setdefault(channel, {})[key] = number.strip()
            value = nested
        limits = _default_limits()
        for channel, overrides in dict(value).items():
            if channel not in limits or set(overrides) - set(LIMIT_KEYS):
                raise ValueError(f"limits.{channel}: channels are {sorted(limits)}, keys {list(LIMIT_KEYS)}")
            limits[channel] = {**limits[channel], **{k: _number(f"limits.{channel}.{k}", v, integer=False) for k, v in overrides.items()}}
            if limits[channel]["capacity"] <= 0 or limits[channel]["refill_per_s"] <= 0:
                raise ValueError(f"limits.{channel}: capacity and refill_per_s must be positive")
        return limits
    if name == "faults":
        return _faults(value)
    raise ValueError("unsupported type")


def _nested(value: Any) -> dict[str, dict[str, Any]]:
    """A table of tables, from TOML or from an env var: "sms.error_rate=0.5,sms.kind=retryable"."""
    if not isinstance(value, str):
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise ValueError("expected a table per channel ([herald.faults.sms])")
        return value
    nested: dict[str, dict[str, Any]] = {}
    for part in value.split(","):
        path, equals, text = part.partition("=")
        channel, dot, key = path.strip().partition(".")
        if not equals or not dot:
            raise ValueError(f"expected <channel>.<key>=<value>, comma-separated, got {part!r}")
        nested.setdefault(channel, {})[key] = text.strip()
    return nested


def _faults(value: Any) -> dict[str, dict[str, Any]]:
    """Sandbox fault settings: [herald.faults.sms] error_rate = 0.5; env HERALD_FAULTS="sms.error_rate=0.5,sms.kind=permanent"."""
    from protocol.faults import FAULT_BOUNDS, FAULT_KINDS, SANDBOX_CHANNELS

    channels = [c.value for c in SANDBOX_CHANNELS]
    faults: dict[str, dict[str, Any]] = {}
    for channel, settings in _nested(value).items():
        if channel not in channels:
            raise ValueError(f"faults.{channel}: faults apply to the sandbox channels {', '.join(channels)}")
        checked: dict[str, Any] = {}
        for key, raw in settings.items():
            where = f"faults.{channel}.{key}"
            if key == "kind":
                if raw not in FAULT_KINDS:
                    raise ValueError(f"{where}: expected one of {', '.join(FAULT_KINDS)}, got {raw!r}")
                checked[key] = raw
            elif key in FAULT_BOUNDS:
                low, high = FAULT_BOUNDS[key]
                number = _number(where, raw, integer=key == "seed")
                if not low <= number <= high:
                    raise ValueError(f"{where}: expected a number from {low:g} to {high:g}, got {raw!r}")
                checked[key] = number
            else:
                raise ValueError(f"{where}: unknown key; the keys are {', '.join(FAULT_KEYS)}")
        faults[channel] = checked
    return faults


def _read_toml(path: Path) -> dict[str, Any]:
    """The settings table of a TOML file (its [herald] table, or the whole file)."""
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (--config, HERALD_CONFIG)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    settings = table.get("herald", table)
    if not isinstance(settings, dict):
        raise ConfigError(f"{path}: [herald] must be a table")
    return settings


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Defaults, then the TOML file (if any), then HERALD_* env vars, then explicit overrides.

    A value that cannot be used is a ConfigError naming the setting and its source:
    `herald.toml: port: expected an integer from 0 to 65535 (ASCII digits), got 'x'`, or
    `HERALD_PORT: ...` for an env var.
    """
    env = os.environ if env is None else env
    fields = {f.name: f for f in dataclasses.fields(Config)}
    values: dict[str, tuple[Any, str]] = {}  # name -> (value, where it came from)
    if path is None and env.get("HERALD_CONFIG"):
        path = Path(env["HERALD_CONFIG"])
    if path is not None:
        for key, value in _read_toml(path).items():
            if key not in fields:
                raise ConfigError(f"{path}: unknown setting {key!r} (the settings are the fields of Config in actors/config.py)")
            values[key] = (value, f"{path}: {key}")
    for name in fields:
        raw = env.get(f"HERALD_{name.upper()}")
        if raw is not None:
            values[name] = (raw, f"HERALD_{name.upper()}")
    values.update({k: (v, k) for k, v in overrides.items() if v is not None})
    coerced: dict[str, Any] = {}
    for name, (value, source) in values.items():
        try:
            if name == "providers":  # credentials come from env vars or files the setting names
                from .clients.provider_config import parse_providers

                coerced[name] = parse_providers(value, env)
            else:
                coerced[name] = _coerce(name, fields[name].type, value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {exc}") from None
    config = Config(**coerced)
    refusal = role_refusal(config)
    if refusal is not None:
        raise ConfigError(f"{values['role'][1]}: {refusal}")
    return config
