"""A simulation's scenario: its TOML file read and checked, every error naming the field (pure: no I/O but the read).

    name = "two outages"
    duration_min = 60            # or duration_h; simulated time
    scale = 1                    # run 1/scale of the volumes, the times kept, the counts multiplied back (scale.py)
    users = 5000                 # distinct users the traffic of a channel cycles through
    tick_s = 0.1                 # arrivals are submitted every tick (one batch, as POST /v1/notifications/batch)
    arrivals = "poisson"         # or "even": rate x tick per tick, the fractions carried over

    [herald]                     # Herald's settings, as in herald.toml (actors/config.py): limits, retries, partitions
    max_attempts = 8
    [herald.limits.sms]
    capacity = 50
    refill_per_s = 40

    [[traffic]]                  # one table per rate curve; several may add up on one channel
    channel = "sms"
    shape = "steady"             # steady: rate | ramp: from_rate, to_rate, start_min, end_min | flash: rate, peak, at_min, for_min
    rate = 30                    # notifications per simulated second

    [providers.sms]              # the scripted provider of a channel
    latency_ms = { median = 80, p99 = 400 }   # log-normal
    error_rate = 0.01            # retryable failures, at random
    [[providers.sms.outages]]
    at_min = 10
    for_min = 5
    kind = "error"               # error: fails after its latency | timeout: fails after timeout_s
    timeout_s = 10
    [[providers.sms.throttles]]
    at_min = 30
    for_min = 5
    rate_per_s = 10              # what it takes; beyond it a 429 with Retry-After retry_after_s
    retry_after_s = 1
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.channels import Channel, Priority

SHAPES = ("steady", "ramp", "flash")
MAX_RATE = 100_000.0  # notifications per second of one curve: far beyond what a simulation gets through in a day of wall time
MAX_DURATION_MIN = 7 * 24 * 60.0
MAX_SCALE = 100_000
OUTAGE_KINDS = ("error", "timeout")
CHANNELS = ("email", "sms", "push")  # the web channel goes to browser sessions, not to a provider: not simulated
TOP_KEYS = ("name", "duration_min", "duration_h", "scale", "users", "tick_s", "arrivals", "herald", "traffic", "providers")


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the file and the field."""


@dataclass(frozen=True)
class Curve:
    """One rate curve: notifications per second at a simulated time."""

    channel: Channel
    shape: str
    rate: float = 0.0  # steady; flash: the rate outside the peak
    from_rate: float = 0.0  # ramp
    to_rate: float = 0.0
    start_min: float = 0.0  # ramp: the rate is from_rate before, to_rate after end_min
    end_min: float = 0.0
    peak: float = 0.0  # flash
    at_min: float = 0.0
    for_min: float = 0.0
    priority: Priority = Priority.NORMAL

    def rate_at(self, t_s: float) -> float:
        minute = t_s / 60
        if self.shape == "steady":
            return self.rate
        if self.shape == "ramp":
            if minute <= self.start_min:
                return self.from_rate
            if minute >= self.end_min:
                return self.to_rate
            share = (minute - self.start_min) / (self.end_min - self.start_min)
            return self.from_rate + share * (self.to_rate - self.from_rate)
        return self.peak if self.at_min <= minute < self.at_min + self.for_min else self.rate


@dataclass(frozen=True)
class Window:
    at_min: float
    for_min: float

    def covers(self, t_s: float) -> bool:
        return self.at_min * 60 <= t_s < (self.at_min + self.for_min) * 60


@dataclass(frozen=True)
class Outage(Window):
    kind: str = "error"
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Throttle(Window):
    rate_per_s: float = 1.0
    retry_after_s: float = 1.0


@dataclass(frozen=True)
class ProviderScript:
    channel: Channel
    median_ms: float = 50.0
    p99_ms: float = 200.0
    error_rate: float = 0.0
    outages: tuple[Outage, ...] = ()
    throttles: tuple[Throttle, ...] = ()


