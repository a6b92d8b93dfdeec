"""Configuration: zero-config defaults, overridden by an optional TOML file, then by env vars.

Env vars are HERALD_<FIELD> in upper case (HERALD_PORT=9000, HERALD_DATA_DIR=/var/lib/herald).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from protocol.channels import Channel


def _default_partitions() -> dict[str, int]:
    return {"email": 4, "sms": 2, "push": 4, "web": 2}


LIMIT_KEYS = ("capacity", "refill_per_s", "failure_threshold", "open_timeout_s", "success_threshold")


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
    data_dir: Path = Path("herald-data")
    api_key: str = ""  # the bootstrap key (all scopes); empty: generate one at first start and keep it in the store
    key_rate_per_s: float = 1000.0  # per-key rate limit of keys created without their own (the bootstrap key has none)
    key_burst: float = 2000.0
    key_cache_ttl_s: float = 2.0  # how long a node trusts its cached copy of a key (a revoke on this node is immediate)
    partitions: dict[str, int] = field(default_factory=_default_partitions)
    limits: dict[str, dict[str, float]] = field(default_factory=_default_limits)
    max_body_bytes: int = 64 * 1024
    ingress_workers: int = 64
    ingress_mailbox: int = 2048
    provider_mailbox: int = 512
    recorder_mailbox: int = 4096
    recorder_batch: int = 2000
    consumer_batch: int = 256
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

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    def partitions_of(self, channel: Channel) -> int:
        return int(self.partitions[channel.value])

    def limits_of(self, channel: Channel) -> Any:
        from reactor.circuit_breaker import BreakerConfig

        from .gate import Limits

        raw = self.limits[channel.value]
        breaker = BreakerConfig(int(raw["failure_threshold"]), float(raw["open_timeout_s"]), int(raw["success_threshold"]))
        return Limits(float(raw["capacity"]), float(raw["refill_per_s"]), breaker)


class ConfigError(ValueError):
    pass


def _coerce(name: str, kind: Any, value: Any) -> Any:
    try:
        if kind in (int, "int"):
            return int(value)
        if kind in (float, "float"):
            return float(value)
        if kind in (Path, "Path"):
            return Path(value)
        if kind in (str, "str"):
            return str(value)
        if name == "partitions":
            if isinstance(value, str):
                value = dict(part.split("=") for part in value.split(","))
            parts = {str(k): int(v) for k, v in dict(value).items()}
            unknown = set(parts) - {c.value for c in Channel}
            if unknown or any(v < 1 for v in parts.values()):
                raise ValueError(f"channels {sorted(unknown)} unknown or a count below 1")
            return {**_default_partitions(), **parts}
        if name == "limits":
            # TOML: [herald.limits.sms] capacity = 10; env: HERALD_LIMITS="sms.capacity=10,sms.open_timeout_s=5"
            if isinstance(value, str):
                nested: dict[str, dict[str, float]] = {}
                for part in value.split(","):
                    path, number = part.split("=")
                    channel, key = path.strip().split(".")
                    nested.setdefault(channel, {})[key] = float(number)
                value = nested
            limits = _default_limits()
            for channel, overrides in dict(value).items():
                if channel not in limits or set(overrides) - set(LIMIT_KEYS):
                    raise ValueError(f"limits.{channel}: channels are {sorted(limits)}, keys {list(LIMIT_KEYS)}")
                limits[channel] = {**limits[channel], **{k: float(v) for k, v in overrides.items()}}
                if min(limits[channel].values()) < 0 or limits[channel]["capacity"] <= 0 or limits[channel]["refill_per_s"] <= 0:
                    raise ValueError(f"limits.{channel}: capacity and refill_per_s must be positive")
            return limits
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from None
    raise ConfigError(f"{name}: unsupported type")


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Defaults, then the TOML file (if any), then HERALD_* env vars, then explicit overrides."""
    env = os.environ if env is None else env
    fields = {f.name: f for f in dataclasses.fields(Config)}
    values: dict[str, Any] = {}
    if path is None and env.get("HERALD_CONFIG"):
        path = Path(env["HERALD_CONFIG"])
    if path is not None:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
        table = table.get("herald", table)
        for key, value in table.items():
            if key not in fields:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[key] = value
    for name in fields:
        raw = env.get(f"HERALD_{name.upper()}")
        if raw is not None:
            values[name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Config(**{k: _coerce(k, fields[k].type, v) for k, v in values.items()})
