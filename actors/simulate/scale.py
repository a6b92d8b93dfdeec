"""A scaled-down run: the scenario at 1/N of its volumes, its times kept, every count of the rows multiplied back by N.

Pure logic (no I/O): `scale_scenario` maps a Scenario and N to the Scenario that runs and the factor its counts are
multiplied by; `scale_result` multiplies them. What is divided by N is what counts notifications per unit of time or
at once:

* every traffic curve's rates (steady `rate`, ramp `from_rate` and `to_rate`, flash `rate` and `peak`);
* `users` (rounded up): each simulated user sees the same rate, so per-user order keeps its meaning;
* each channel's token bucket, `capacity` and `refill_per_s` (its `[herald.limits.*]` or the default);
* each channel's `provider_max_in_flight` (rounded up; the critical lane's reserve is its share of it);
* the counts of the actors' batches and queues: `consumer_batch`, `consumer_window`, `recorder_batch`,
  `provider_mailbox`, `recorder_mailbox` (rounded up);
* a scripted provider's throttling rate, `rate_per_s` (clients.py spreads a fractional rate over the seconds).

What is not: every time (latencies, outage and throttling windows, `open_timeout_s`, the retry backoff, Retry-After,
linger), `max_attempts`, `error_rate` and the breaker's thresholds. A breaker counts consecutive calls, so at 1/N the
F failures that open it take N times as long to arrive (docs/simulate.md, "A scaled-down run").
A scale that leaves a bucket below one token, fewer users than one, or a Provider no slot is refused, naming the
field that limits it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .scenario import MAX_SCALE, Scenario, ScenarioError

# Herald settings that count notifications (or their events) at once: divided by N, rounded up
COUNT_SETTINGS = ("consumer_batch", "consumer_window", "recorder_batch", "provider_mailbox", "recorder_mailbox")
# The rows' columns that count notifications: multiplied by N (the delays, the breaker's state and transitions are not)
COUNT_COLUMNS = ("accepted", "delivered", "deferred_bucket", "deferred_breaker", "retried", "dead_lettered", "failed", "pending")
RATE_FIELDS = ("rate", "from_rate", "to_rate", "peak")


@dataclass(frozen=True)
class Scaling:
    """What runs (`scenario`: volumes / n, times as they were; itself a scenario of scale 1) and `n`, the factor its
    counts are multiplied by."""

    scenario: Scenario
    n: int


def largest_scale(scenario: Scenario) -> tuple[int, str]:
    """The largest scale the scenario can take, and the field that limits it: each channel's bucket must keep at least one
    token, its Provider one call in flight, the traffic one user."""
    from .run import herald_config  # the config's defaults for what the scenario does not set (run.py imports this module)

    config = herald_config(scenario)
    bounds = [(scenario.users, "users")]
    for channel in scenario.channels:
        bounds.append((math.floor(float(config.limits[channel.value]["capacity"])), f"herald.limits.{channel.value}.capacity"))
        bounds.append((config.max_in_flight_of(channel), f"herald.provider_max_in_flight.{channel.value}"))
    most, field = min(bounds, key=lambda bound: bound[0])
    return max(1, min(most, MAX_SCALE)), field


def scale_scenario(scenario: Scenario, n: int | None = None) -> Scaling:
    """The scenario at 1/n of its volumes (n: the scenario's own `scale` unless given); n = 1 gives it back unchanged."""
    from .run import herald_config

    n = scenario.scale if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SCALE:
        raise ScenarioError(f"scale: expected an integer from 1 to {MAX_SCALE}, got {n!r}")
    if n == 1:
        return Scaling(dataclasses.replace(scenario, scale=1), 1)
    most, limiting = largest_scale(scenario)
    config = herald_config(scenario)

    def refuse(field: str, value: float, what: str) -> ScenarioError:
        return ScenarioError(f"scale: {n} leaves {field} = {value:g} / {n} = {value / n:.3g}, {what}: "
                             f"this scenario allows a scale of at most {most} (limited by {limiting})")

    if scenario.users < n:
        raise refuse("users", scenario.users, "fewer than one user")
    herald: dict[str, Any] = dict(scenario.herald)
    limits = {c: dict(v) for c, v in config.limits.items()}
    in_flight = dict(config.provider_max_in_flight)
    for channel in scenario.channels:
        name = channel.value
        capacity = float(limits[name]["capacity"])
        if capacity / n < 1:
            raise refuse(f"herald.limits.{name}.capacity", capacity, "a bucket below one token")
        limits[name]["capacity"] = capacity / n
        limits[name]["refill_per_s"] = float(limits[name]["refill_per_s"]) / n
        slots = config.max_in_flight_of(channel)
        if slots < n:
            raise refuse(f"herald.provider_max_in_flight.{name}", slots, "a Provider below one call in flight")
        in_flight[name] = math.ceil(slots / n)
    herald["limits"] = limits
    herald["provider_max_in_flight"] = in_flight
    for setting in COUNT_SETTINGS:
        herald[setting] = math.ceil(getattr(config, setting) / n)
    traffic = tuple(dataclasses.replace(c, **{f: getattr(c, f) / n for f in RATE_FIELDS}) for c in scenario.traffic)
    providers = {
        channel: dataclasses.replace(p, throttles=tuple(dataclasses.replace(t, rate_per_s=t.rate_per_s / n) for t in p.throttles))
        for channel, p in scenario.providers.items()
    }
    scaled = dataclasses.replace(scenario, traffic=traffic, providers=providers, users=math.ceil(scenario.users / n),
                                 herald=herald, scale=1)
    return Scaling(scaled, n)


def scale_counts(counts: dict[str, int], n: int) -> dict[str, int]:
    """A channel's totals (or any counts by column) multiplied by n."""
    return {k: v * n for k, v in counts.items()}


__all__ = ["COUNT_COLUMNS", "COUNT_SETTINGS", "Scaling", "largest_scale", "scale_counts", "scale_scenario"]