@dataclass(frozen=True)
class Scenario:
    name: str
    duration_s: float
    traffic: tuple[Curve, ...]
    providers: dict[Channel, ProviderScript]
    herald: dict[str, Any] = field(default_factory=dict)  # Herald settings (checked by actors.config.load_config)
    users: int = 1000
    tick_s: float = 0.1
    arrivals: str = "poisson"
    scale: int = 1  # run at 1/scale of the volumes (actors/simulate/scale.py); 1: every notification simulated

    @property
    def channels(self) -> list[Channel]:
        """The channels with traffic, in the fixed order of CHANNELS."""
        used = {c.channel for c in self.traffic}
        return [Channel(c) for c in CHANNELS if Channel(c) in used]

    def longest_wait_s(self) -> float:
        """All outages and throttles end to end: no delivery waits longer than this plus its retries."""
        return sum(w.for_min * 60 for p in self.providers.values() for w in (*p.outages, *p.throttles))


def _number(where: str, value: Any, *, low: float = 0.0, low_open: bool = False, high: float = math.inf, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ScenarioError(f"{where}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
        bounds = f"{'above' if low_open else 'at least'} {low:g}" + (f" and at most {high:g}" if high < math.inf else "")
        raise ScenarioError(f"{where}: expected a number {bounds}, got {value!r}")
    return value


def _table(where: str, value: Any, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: expected a table, got {value!r}")
    for key in value:
        if key not in known:
            raise ScenarioError(f"{where}.{key}: unknown field (the fields are {', '.join(known)})" if where else
                                f"{key}: unknown field (the fields are {', '.join(known)})")
    return value


def _channel(where: str, value: Any) -> Channel:
    if value not in CHANNELS:
        raise ScenarioError(f"{where}: expected one of {', '.join(CHANNELS)}, got {value!r}")
    return Channel(value)


def _curve(where: str, raw: Any, duration_min: float) -> Curve:
    t = _table(where, raw, ("channel", "shape", "rate", "from_rate", "to_rate", "start_min", "end_min", "peak", "at_min",
                            "for_min", "priority"))
    if "channel" not in t:
        raise ScenarioError(f"{where}.channel: required (one of {', '.join(CHANNELS)})")
    channel = _channel(f"{where}.channel", t["channel"])
    shape = t.get("shape", "steady")
    if shape not in SHAPES:
        raise ScenarioError(f"{where}.shape: expected one of {', '.join(SHAPES)}, got {shape!r}")
    needs = {"steady": ("rate",), "ramp": ("from_rate", "to_rate"), "flash": ("rate", "peak", "at_min", "for_min")}[shape]
    for key in needs:
        if key not in t:
            raise ScenarioError(f"{where}.{key}: required by shape {shape!r}")
    allowed = {"steady": {"rate"}, "ramp": {"from_rate", "to_rate", "start_min", "end_min"},
               "flash": {"rate", "peak", "at_min", "for_min"}}[shape] | {"channel", "shape", "priority"}
    for key in t:
        if key not in allowed:
            raise ScenarioError(f"{where}.{key}: not a field of shape {shape!r} (it takes {', '.join(sorted(allowed))})")
    values = {k: float(_number(f"{where}.{k}", t[k], high=MAX_RATE if "rate" in k or k == "peak" else MAX_DURATION_MIN))
              for k in t if k not in ("channel", "shape", "priority")}
    priority = t.get("priority", "normal")
    try:
        prio = Priority(priority)
    except ValueError:
        raise ScenarioError(f"{where}.priority: expected one of {', '.join(p.value for p in Priority)}, got {priority!r}") from None
    if shape == "ramp":
        values.setdefault("start_min", 0.0)
        values.setdefault("end_min", duration_min)
        if values["end_min"] <= values["start_min"]:
            raise ScenarioError(f"{where}.end_min: must be after start_min ({values['start_min']:g}), got {values['end_min']:g}")
    if shape == "flash" and values["for_min"] <= 0:
        raise ScenarioError(f"{where}.for_min: expected a number above 0, got {values['for_min']:g}")
    return Curve(channel, shape, priority=prio, **values)


def _windows(where: str, raw: Any, kind: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise ScenarioError(f"{where}: expected an array of tables ([[{where}]]), got {raw!r}")
    known = ("at_min", "for_min", "kind", "timeout_s") if kind == "outage" else ("at_min", "for_min", "rate_per_s", "retry_after_s")
    found = []
    for n, item in enumerate(raw):
        here = f"{where}[{n}]"
        t = _table(here, item, known)
        for key in ("at_min", "for_min"):
            if key not in t:
                raise ScenarioError(f"{here}.{key}: required")
        _number(f"{here}.at_min", t["at_min"])
        _number(f"{here}.for_min", t["for_min"], low_open=True)
        found.append(t)
    return found


def _provider(where: str, channel: Channel, raw: Any) -> ProviderScript:
    t = _table(where, raw, ("latency_ms", "error_rate", "outages", "throttles"))
    median, p99 = 50.0, 200.0
    if "latency_ms" in t:
        lat = _table(f"{where}.latency_ms", t["latency_ms"], ("median", "p99"))
        median = float(_number(f"{where}.latency_ms.median", lat.get("median", median), low_open=True))
        p99 = float(_number(f"{where}.latency_ms.p99", lat.get("p99", max(p99, median))))
        if p99 < median:
            raise ScenarioError(f"{where}.latency_ms.p99: must be at least the median ({median:g}), got {p99:g}")
    error_rate = float(_number(f"{where}.error_rate", t.get("error_rate", 0.0), high=1.0))
    outages = []
    for n, o in enumerate(_windows(f"{where}.outages", t.get("outages", []), "outage")):
        kind = o.get("kind", "error")
        if kind not in OUTAGE_KINDS:
            raise ScenarioError(f"{where}.outages[{n}].kind: expected one of {', '.join(OUTAGE_KINDS)}, got {kind!r}")
        timeout = float(_number(f"{where}.outages[{n}].timeout_s", o.get("timeout_s", 10.0), low_open=True))
        outages.append(Outage(float(o["at_min"]), float(o["for_min"]), kind, timeout))
    throttles = []
    for n, w in enumerate(_windows(f"{where}.throttles", t.get("throttles", []), "throttle")):
        if "rate_per_s" not in w:
            raise ScenarioError(f"{where}.throttles[{n}].rate_per_s: required")
        rate = float(_number(f"{where}.throttles[{n}].rate_per_s", w["rate_per_s"]))
        after = float(_number(f"{where}.throttles[{n}].retry_after_s", w.get("retry_after_s", 1.0), low_open=True))
        throttles.append(Throttle(float(w["at_min"]), float(w["for_min"]), rate, after))
    return ProviderScript(channel, median, p99, error_rate, tuple(outages), tuple(throttles))


def parse_scenario(raw: dict[str, Any]) -> Scenario:
    """A scenario from its TOML table; ScenarioError naming the first field that is wrong."""
    _table("", raw, TOP_KEYS)
    if ("duration_min" in raw) == ("duration_h" in raw):
        raise ScenarioError("duration_min: give the simulated duration as exactly one of duration_min and duration_h")
    if "duration_h" in raw:
        duration_min = float(_number("duration_h", raw["duration_h"], low_open=True, high=MAX_DURATION_MIN / 60)) * 60
    else:
        duration_min = float(_number("duration_min", raw["duration_min"], low_open=True, high=MAX_DURATION_MIN))
    name = raw.get("name", "scenario")
    if not isinstance(name, str):
        raise ScenarioError(f"name: expected a string, got {name!r}")
    users = int(_number("users", raw.get("users", 1000), low=1, integer=True))
    scale = int(_number("scale", raw.get("scale", 1), low=1, high=MAX_SCALE, integer=True))
    tick_s = float(_number("tick_s", raw.get("tick_s", 0.1), low=0.001, high=60.0))
    arrivals = raw.get("arrivals", "poisson")
    if arrivals not in ("poisson", "even"):
        raise ScenarioError(f"arrivals: expected poisson or even, got {arrivals!r}")
    traffic_raw = raw.get("traffic")
    if not isinstance(traffic_raw, list) or not traffic_raw:
        raise ScenarioError("traffic: expected at least one [[traffic]] table (channel, shape, rate)")
    traffic = tuple(_curve(f"traffic[{n}]", t, duration_min) for n, t in enumerate(traffic_raw))
    providers_raw = _table("providers", raw.get("providers", {}), CHANNELS)
    providers = {Channel(c): _provider(f"providers.{c}", Channel(c), t) for c, t in providers_raw.items()}
    for curve in traffic:
        providers.setdefault(curve.channel, ProviderScript(curve.channel))
    herald = raw.get("herald", {})
    if not isinstance(herald, dict):
        raise ScenarioError(f"herald: expected a table of Herald settings, got {herald!r}")
    return Scenario(name, duration_min * 60, traffic, providers, dict(herald), users, tick_s, arrivals, scale)


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; ScenarioError (with the file's name) when it cannot be used."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_scenario(raw)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
